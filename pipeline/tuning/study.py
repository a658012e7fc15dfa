"""``python run.py --comp X --tune``: create or continue an Optuna study, run its trials (in this
process or one worker process per trial), then write the best parameters as a config overlay, the
summary and the plots.

Studies live in a storage Optuna shares between processes and machines: SQLite under
``outputs/<comp>/studies/<study>/`` by default, any RDB URL (PostgreSQL for many machines), or a
journal file. A killed study continues where it stopped: ``trials`` counts the trials the study
already has (budget.py says which count). Trials that raise are recorded as FAIL with the reason
and the study goes on; a worker process that dies (killed, out of memory) has its trial marked
FAIL by the parent, and it does not count.

Parallel workers are processes on one storage, never a scheduler of our own: ``--jobs J`` starts J
of them here, and any other machine may run the same command on the same storage. Each trial
samples with a seed of its own (sampler.py), so workers never evaluate the same point twice.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..logs import run_logging
from ..metrics import METRICS, DEFAULT_METRIC
from ..outputs import atomic_path, write_json, write_yaml
from ..paths import check_name
from ..setup import Setup
from . import budget
from .objective import Objective, rss_mb, trial_dir
from .space import overlay, resolve_space, suggest

log = logging.getLogger("pipeline")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
ISOLATE_FROM = 10  # trials: longer studies run each trial in its own process by default


def quiet_experimental() -> None:
    """WilcoxonPruner, heartbeats, TPE's group option and the matplotlib plots are marked experimental
    by Optuna; we chose them knowingly, so their warnings would only be noise in every run."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    warnings.filterwarnings("ignore", message="The number of trials is too small to compute importances")
    warnings.filterwarnings("ignore", message="Some regimes for parameter")  # importances of a short study


def make_storage(spec: str):
    """A storage spec string → an Optuna storage (each process builds its own from the string)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if spec.startswith("journal:") or spec.endswith((".log", ".journal", ".jsonl")):
        path = spec.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" not in spec:
        raise ConfigError(f"tune.storage {spec!r}: give an RDB URL (sqlite:///path.db, postgresql+psycopg://...) "
                          f"or a journal file (a path ending .log, or journal:PATH)")
    if spec.startswith("postgres://"):  # the form some hosts print; SQLAlchemy knows postgresql://
        spec = "postgresql://" + spec.removeprefix("postgres://")
    # Heartbeats let a restarted study find trials whose worker died and mark them FAIL.
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(spec, heartbeat_interval=60, grace_period=180)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"tune.storage {_safe_url(spec)}: the database driver {exc.name!r} is not installed. "
                              f"For PostgreSQL: pip install 'psycopg[binary]' and use postgresql+psycopg://...") from None
        except Exception as exc:  # SQLAlchemy's OperationalError and friends: no server, bad credentials
            text = str(exc)
            # Two workers starting on a new database both create Optuna's tables; the loser of that
            # race finds them made a moment later, so it tries again.
            if attempt < 3 and any(k in text for k in ("already exists", "duplicate key", "unique constraint")):
                time.sleep(0.5 + random.random())
                continue
            first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
            raise ConfigError(f"tune.storage {_safe_url(spec)}: cannot open the study storage ({first}). Check that "
                              f"the server runs and the URL is right.") from None


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _sampler_and_pruner(cfg):
    import optuna

    tc = cfg.tune
    from .sampler import TrialSeededTPESampler

    sampler = TrialSeededTPESampler(tc.seed, multivariate=True, group=True)
    if tc.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=tc.pruner_warmup_epochs)
    elif tc.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tc.max_epochs or cfg.train.epochs)
    elif tc.pruner == "wilcoxon":
        pruner = optuna.pruners.WilcoxonPruner(p_threshold=tc.wilcoxon_p)
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def open_study(cfg, study_name: str, storage: str):
    import optuna

    sampler, pruner = _sampler_and_pruner(cfg)
    direction = METRICS.get(cfg.metric or DEFAULT_METRIC[cfg.task or "regression"]).direction
    return optuna.create_study(study_name=study_name, storage=make_storage(storage), sampler=sampler, pruner=pruner,
                               direction=direction, load_if_exists=True)


def _count(study) -> int:
    return budget.counted(study.get_trials(deepcopy=False))


class _StopWhenFull:
    """Stops ``study.optimize`` once the study holds its counted trials, or when the space has no
    new points (Optuna's MaxTrialsCallback counts every trial, duplicates and dead ones too)."""

    def __init__(self, stop_at: int):
        self.stop_at = stop_at

    def __call__(self, study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        if budget.counted(trials) >= self.stop_at:
            study.stop()
        elif budget.exhausted(trials):
            log.info("the last %d trials repeated earlier parameters: the search space is exhausted",
                     budget.DUPLICATE_STREAK)
            study.stop()


def _run_trials(objective, study, timeout: float | None, stop_at: int, n: int | None = None) -> None:
    """Run trials here until the study holds ``stop_at`` counted trials (or ``n`` were run)."""
    if _count(study) >= stop_at:
        return
    study.optimize(objective, n_trials=n, timeout=timeout, catch=(Exception,), callbacks=[_StopWhenFull(stop_at)],
                   gc_after_trial=True)


def _watch_parent(parent: int) -> None:
    """End this worker when the process that started it is gone (killed parent: no orphans)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _worker(objective: Objective, study_name, storage, stop_at, parent: int) -> None:
    """One trial in a fresh process (spawned: no TensorFlow state is inherited)."""
    import optuna

    import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

    from ..logs import run_logging as logging_to

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_experimental()
    study = open_study(objective.setup.cfg, study_name, storage)
    with logging_to(objective.study_dir / "tune.log"):
        _run_trials(objective, study, None, stop_at, n=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study, study_dir: Path) -> int:
    """Trials left RUNNING by a process of this machine that is gone (a killed study, a worker
    that died) become FAIL with the reason, so the study can continue past them."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, host = t.user_attrs.get("pid"), t.user_attrs.get("host")
        if pid is not None and host == socket.gethostname() and not _alive(pid):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"its process {pid} is gone")
            study._storage.set_trial_user_attr(t._trial_id, budget.UNCOUNTED, f"worker {pid} died")
            study.tell(t.number, state=TrialState.FAIL)
            shutil.rmtree(trial_dir(study_dir, t.number, pid), ignore_errors=True)
            log.info("trial %d: FAIL (its process %d is gone; it does not count)", t.number, pid)
            n += 1
    return n


def _taken(study, active) -> int:
    """Trials finished, running elsewhere, or about to run in our live workers (one each)."""
    pids = {p.pid for p in active}
    trials = [t for t in study.get_trials(deepcopy=False) if budget.counts(t)]
    finished = sum(t.state.name in FINISHED for t in trials)
    elsewhere = sum(t.state.name == "RUNNING" and t.user_attrs.get("pid") not in pids for t in trials)
    return finished + elsewhere + len(active)


def _run_isolated(args: tuple, study, study_dir: Path, trials: int, jobs: int, timeout: float | None) -> None:
    ctx = mp.get_context("spawn")
    start, active = time.monotonic(), []
    while True:
        expired = timeout is not None and time.monotonic() - start > timeout
        if budget.exhausted(study.get_trials(deepcopy=False)):
            if not expired:
                log.info("the last %d trials repeated earlier parameters: the search space is exhausted",
                         budget.DUPLICATE_STREAK)
            expired = True
        while not expired and len(active) < jobs and _taken(study, active) < trials:
            p = ctx.Process(target=_worker, args=args)
            p.start()
            active.append(p)
        if not active:
            break
        time.sleep(0.2)
        for p in [p for p in active if not p.is_alive()]:
            p.join()
            active.remove(p)
            if p.exitcode != 0:
                fail_dead_trials(study, study_dir)
            log.info("parent process memory after a trial: %.0f MB", rss_mb())


def run_study(setup: Setup, *, trials: int | None = None, timeout: float | None = None, study: str | None = None,
              storage: str | None = None, jobs: int | None = None) -> dict:
    """Run (or continue) a study of the Setup's config (its ``--params`` overlay is the base of
    every trial's config, its ``--smoke`` sizes every trial); returns its summary (also written as
    summary.json). The entry point (``pipeline.tune``, run.py's --tune) resolved the Setup."""
    from ..versions import require

    require("optuna")
    import optuna

    cfg = setup.cfg
    tc = cfg.tune
    trials = trials or tc.trials
    timeout = timeout or tc.timeout
    jobs = jobs or tc.jobs
    name = check_name(study or tc.study or f"{cfg.name}-{cfg.model.name}", "--study")
    resolve_space(cfg, cfg.task or "regression")  # a bad space fails before anything is written
    study_dir = setup.study_dir(name)
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or tc.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    isolate = tc.isolate if tc.isolate is not None else (trials >= ISOLATE_FROM or jobs > 1)
    if jobs > 1 and not isolate:
        raise ConfigError("tune.jobs > 1 runs trials in worker processes; set tune.isolate=true (or leave it unset)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_experimental()
    objective = Objective(setup, study_dir, stop_at=trials)
    with run_logging(study_dir / "tune.log"):
        the_study = open_study(cfg, name, storage)
        fail_dead_trials(the_study, study_dir)
        done = _count(the_study)
        log.info("study %s (%s): %d trials wanted, %d already finished; storage %s; pruner %s; %s", name,
                 the_study.direction.name.lower(), trials, done, storage, tc.pruner,
                 f"{jobs} worker process(es), one process per trial" if isolate else "trials in this process")
        if isolate:
            args = (objective, name, storage, trials, os.getpid())
            _run_isolated(args, the_study, study_dir, trials, jobs, timeout)
        else:
            _run_trials(objective, the_study, timeout, trials)
        _remove_empty(study_dir / "trials")
        summary = summarize(the_study, cfg, objective, study_dir, storage)
    return summary


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only when no worker (here or elsewhere) has a scratch folder in it
    except OSError:
        pass


def summarize(study, cfg, objective: Objective, study_dir: Path, storage: str) -> dict:
    import optuna

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state.name == s and budget.counts(t) for t in trials) for s in FINISHED}
    summary = {"study": study.study_name, "storage": _safe_url(storage) if "://" in storage else storage,
               "direction": study.direction.name.lower(), "trials": budget.counted(trials),
               **{s.lower(): n for s, n in counts.items()},
               "uncounted": sum(budget.UNCOUNTED in t.user_attrs for t in trials)}
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    if running:  # another process's trials: the worker that finishes last writes the results
        log.info("trial(s) %s still running in other processes; the last one to finish writes best.yaml",
                 running)
        summary["running"] = running
        return summary
    if counts["COMPLETE"] == 0:
        log.info("study %s: no complete trial yet (%s)", study.study_name, counts)
        write_json(summary, study_dir / "summary.json")
        return summary
    best = study.best_trial
    overrides = suggest(optuna.trial.FixedTrial(best.params), resolve_space(cfg, cfg.task or "regression"))
    best_yaml = study_dir / "best.yaml"
    text = yaml.safe_dump(overlay(overrides), sort_keys=False)
    if best_yaml.is_file() and best_yaml.read_text() == text:
        log.info("best.yaml unchanged: %s", best_yaml)
    else:
        write_yaml(overlay(overrides), best_yaml)
        log.info("best.yaml written: %s", best_yaml)
    summary.update(best_value=best.value, best_trial=best.number, best_params=overrides, best_yaml=str(best_yaml))
    summary["plots"] = _plots(study, study_dir)
    write_json(summary, study_dir / "summary.json")
    from ..report import write_study_report

    summary["report"] = str(write_study_report(summary, study_dir, study.get_trials(deepcopy=False)))
    log.info("best value %.5g (trial %d); trials: %d complete, %d pruned, %d failed", best.value, best.number,
             counts["COMPLETE"], counts["PRUNED"], counts["FAIL"])
    log.info("best params: %s", overrides)
    log.info("run them: python run.py --comp %s --params %s", cfg.name, best_yaml)
    log.info("dashboard: optuna-dashboard %s", _safe_url(storage) if "://" in storage else
             storage.removeprefix("journal:"))
    return summary


def _plots(study, study_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    written = []
    for name, plot in (("history", ov.plot_optimization_history), ("importances", ov.plot_param_importances)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # importances need 2+ complete trials varying a parameter
            log.info("plot %s skipped: %s", name, exc)
            continue
        fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
        fig.tight_layout()
        path = study_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
