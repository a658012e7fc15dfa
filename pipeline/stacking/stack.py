"""``python run.py --comp X --stack RUN1 RUN2 ...``: combine finished runs into a level-2 run.

Members are run folders of the same competition. They must share the task, the training ids (row
by row) and the fold assignment, which every run of a competition does by construction (folds are
saved once per competition and CV setting); anything else is refused, naming the run and the
mismatch. The stack writes what a run writes: oof.csv, test_pred.csv, submission.csv and
scores.json (each member's score, each method's, and the chosen one's), atomically, scores last.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DEFAULT_COMPETITION, load_config, read_yaml
from ..data import load_competition
from ..errors import ConfigError, DataError
from ..logs import run_logging
from ..metrics import get_metric
from ..outputs import OUTPUT_ROOT, default_run_name, ensure_writable, write_csv, write_json, write_yaml
from ..submission import format_predictions, make_submission, parse_predictions
from .level2 import STACKERS, nested

log = logging.getLogger("pipeline")
RANK_METRICS = {"auc"}  # metrics that only see the order of predictions


@dataclass
class Member:
    name: str
    run_dir: Path
    oof: np.ndarray
    test: np.ndarray
    folds: np.ndarray


def _run_dir(comp_dir: Path, run: str) -> Path:
    path = Path(run)
    run_dir = path if path.is_dir() and (path / "scores.json").exists() else comp_dir / run
    if not run_dir.is_dir():
        runs = sorted(p.parent.name for p in comp_dir.glob("*/scores.json")) if comp_dir.is_dir() else []
        raise DataError(f"--stack {run}: no run folder {run_dir}. Finished runs of this competition: {runs}")
    if not (run_dir / "scores.json").is_file():
        raise DataError(f"--stack {run}: {run_dir} is not a finished run (no scores.json). Finish or resume it first.")
    return run_dir


def load_member(data, comp_dir: Path, run: str) -> Member:
    run_dir = _run_dir(comp_dir, run)
    saved = read_yaml(run_dir / "config.yaml")
    if saved.get("task") != data.task:
        raise DataError(f"--stack {run}: the run's task is {saved.get('task')}, the competition's is {data.task}. "
                        f"Stack runs of one task.")
    if saved.get("name") not in (None, data.cfg.name):
        raise DataError(f"--stack {run}: the run is of competition {saved.get('name')!r}, not {data.cfg.name!r}.")
    id_col = data.cfg.data.id
    folds = pd.read_csv(run_dir / "folds.csv", dtype={id_col: str})
    oof = pd.read_csv(run_dir / "oof.csv", dtype={id_col: str})
    test = pd.read_csv(run_dir / "test_pred.csv", dtype={id_col: str})
    train_ids = data.train[id_col].astype(str).to_numpy()
    for frame, file in ((folds, "folds.csv"), (oof, "oof.csv")):
        ids = frame[id_col].astype(str).to_numpy()
        if len(ids) != len(train_ids) or not (ids == train_ids).all():
            where = int(np.argmax(ids != train_ids)) if len(ids) == len(train_ids) else min(len(ids), len(train_ids))
            raise DataError(f"--stack {run}: {file} ids do not line up with the training rows "
                            f"({len(ids)} rows vs {len(train_ids)}; first difference at row {where + 1}). "
                            f"Stack runs made on the same training data.")
    test_ids = data.test[id_col].astype(str).to_numpy()
    if len(test) != len(test_ids) or not (test[id_col].astype(str).to_numpy() == test_ids).all():
        raise DataError(f"--stack {run}: test_pred.csv ids do not line up with {data.paths['test'].name}.")
    if "fold_2" in folds.columns:
        raise DataError(f"--stack {run}: the run used repeated CV (cv.repeats > 1); its OOF rows have no single "
                        f"fold, so a nested stacker cannot be fitted. Stack runs with cv.repeats=1.")
    return Member(run_dir.name, run_dir, parse_predictions(data, oof, run_dir / "oof.csv"),
                  parse_predictions(data, test, run_dir / "test_pred.csv"), folds["fold"].to_numpy())


def _holdout(data, metric, pred):
    from ..runner import holdout_labels

    pos, y = holdout_labels(data)
    return metric(y, pred[pos], data.task)


def stack_runs(comp: str | Path = DEFAULT_COMPETITION, runs: list[str] | None = None, *,
               methods: list[str] | None = None, run_name: str | None = None, data_dir=None, output_dir=None,
               overrides=None):
    """Stack finished runs; returns a RunResult like a training run (runner.RunResult)."""
    from ..runner import RunResult

    start = time.perf_counter()
    cfg = load_config(comp, overrides)
    runs = list(runs or cfg.stack.runs)
    if len(runs) < 2:
        raise ConfigError(f"--stack needs at least 2 runs to combine, got {runs}. Name finished runs of "
                          f"outputs/{cfg.name}/.")
    root = ensure_writable(Path(output_dir) if output_dir is not None else OUTPUT_ROOT)
    data = load_competition(cfg, data_dir)
    metric = get_metric(data.cfg.metric, data.task)
    methods = list(methods or cfg.stack.methods)
    for m in methods:
        STACKERS.get(m, "stack.methods")
    if "rank" in methods and metric.name not in RANK_METRICS:
        raise ConfigError(f"stack.methods: rank averaging suits rank metrics {sorted(RANK_METRICS)}; this "
                          f"competition's metric is {metric.name}. Drop rank.")
    comp_dir = root / data.cfg.name
    members = [load_member(data, comp_dir, r) for r in runs]
    ref = members[0]
    for m in members[1:]:
        if not (m.folds == ref.folds).all():
            raise DataError(f"--stack {m.name}: its folds differ from {ref.name}'s "
                            f"({int((m.folds != ref.folds).sum())} rows in another fold). Stack runs made with "
                            f"the same cv settings (they share outputs/{data.cfg.name}/folds/).")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"--stack: a run is named twice: {names}")
    run_dir = comp_dir / (run_name or f"stack-{default_run_name()}")
    if (run_dir / "scores.json").exists():
        raise ConfigError(f"{run_dir}: exists. Use another --run-name.")
    y, folds = data.y, ref.folds
    with run_logging(run_dir / "run.log"):
        log.info("stack of %d runs for %s (%s, metric %s): %s", len(members), data.cfg.name, data.task,
                 metric.name, ", ".join(names))
        scores = {"metric": metric.name, "direction": metric.direction, "members": {}, "methods": {}}
        for m in members:
            scores["members"][m.name] = metric(y, m.oof, data.task)
            log.info("  member %-28s OOF %s %.5g", m.name, metric.name, scores["members"][m.name])
        if data.solution is not None:
            scores["members_holdout"] = {m.name: _holdout(data, metric, m.test) for m in members}
        results = {}
        for method in methods:
            oof, test, weights = nested(method, [m.oof for m in members], [m.test for m in members], y, folds,
                                        data.task, metric, seed=data.cfg.train.seed)
            entry = {"cv": metric(y, oof, data.task)}
            if data.solution is not None:
                entry["holdout"] = _holdout(data, metric, test)
            if weights:
                entry.update(weights)
            scores["methods"][method] = entry
            results[method] = (oof, test)
            log.info("  stack %-29s OOF %s %.5g%s", method, metric.name, entry["cv"],
                     f"  holdout {entry['holdout']:.5g}" if "holdout" in entry else "")
        sign = 1 if metric.direction == "maximize" else -1
        best = max(methods, key=lambda k: sign * scores["methods"][k]["cv"])
        oof, test = results[best]
        scores.update(method=best, cv=scores["methods"][best]["cv"], runs=names)
        if "holdout" in scores["methods"][best]:
            scores["holdout"] = scores["methods"][best]["holdout"]
        scores.update(n_train=len(data.train), n_test=len(data.test), seconds=round(time.perf_counter() - start, 1))
        id_col = data.cfg.data.id
        files = {"config": write_yaml({**data.cfg.to_dict(), "stack": {"runs": names, "methods": methods}},
                                      run_dir / "config.yaml")}
        frame = format_predictions(data, data.train[id_col], oof)
        frame.insert(1, "fold", folds)
        files["folds"] = write_csv(pd.DataFrame({id_col: data.train[id_col], "fold": folds}), run_dir / "folds.csv")
        files["oof"] = write_csv(frame, run_dir / "oof.csv")
        files["test_pred"] = write_csv(format_predictions(data, data.test[id_col], test), run_dir / "test_pred.csv")
        files["submission"] = write_csv(make_submission(data, test), run_dir / "submission.csv")
        files["scores"] = write_json(scores, run_dir / "scores.json")
        files["log"] = run_dir / "run.log"
        log.info("stack (%s): OOF %s %.5g%s; best member OOF %.5g; outputs in %s", best, metric.name, scores["cv"],
                 f", holdout {scores['holdout']:.5g}" if "holdout" in scores else "",
                 (max if sign > 0 else min)(scores["members"].values()), run_dir)
    return RunResult(scores, run_dir, files)
