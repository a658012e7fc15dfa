"""The K-fold loop: train every fold unit (or load it when its folder is complete), gather OOF and
test predictions.

``train_folds`` is the one fold iterator: a run's CV and a tuning trial both walk the units
through it, so resume, seeding and the progress lines are the same for both.

Each member's OOF predictions are each row's mean over the repeats that predicted it (as
AutoGluon's bagging does), and a row never predicted stays visible as NaN; its test prediction is
the mean over all fold models (probabilities for classification). ``gather`` then weighs the
members (ensemble.py): a run and a tuning trial score the same cross-fitted ensemble.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..ensemble import Ensemble, fit_ensemble
from ..errors import raise_if_terminated
from ..metrics import get_metric
from ..time_budget import TimeBudget
from ..training import FoldResult, fit_fold
from .folds import FoldUnit
from .workers import FoldPool, fold_workers

log = logging.getLogger("pipeline")


@dataclass
class CVResult:
    oof: np.ndarray  # the ensemble's cross-fitted OOF (each row's mean over repeats); NaN where none predicted
    oof_count: np.ndarray
    test: np.ndarray  # the ensemble's test predictions (final weights; mean over the fold models)
    folds: list[FoldResult]
    member_oof: dict[str, np.ndarray]  # each member's own OOF predictions
    member_test: dict[str, np.ndarray]
    ensemble: Ensemble
    groups: np.ndarray  # each row's fold in the first repeat (the ensemble is cross-fitted over them)
    detail_oof: dict[str, np.ndarray] = field(default_factory=dict)  # a Keras member's seeds x checkpoints
    # Image competitions: OOF and test predictions of the identity view alone (without TTA).
    oof_no_tta: np.ndarray | None = None
    test_no_tta: np.ndarray | None = None


def train_folds(data, units: list[FoldUnit], fold_dir: Callable[[FoldUnit], Path], *, label: str = "",
                callbacks: Callable[[FoldUnit], list] | None = None,
                budget: TimeBudget | None = None,
                prepare: Callable[[FoldUnit], tuple] | None = None, save: bool = True) -> Iterator[FoldResult]:
    """Yield each unit's FoldResult: loaded when its folder is complete (resume), else trained.

    ``fold_dir(unit)``: where the unit's artifact lives; ``label`` prefixes the progress lines
    (a trial's number); ``callbacks(unit)``: extra Keras callbacks for that unit (pruning);
    ``budget``: a time limit: each fold gets its share, and folds that no longer fit are skipped;
    ``prepare(unit)``: the (data, unit) that unit trains on instead (pseudo-labels' added rows);
    ``save=False``: no fold artifact written (a tuning trial: its folder is removed after; saving
    its members took a 6-trial HGB study on 300 rows from 7.3 s to 9.2 s)."""
    pending = [u for u in units if not FoldResult.is_complete(fold_dir(u))]
    # Folds side by side (workers.py) only where nothing ties one fold to the parent: no per-unit
    # callbacks (pruning), budget, prepared data or unsaved trial.
    plain = callbacks is None and budget is None and prepare is None and save
    workers = fold_workers(data, len(pending)) if plain else 1
    with FoldPool(data, workers) if workers > 1 else contextlib.nullcontext() as pool:
        queued = {}
        for u in pending if pool else []:
            prefix = _prefix(label, u, units)
            queued[u.name] = pool.submit(u, fold_dir(u), data.cfg.train.seed + u.index, prefix, _start_line(prefix, u, u))
        trained = 0
        for position, unit in enumerate(units):
            raise_if_terminated()  # between folds too (HGB members have no epochs)
            path, prefix = fold_dir(unit), _prefix(label, unit, units)
            if unit.name in queued:
                result = pool.result(queued[unit.name])
            else:
                result = _resume(path, prefix)
                if result is not None:
                    log.info("%s: resumed from %s, %s %s", prefix, path, data.cfg.metric,
                             ", ".join(f"{m} {v:.5g}" for m, v in result.member_scores.items()))
                    yield result
                    continue
                if budget is not None and not budget.can_start(trained):
                    budget.folds_skipped += [u.name for u in units[position:] if not FoldResult.is_complete(fold_dir(u))]
                    log.info("time limit: %.0fs left, a fold needs about %.0fs; not starting %s", budget.left(),
                             budget.cheapest_fold, ", ".join(budget.folds_skipped))
                    return
                result = _train_here(data, unit, units, path, prefix, position, callbacks, budget, prepare, save)
            trained += 1
            # A fold of tree and linear members only has rounds (its largest), not epochs.
            trained_for = (f"best epoch {result.best_epoch} of {result.epochs}" if result.best_epoch
                           else f"{result.epochs} rounds")
            log.info("%s: %s %s (%s, %.1fs)", prefix, data.cfg.metric,
                     ", ".join(f"{m} {v:.5g}" for m, v in result.member_scores.items()), trained_for, result.seconds)
            yield result


def _prefix(label: str, unit: FoldUnit, units: list[FoldUnit]) -> str:
    return f"{label}{unit.name} ({unit.index + 1}/{len(units)})"


def _start_line(prefix: str, fit_unit: FoldUnit, unit: FoldUnit) -> str:
    return f"{prefix}: training on {len(fit_unit.train_idx)} rows, validating on {len(unit.valid_idx)}"


def _train_here(data, unit, units, path, prefix, position, callbacks, budget, prepare, save) -> FoldResult:
    """One fold trained in this process (train_folds' arguments)."""
    fold_data, fit_unit = prepare(unit) if prepare is not None else (data, unit)
    log.info(_start_line(prefix, fit_unit, unit))
    start = time.monotonic()
    deadline = budget.fold_deadline(len(units) - position) if budget is not None else None
    result = fit_fold(fold_data, unit.name, fit_unit.train_idx, unit.valid_idx, path,
                      seed=data.cfg.train.seed + unit.index, label=prefix,
                      callbacks=callbacks(unit) if callbacks else None, deadline=deadline, save=save)
    if budget is not None:
        timing = result.timing or {"train_seconds": 0.0, "slowest_epoch": 0.0}
        budget.record(time.monotonic() - start, timing["train_seconds"], timing["slowest_epoch"])
        if timing.get("cut"):
            budget.folds_cut.append(unit.name)
    return result


def _resume(path: Path, prefix: str) -> FoldResult | None:
    """A complete fold's result, or None; a damaged fold folder is set aside and trained again."""
    if not FoldResult.is_complete(path):
        return None
    try:
        return FoldResult.load(path)
    except (ValueError, KeyError, OSError, TypeError, zipfile.BadZipFile) as exc:
        log.warning("%s: the saved fold in %s is damaged (%s: %s); training it again", prefix, path,
                    type(exc).__name__, str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "")
        shutil.rmtree(path, ignore_errors=True)
        return None


def run_cv(data, units: list[FoldUnit], fold_dir: Callable[[FoldUnit], Path],
           budget: TimeBudget | None = None) -> CVResult:
    return gather(data, units, list(train_folds(data, units, fold_dir, budget=budget)))


def gather(data, units: list[FoldUnit], results: list[FoldResult]) -> CVResult:
    """The fold units' predictions as the run's: each member's OOF (mean over repeats) and test
    predictions (mean over the fold models that ran), weighed by the ensemble (ensemble.py)."""
    n, shape = len(data.train), (() if data.task != "multiclass" else (len(data.classes),))
    count = np.zeros(n)
    for r in results:
        count[r.valid_idx] += 1
    per_row = count.reshape((n,) + (1,) * len(shape))

    def oof_mean(pairs) -> np.ndarray:  # [(valid_idx, predictions)] → each row's mean; NaN where none
        total = np.zeros((n,) + shape)
        for idx, pred in pairs:
            total[idx] += pred
        return np.where(per_row > 0, total / np.maximum(per_row, 1), np.nan)

    names = list(results[0].members)
    member_oof = {m: oof_mean((r.valid_idx, r.members[m][0]) for r in results) for m in names}
    member_test = {m: np.mean([r.members[m][1] for r in results], axis=0) for m in names}
    detail_oof = {k: oof_mean((r.valid_idx, r.details[k][0]) for r in results) for k in results[0].details}
    groups = np.full(n, -1)
    for u in units:
        if u.repeat == 0:
            groups[u.valid_idx] = u.fold
    ensemble = fit_ensemble(member_oof, data.y, groups, data.task, get_metric(data.cfg.metric, data.task),
                            len(data.classes), data.cfg.ensemble)
    metric = get_metric(data.cfg.metric, data.task)
    for r in results:  # each fold's score: the ensemble's (cross-fitted) predictions of its rows
        r.score = metric(data.y[r.valid_idx], ensemble.oof[r.valid_idx], data.task)
    plain = all(r.no_tta is not None for r in results)
    return CVResult(ensemble.oof, count, ensemble.predict(member_test), results, member_oof, member_test,
                    ensemble, groups, detail_oof,
                    oof_mean((r.valid_idx, r.no_tta[0]) for r in results) if plain else None,
                    np.mean([r.no_tta[1] for r in results], axis=0) if plain else None)
