"""A run is one object: ``Run.create`` starts (or resumes) a run folder, ``Run.open`` reopens a
finished one, and every command (train, resume, stack, export, predict) reaches the folder through
it, never by building paths or re-reading the competition's config itself.

A run folder describes itself:

- ``config.yaml``: the config resolved once (base + ``--params`` + ``--set``, inferred task,
  metric, CV scheme and column types). Every later command on the run uses it.
- ``run.json``: the state (``running`` | ``finished`` | ``failed`` | ``interrupted``), the
  fingerprint of the inputs (a hash of the resolved config and of each data file read), the pid
  and host while running, the sessions with their times, what predicting new rows needs (task,
  classes, the submission's columns), and once finished the size and sha256 of every file the
  later commands read (``files``), checked each time the run is opened.
- The lock: an ``fcntl.flock`` on the run folder itself, held by the one process writing the run
  (deleting a file cannot break it). The kernel releases it when that process dies, so a stale
  lock is simply free. ``run.lock``'s text names the holder, and the next process says that it
  takes the run over; run.json records the owner too, checked before the run's writes.

Resume is a comparison, not a guess (as DVC does with its input hashes): a changed config or data
file refuses to mix folds trained on different inputs. A finished run is never retrained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, sectioned_model, validate
from .config_files import read_yaml
from .cv.folds import FoldUnit, fold_units
from .errors import ConfigError, DataError
from .outputs import default_run_name, write_json, write_yaml
from .paths import check_name, inside, is_path
from .run_files import damage, file_sha256, manifest
from .run_lock import RunLock, RunLockedError
from .run_lock import utc_now as _now

__all__ = ["Run", "RunLock", "RunLockedError", "damage", "file_sha256"]

log = logging.getLogger("pipeline")

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
# Sections that do not change what a run trains: a finished run can be stacked or exported with
# other settings of these, and resuming with them changed is allowed.
UNTRAINED_SECTIONS = ("stack", "tune", "export", "diagnostics")
STATES = ("running", "finished", "failed", "interrupted")
# The files a run writes, as Run.files() returns them: each is the Run's ``<key>_path``.
OUTPUT_FILES = ("config", "folds", "oof", "test_pred", "submission", "scores", "ensemble", "log", "profile", "report",
                "importance", "adversarial")


def shared_folds_dir(root: Path, competition: str) -> Path:
    """Where a competition's fold assignments are saved once and reused by every run and trial."""
    return Path(root) / check_name(competition, "competition name") / "folds"


def trained_part(resolved: dict) -> dict:
    return {k: v for k, v in resolved.items() if k not in UNTRAINED_SECTIONS}


def config_sha256(resolved: dict) -> str:
    text = json.dumps(trained_part(resolved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_diff(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def fingerprint(data, extra: dict | None = None) -> dict:
    """What a run's results depend on: the trained part of its resolved config, each data file,
    the image files' names and sizes (hashing every image would cost a pass over the set), and
    ``extra`` (a stack's members)."""
    files = {key: file_sha256(path) for key, path in sorted(data.paths.items())}
    if data.images is not None:
        h = hashlib.sha256()
        for split in ("train", "test"):
            for p in data.images[split]:
                h.update(f"{p}\0{os.path.getsize(p)}\n".encode())
        files["images"] = h.hexdigest()
    out = {"config": config_sha256(data.cfg.to_dict()), "files": files}
    if extra:
        out["extra"] = extra
    return out


class Run:
    """One run folder: its resolved config, its state and every path in it."""

    def __init__(self, directory: Path, cfg: Config, info: dict):
        self.dir = Path(directory)
        self.cfg = cfg
        self.info = info
        self._lock: RunLock | None = None
        self._session_start: float | None = None

    # ------------------------------------------------------------------ paths

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def comp_dir(self) -> Path:
        return self.dir.parent

    @property
    def root(self) -> Path:
        """The output root (``outputs/`` or ``--output-dir``)."""
        return self.dir.parent.parent

    config_path = property(lambda self: self.dir / "config.yaml")
    info_path = property(lambda self: self.dir / RUN_FILE)
    lock_path = property(lambda self: self.dir / LOCK_FILE)
    folds_path = property(lambda self: self.dir / "folds.csv")
    oof_path = property(lambda self: self.dir / "oof.csv")
    test_pred_path = property(lambda self: self.dir / "test_pred.csv")
    submission_path = property(lambda self: self.dir / "submission.csv")
    scores_path = property(lambda self: self.dir / "scores.json")
    ensemble_path = property(lambda self: self.dir / "ensemble.json")
    profile_path = property(lambda self: self.dir / "profile.json")
    report_path = property(lambda self: self.dir / "report.html")
    importance_path = property(lambda self: self.dir / "importance.csv")
    adversarial_path = property(lambda self: self.dir / "adversarial.json")
    plots_dir = property(lambda self: self.dir / "plots")
    log_path = property(lambda self: self.dir / "run.log")
    export_dir = property(lambda self: self.dir / "export")

    @property
    def shared_folds_dir(self) -> Path:
        return shared_folds_dir(self.root, self.cfg.name)

    def fold_dir(self, unit: FoldUnit | str) -> Path:
        return self.dir / "folds" / (unit if isinstance(unit, str) else unit.name)

    @property
    def pretrain_dir(self) -> Path:
        """Where image.pretrain keeps its encoders: beside the competition's folds (shared by its
        runs), or in a smoke run's own folder."""
        return self.dir / "pretrain" if self.info.get("smoke") else self.shared_folds_dir.parent / "pretrain"

    def first_stage_dir(self, unit: FoldUnit) -> Path:
        """With pseudo-labels (cv/pseudo.py): the first stage's fold folder; folds/ hold the second."""
        return self.dir / "stage1" / unit.name

    def files(self) -> dict[str, Path]:
        """The run's output files that exist (the ``<key>_path`` properties above)."""
        paths = {k: getattr(self, f"{k}_path") for k in OUTPUT_FILES}
        return {k: p for k, p in paths.items() if p.exists()}

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        return self.info.get("state", "running")

    @property
    def kind(self) -> str:
        return self.info.get("kind", "train")

    @property
    def finished(self) -> bool:
        return self.state == "finished" and self.scores_path.is_file()

    @property
    def scores(self) -> dict | None:
        return json.loads(self.scores_path.read_text()) if self.scores_path.is_file() else None

    @property
    def oof(self) -> pd.DataFrame | None:
        """oof.csv: every training row's out-of-fold prediction, with its fold."""
        return self._table(self.oof_path)

    def oof_predictions(self) -> np.ndarray:
        """The run's OOF predictions (the ensemble's) in the metrics' internal form, row by row."""
        from .submission import parse_predictions

        return parse_predictions(self.submission_format, self.oof, self.oof_path)

    @property
    def test_pred(self) -> pd.DataFrame | None:
        """test_pred.csv: the test rows' predictions, in the run's prediction format."""
        return self._table(self.test_pred_path)

    @property
    def folds(self) -> pd.DataFrame | None:
        """folds.csv: each training row's fold (per repeat)."""
        return self._table(self.folds_path)

    @property
    def submission(self) -> pd.DataFrame | None:
        """submission.csv, as it is sent to Kaggle."""
        return self._table(self.submission_path)

    def _table(self, path: Path) -> pd.DataFrame | None:
        if not path.is_file():
            return None
        return pd.read_csv(path, dtype={self.cfg.data.id: str})  # ids as written (data/load.py)

    def require_finished(self, what: str) -> "Run":
        if not self.finished:
            holder = ""
            if self.state == "running" and self.info.get("pid"):
                holder = f" (pid {self.info['pid']} on host {self.info.get('host')})"
            raise DataError(f"{what} {self.name}: {self.dir} is not a finished run (state {self.state}{holder}). "
                            f"Finish or resume it first.")
        return self

    def seconds(self) -> float:
        """Wall time over every session of the run, the current one included."""
        past = sum(s.get("seconds", 0.0) for s in self.info.get("sessions", []))
        current = time.perf_counter() - self._session_start if self._session_start is not None else 0.0
        return round(past + current, 1)

    def check_owner(self) -> None:
        """While this process writes the run, run.json on disk must still name it: a folder
        deleted and made anew by another process (which our lock on the old folder cannot stop)
        is detected before this one writes over that process's files."""
        if self._lock is None or self._session_start is None or not self.info_path.is_file():
            return  # not writing, or begin() is about to record this process as the owner
        try:
            disk = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return
        ours = (os.getpid(), socket.gethostname())
        if disk.get("state") == "running" and (disk.get("pid"), disk.get("host")) not in (ours, (None, None)):
            raise RunLockedError(f"{self.dir}: run {self.name!r} is now written by pid {disk.get('pid')} on host "
                                 f"{disk.get('host')} (its folder was replaced while this process ran). This "
                                 f"process stops without writing; use another --run-name.")

    def _write_info_in_place(self) -> None:
        """The last resort when the atomic write fails (a full disk has no room for the temporary
        file): overwrite run.json's own blocks with a compact text, so the state never stays
        ``running``."""
        text = json.dumps(self.info, separators=(",", ":"), default=str).encode()
        fd = os.open(self.info_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ folds

    def units(self) -> list[FoldUnit]:
        """The run's fold units, from its own folds.csv."""
        if not self.folds_path.is_file():
            raise DataError(f"{self.dir}: no folds.csv; the run never started training.")
        folds = pd.read_csv(self.folds_path, dtype={self.cfg.data.id: str})
        return fold_units(folds, self.cfg.cv.repeats)

    def trained_units(self) -> list[FoldUnit]:
        """The fold units with a saved model: all of them, unless a time limit skipped some."""
        from .training.artifact import FoldResult

        return [u for u in self.units() if FoldResult.is_complete(self.fold_dir(u))]

    def unit(self, fold: int, repeat: int = 0) -> FoldUnit:
        for u in self.trained_units():
            if u.fold == fold and u.repeat == repeat:
                return u
        raise ConfigError(f"export.fold {fold}: run {self.name} has folds "
                          f"{sorted({u.fold for u in self.trained_units()})}. Pick one of them.")

    def artifact(self, unit: FoldUnit | str):
        """A trained fold, predicting with the run's ensemble weights."""
        from .training.artifact import FoldArtifact

        artifact = FoldArtifact.load(self.fold_dir(unit))
        artifact.weights = self.ensemble_weights()
        if not artifact.missing_values:  # a fold saved before its bundle kept them
            from .data.load import declared_missing

            artifact.missing_values = declared_missing(self.cfg)
        return artifact

    def ensemble_weights(self) -> dict[str, float] | None:
        """Member name → weight (ensemble.json), or None before the run has weighed its members."""
        from .ensemble import Ensemble

        if not self.ensemble_path.is_file():
            return None
        return Ensemble.weights_of(json.loads(self.ensemble_path.read_text()))

    # ------------------------------------------------------------------ data and prediction

    def load_data(self, data_dir: str | Path | None = None, cfg: Config | None = None):
        """The competition's data, read with this run's resolved config (or ``cfg``, the run's with
        a command's allowed changes) and its data folder (or ``data_dir``)."""
        from .data import load_competition

        folder = data_dir if data_dir is not None else self.info.get("data_dir")
        return load_competition(cfg if cfg is not None else self.cfg, folder)

    @property
    def submission_format(self):
        from .submission import SubmissionFormat

        return SubmissionFormat.from_dict(self.info["submission_format"])

    def predict(self, frame: pd.DataFrame, *, source: str = "rows", image_dir: str | Path | None = None):
        """Predictions for new rows, as the run made its test predictions (predict.py:
        ``predict_frame``): a DataFrame in the run's prediction format."""
        from .predict import predict_frame

        return predict_frame(self, frame, source=source, image_dir=image_dir)

    # ------------------------------------------------------------------ sessions

    def begin(self) -> "Run":
        self.info.update(state="running", pid=os.getpid(), host=socket.gethostname())
        self.info.setdefault("started", _now())
        self.info.setdefault("sessions", []).append({"started": _now()})
        write_json(self.info, self.info_path)  # this process is the owner from here on
        self._session_start = time.perf_counter()
        return self

    def end(self, state: str, error: str | None = None) -> None:
        """Close the session: record its time and the run's state, and release the lock."""
        try:
            self.check_owner()
        except RunLockedError:
            self.unlock()
            raise
        session = self.info["sessions"][-1]
        session.update(ended=_now(), seconds=round(time.perf_counter() - self._session_start, 1), state=state)
        self._session_start = None
        self.info.update(state=state, pid=None, host=None)
        self.info["seconds"] = self.seconds()
        if state == "finished":
            self.info["finished"] = _now()
            self.info["files"] = manifest(self.dir)
        if error:
            self.info["error"] = error
        else:
            self.info.pop("error", None)
        try:
            try:
                write_json(self.info, self.info_path)
            except OSError:  # a full disk must not leave the run "running", nor hide the error
                self._write_info_in_place()
        except OSError as exc:
            log.warning("run %s: could not record its state in %s (%s)", self.name, self.info_path, exc.strerror)
        finally:
            self.unlock()

    # ------------------------------------------------------------------ verification

    def verify(self, what: str = "run") -> "Run":
        """Every file recorded when the run finished is there, unchanged; else one DataError naming
        the first that is not (a deleted fold model would silently change every prediction)."""
        problem = damage(self.dir, self.info)
        if problem:
            raise DataError(f"{what} {self.name}: {problem}. The run's results depend on it: restore the file "
                            f"(e.g. from a copy of the run folder) or train the run again.")
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._session_start is None:
            self.unlock()
            return
        if exc_type is None:
            self.end("finished")
        elif issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (errors.Terminated)
            self.end("interrupted", str(exc) or "interrupted (Ctrl-C)")
        else:
            # A failed session: finished folds stay and resume next time.
            first = str(exc).strip().splitlines()[0][:300] if exc is not None and str(exc).strip() else ""
            self.end("failed", f"{exc_type.__name__}: {first}" if first else exc_type.__name__)

    # ------------------------------------------------------------------ create / open

    @classmethod
    def create(cls, data, root: Path, run_name: str | None = None, *, kind: str = "train", smoke: bool = False,
               extra: dict | None = None, data_dir: str | Path | None = None) -> "Run":
        """Start a run of ``data`` (its config already resolved) under ``root/<competition>/``, or
        resume it. Returns the Run holding the lock, with its session begun; or, when the run is
        already finished with these same inputs, the finished Run (no lock, nothing changed)."""
        name = check_name(run_name, "--run-name") if run_name else default_run_name(smoke)
        return cls.start(Path(root) / check_name(data.cfg.name, "competition name") / name, data, kind=kind,
                         smoke=smoke, extra=extra, data_dir=data_dir)

    @classmethod
    def start(cls, run_dir: Path, data, *, kind: str = "train", smoke: bool = False, extra: dict | None = None,
              data_dir: str | Path | None = None) -> "Run":
        """``create`` in a given folder: a tuning trial's, inside its study."""
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: exists and is a file, not a run folder. Use another --run-name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir / LOCK_FILE)
        previous = lock.acquire(run_dir.name)
        from .logs import console

        console()  # the takeover line below reaches the console before the run's log opens
        try:
            run = cls._prepare(run_dir, data, kind, smoke, extra, data_dir, previous)
        except BaseException:
            lock.release()
            raise
        if run.finished:
            lock.release()
            return run.verify("--run-name")
        run._lock = lock
        run.begin()
        if previous and len(run.info["sessions"]) > 1:
            run.info["sessions"][-1]["took_over_from"] = {k: previous.get(k) for k in ("pid", "host")}
        return run

    @classmethod
    def _prepare(cls, run_dir: Path, data, kind, smoke, extra, data_dir, previous: dict) -> "Run":
        resolved = data.cfg.to_dict()
        new_print = fingerprint(data, extra)
        info_path = run_dir / RUN_FILE
        try:
            info = json.loads(info_path.read_text()) if info_path.is_file() else None
        except ValueError:
            raise DataError(f"{info_path}: damaged (not JSON), so run {run_dir.name!r} cannot be resumed safely. "
                            f"Use another --run-name.") from None
        if info is None and (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: a run folder without {RUN_FILE} (made by an older version of the "
                              f"pipeline); it cannot be resumed safely. Use another --run-name.")
        if info is None and [p for p in run_dir.iterdir() if p.name != LOCK_FILE]:
            raise ConfigError(f"{run_dir}: exists and is not a run folder. Use another --run-name.")
        if info is not None:
            if previous and info.get("state") == "running":
                log.warning("run %s: taking over the lock from pid %s on host %s, which stopped without finishing",
                            run_dir.name, previous.get("pid"), previous.get("host"))
            if info.get("kind", "train") != kind:
                raise ConfigError(f"{run_dir}: is a {info.get('kind', 'train')} run, not a {kind} run. "
                                  f"Use another --run-name.")
            done = [p for p in (run_dir / "folds").glob("*/result.json")] if kind == "train" else []
            finished = info.get("state") == "finished" and (run_dir / "scores.json").is_file()
            if finished or done:
                cls._check_same_inputs(run_dir, info, new_print, resolved, finished)
                if finished:
                    return cls(run_dir, _saved_config(run_dir, data.cfg), info)
            else:  # nothing finished: a failed or killed start leaves nothing worth keeping
                log.info("run %s: no fold finished in its earlier session(s); starting it again", run_dir.name)
                for p in run_dir.iterdir():
                    if p.name != LOCK_FILE:
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                info = None
        if info is None:
            info = {"run": run_dir.name, "competition": data.cfg.name, "kind": kind, "state": "running",
                    "smoke": smoke, "fingerprint": new_print,
                    "config_file": str(data.cfg.path) if data.cfg.path else None,
                    "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else
                    str(data.paths["train"].parent.resolve()),
                    "submission_format": data.submission_format.to_dict(), "sessions": []}
        run = cls(run_dir, data.cfg, info)
        write_yaml(resolved, run.config_path)
        return run

    @staticmethod
    def _check_same_inputs(run_dir: Path, info: dict, new: dict, resolved: dict, finished: bool) -> None:
        old = info.get("fingerprint", {})
        what = "is finished and was made" if finished else "has finished folds that were made"
        hint = "Use a new --run-name for the new inputs."
        if old.get("config") != new["config"]:
            saved = read_yaml(run_dir / "config.yaml")
            keys = config_diff(trained_part(saved), trained_part(resolved)) or ["the config"]
            raise ConfigError(f"{run_dir}: run {run_dir.name!r} {what} with a different config "
                              f"(differs at {', '.join(keys[:4])}). {hint}")
        changed = sorted(k for k in set(old.get("files", {})) | set(new["files"])
                         if old.get("files", {}).get(k) != new["files"].get(k))
        if changed:
            raise DataError(f"{run_dir}: run {run_dir.name!r} {what} from other data: "
                            f"{', '.join(changed)} changed since (sha256 differs). {hint}")
        if old.get("extra") != new.get("extra"):
            raise ConfigError(f"{run_dir}: run {run_dir.name!r} {what} from other members "
                              f"({old.get('extra')}). {hint}")

    @classmethod
    def open(cls, run: str | Path, root: Path | None = None, competition: str | None = None,
             what: str = "run") -> "Run":
        """Reopen a run: a path to its folder, or a name under ``root/<competition>/``. ``what``
        names the argument in errors (``--export-run``, ``--stack``)."""
        if is_path(run):  # a folder: only under the output root, when one is given
            run_dir = inside(Path(run), root, what) if root is not None else Path(run).resolve()
        elif root is not None and competition is not None:
            run_dir = Path(root) / check_name(competition, "competition name") / check_name(run, what)
        else:
            raise ConfigError(f"{what} {run}: give the run's folder, or its name with the competition.")
        if not run_dir.is_dir():
            comp_dir = run_dir.parent
            runs = sorted(p.parent.name for p in comp_dir.glob(f"*/{RUN_FILE}")) if comp_dir.is_dir() else []
            raise DataError(f"{what} {run}: no run folder {run_dir}. Runs of this competition: {runs}")
        info_path = run_dir / RUN_FILE
        if info_path.is_file():
            pass
        elif (run_dir / "config.yaml").is_file():
            raise DataError(f"{what} {run}: {run_dir} has no {RUN_FILE} (made by an older version of the pipeline). "
                            f"Train it again with this version.")
        else:
            raise DataError(f"{what} {run}: {run_dir} is not a run folder (no {RUN_FILE}).")
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            raise DataError(f"{what} {run}: {info_path} is damaged (not JSON). Restore it from a copy of the run "
                            f"folder, or train the run again.") from None
        own = info.get("competition")
        if competition is not None and own is not None and own != competition:
            log.warning("%s %s: a run of competition %s (not %s); used with its own config", what, run, own,
                        competition)
        return cls(run_dir, _saved_config(run_dir), info).verify(what)

    def leaderboard(self):
        """Every run and study of this run's competition, best first (leaderboard.py)."""
        from .leaderboard import leaderboard

        return leaderboard(self.root, self.cfg.name)

    def locked(self) -> "Run":
        """Take this run's lock (e.g. to write its export); released by ``unlock``."""
        lock = RunLock(self.lock_path)
        lock.acquire(self.name)
        self._lock = lock
        return self


def _saved_config(run_dir: Path, live: Config | None = None) -> Config:
    saved = read_yaml(run_dir / "config.yaml")
    if isinstance(saved.get("model"), dict):  # a run trained before the model family sections
        saved["model"] = sectioned_model(saved["model"])
    cfg = validate(saved, str(run_dir / "config.yaml"))
    info_path = run_dir / RUN_FILE
    source = None
    if live is not None and live.path is not None:
        source = live.path
    elif info_path.is_file():
        source = json.loads(info_path.read_text()).get("config_file")
    cfg._path = Path(source) if source else run_dir / "config.yaml"
    return cfg
