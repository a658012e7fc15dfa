"""Pseudo-labels (``train.pseudo_label``): a second stage of the K-fold loop in which each fold
trains on its own training rows plus the test rows its first-stage models predict confidently,
labelled with the predicted class.

The leakage rule. A fold's validation rows are training rows, so they are never among the added
rows; but the labels given to the test rows must not carry what the validation labels taught,
or stage 2's OOF score would be optimistic. The run's test predictions average every fold's
models, and fold j's model was trained on fold k's validation rows. So fold k's pseudo-labels
come from fold k's own first-stage models alone (trained without its validation rows), combined
with the weights the ensemble fitted without fold k's rows (its cross-fitted fold weights; with
cv.repeats > 1, the later repeats' units use the final weights, a small optimism). Stage 2's OOF
is then as honest as stage 1's.

The first stage's fold folders are kept under the run's ``stage1/``; the run's ``folds/`` hold
stage 2, which makes the run's predictions, --predict and --export-run. Tuning trials run one
stage (their score is the first stage's).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..ensemble import weighted
from ..metrics import get_metric
from .folds import FoldUnit

log = logging.getLogger("pipeline")


def probabilities(pred: np.ndarray) -> np.ndarray:
    """(rows, classes) probabilities: binary predictions are P(class 1)."""
    pred = np.asarray(pred, dtype=np.float64)
    return np.stack([1.0 - pred, pred], axis=1) if pred.ndim == 1 else pred


def confident_rows(test_pred: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(test positions, class index) of the rows whose top class probability is >= threshold."""
    probs = probabilities(test_pred)
    idx = np.flatnonzero(probs.max(axis=1) >= threshold)
    return idx, probs[idx].argmax(axis=1)


def fold_test_prediction(result, ensemble, unit: FoldUnit) -> np.ndarray:
    """Fold ``unit``'s own first-stage test prediction, its members weighed as the ensemble weighed
    them without that fold's rows."""
    weights = ensemble.fold_weights.get(str(unit.fold)) if unit.repeat == 0 else None
    weights = weights or ensemble.weights
    return weighted([result.members[n][1] for n in ensemble.names], weights)


def with_test_rows(data, test_idx: np.ndarray, labels: np.ndarray):
    """``data`` whose training table has the given test rows appended, with these labels."""
    train = pd.concat([data.train, data.test.iloc[test_idx]], ignore_index=True)
    images = None
    if data.images is not None:
        images = {**data.images, "train": np.concatenate([data.images["train"], data.images["test"][test_idx]])}
    y = np.concatenate([data.y, np.asarray(labels, dtype=data.y.dtype)])
    return dataclasses.replace(data, train=train, y=y, images=images)


def second_stage(data, units: list[FoldUnit], first, fold_dir: Callable[[FoldUnit], Path], budget=None):
    """Stage 2 over the units that stage 1 trained: returns (its CVResult, the summary for
    scores.json), or (None, summary) when a time limit stopped it before every unit ran."""
    from .loop import gather, train_folds

    threshold = data.cfg.train.pseudo_label
    done = {r.name: r for r in first.folds}
    plan = {}
    for unit in units:
        if unit.name in done:
            idx, labels = confident_rows(fold_test_prediction(done[unit.name], first.ensemble, unit), threshold)
            plan[unit.name] = (idx, labels)
    n = len(data.train)

    def prepare(unit: FoldUnit):
        idx, labels = plan[unit.name]
        grown = dataclasses.replace(unit, train_idx=np.concatenate([unit.train_idx, n + np.arange(len(idx))]))
        return with_test_rows(data, idx, labels), grown

    staged = [u for u in units if u.name in plan]
    for u in staged:
        log.info("pseudo-labels: %s adds %d of %d test rows (its own stage-1 models' confidence >= %g)",
                 u.name, len(plan[u.name][0]), len(data.test), threshold)
    results = list(train_folds(data, staged, fold_dir, label="stage 2: ", budget=budget, prepare=prepare))
    metric = get_metric(data.cfg.metric, data.task)
    summary = {"threshold": threshold, "rows": {u: int(len(i)) for u, (i, _) in plan.items()},
               "test_rows": int(len(data.test)), "stage1_cv": float(metric(data.y[first.oof_count > 0],
                                                                             first.oof[first.oof_count > 0], data.task))}
    if data.solution is not None:  # how often the added labels were right, where the holdout knows
        pos, y_sol = data.holdout()
        truth = pd.Series(y_sol, index=pos)
        right = [labels[np.isin(idx, pos)] == truth.loc[idx[np.isin(idx, pos)]].to_numpy() for idx, labels in plan.values()]
        right = np.concatenate(right) if right else np.array([])
        summary["holdout_label_accuracy"] = float(right.mean()) if len(right) else None
        summary["stage1_holdout"] = float(metric(y_sol, first.test[pos], data.task))
    if len(results) < len(staged):
        log.warning("warning: the time limit stopped pseudo-labelling's second stage after %d of %d folds; the run "
                    "keeps its first stage (stage1/)", len(results), len(staged))
        return None, summary
    second = gather(data, staged, results)
    summary["stage2_cv"] = float(metric(data.y[second.oof_count > 0], second.oof[second.oof_count > 0], data.task))
    sign = 1.0 if metric.direction == "maximize" else -1.0
    if sign * summary["stage2_cv"] < sign * summary["stage1_cv"]:
        log.warning("warning: with pseudo-labels the OOF %s is %.5g, below the first stage's %.5g; the first stage's "
                    "fold models are in stage1/", metric.name, summary["stage2_cv"], summary["stage1_cv"])
    return second, summary
