"""``python run.py --comp X --stack RUN1 RUN2 ...``: combine finished runs into a level-2 run.

Members are run folders of the same competition. They must share the task, the training ids (row
by row) and the fold assignment, which every run of a competition does by construction (folds are
saved once per competition and CV setting); anything else is refused, naming the run and the
mismatch. The stack writes what a run writes: oof.csv, test_pred.csv, submission.csv and
scores.json (each member's score, each method's, and the chosen one's), atomically, scores last.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import StackConfig
from ..errors import ConfigError, DataError
from ..logs import run_logging
from ..metrics import get_metric
from ..outputs import default_run_name, write_csv, write_json
from ..runs import Run
from ..setup import Setup
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
    finished: str | None = None  # when the member run finished: part of the stack's fingerprint


def load_member(data, member: Run) -> Member:
    """A finished run of this competition as a stack member (its own oof.csv, test_pred.csv and
    folds.csv, read through the Run); anything that does not line up with the competition's rows
    and task is refused, naming the run and the mismatch."""
    run = member.name
    if member.cfg.task != data.task:
        raise DataError(f"--stack {run}: the run's task is {member.cfg.task}, the competition's is {data.task}. "
                        f"Stack runs of one task.")
    id_col = data.cfg.data.id
    folds, oof, test = member.folds, member.oof, member.test_pred
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
    fmt = data.submission_format
    return Member(member.name, member.dir, parse_predictions(fmt, oof, member.oof_path),
                  parse_predictions(fmt, test, member.test_pred_path), folds["fold"].to_numpy(),
                  member.info.get("finished"))


def _holdout(data, metric, pred):
    pos, y = data.holdout()
    return metric(y, pred[pos], data.task)


def _check_names(names: list[str], setup: Setup) -> None:
    if len(names) < 2:
        raise ConfigError(f"--stack needs at least 2 runs to combine, got {names}. Name finished runs of "
                          f"{setup.comp_dir}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"--stack: a run is named twice: {names}")


def open_members(setup: Setup, names: list[str] | None) -> list[Run]:
    """The finished runs to stack: ``names`` (``--stack RUN ...``), else the config's stack.runs."""
    names = [str(n) for n in (names or setup.cfg.stack.runs)]
    if len(names) < 2:  # before any run is opened; a run named twice is refused once they are
        _check_names(names, setup)
    return [setup.open_run(n, "--stack").require_finished("--stack") for n in names]


def stack(setup: Setup, runs: list[Run], *, methods: list[str] | None = None, run_name: str | None = None):
    """Stack finished Runs (the entry point opened them); returns a RunResult like a training run
    (runner.RunResult). The stack is a run itself (kind "stack") of its members' config with the
    Setup's stack settings: config.yaml, run.json, lock."""
    from ..runner import RunResult, log_finished

    names = [r.name for r in runs]
    _check_names(names, setup)
    for r in runs:
        if r.cfg.name != setup.cfg.name:
            raise DataError(f"--stack {r.name}: the run is of competition {r.cfg.name!r}, not {setup.cfg.name!r}.")
    methods = list(methods or setup.cfg.stack.methods)
    for m in methods:
        STACKERS.get(m, "stack.methods")
    # The members' own resolved config (the first one's: each member is checked against its rows),
    # with this command's stack settings and metric (a stack may be scored by another metric).
    cfg = runs[0].cfg.model_copy(update={"stack": StackConfig(runs=names, methods=methods),
                                         "metric": setup.cfg.metric or runs[0].cfg.metric})
    data = runs[0].load_data(setup.data_dir, cfg)
    metric = get_metric(cfg.metric, data.task)
    if "rank" in methods and metric.name not in RANK_METRICS:
        raise ConfigError(f"stack.methods: rank averaging suits rank metrics {sorted(RANK_METRICS)}; this "
                          f"competition's metric is {metric.name}. Drop rank.")
    members = [load_member(data, r) for r in runs]
    ref = members[0]
    for m in members[1:]:
        if not (m.folds == ref.folds).all():
            raise DataError(f"--stack {m.name}: its folds differ from {ref.name}'s "
                            f"({int((m.folds != ref.folds).sum())} rows in another fold). Stack runs made with "
                            f"the same cv settings (they share {setup.folds_dir}).")
    sources = {m.name: m.finished for m in members}
    run = setup.create_run(run_name or f"stack-{default_run_name()}", kind="stack", data=data,
                           extra={"members": sources, "methods": methods})
    if run.finished:
        log_finished(run)
        return RunResult(run.scores, run.dir, run.files())
    with run, run_logging(run.log_path):
        _stack(run, data, members, methods, metric)
    return RunResult(run.scores, run.dir, run.files())


def _stack(run: Run, data, members: list[Member], methods: list[str], metric) -> None:
    names = [m.name for m in members]
    y, folds = data.y, members[0].folds
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
    top = max(members, key=lambda m: sign * scores["members"][m.name])
    if sign * scores["members"][top.name] > sign * scores["methods"][best]["cv"]:
        # No level-2 method beat the best run alone out of sample: the stack is that run, so it is
        # never worse than its best member (ensemble.py's rule for a run's members).
        log.info("  no method beats %s alone (OOF %.5g); the stack is that run", top.name, scores["members"][top.name])
        best, oof, test = f"best member {top.name}", top.oof, top.test
        entry = {"cv": scores["members"][top.name]}
        if data.solution is not None:
            entry["holdout"] = scores["members_holdout"][top.name]
        scores["methods"][best] = entry
    scores.update(method=best, cv=scores["methods"][best]["cv"], runs=names)
    if "holdout" in scores["methods"][best]:
        scores["holdout"] = scores["methods"][best]["holdout"]
    scores.update(n_train=len(data.train), n_test=len(data.test), seconds=run.seconds())
    id_col, fmt = data.cfg.data.id, data.submission_format
    frame = format_predictions(fmt, data.train[id_col], oof)
    frame.insert(1, "fold", folds)
    write_csv(pd.DataFrame({id_col: data.train[id_col], "fold": folds}), run.folds_path)
    write_csv(frame, run.oof_path)
    write_csv(format_predictions(fmt, data.test[id_col], test), run.test_pred_path)
    write_csv(make_submission(data, test), run.submission_path)
    write_json(scores, run.scores_path)
    log.info("stack (%s): OOF %s %.5g%s; best member OOF %.5g; outputs in %s", best, metric.name, scores["cv"],
             f", holdout {scores['holdout']:.5g}" if "holdout" in scores else "",
             (max if sign > 0 else min)(scores["members"].values()), run.dir)
