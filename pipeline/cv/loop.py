"""The K-fold loop: train every fold unit (or load it when its folder is complete), gather OOF and
test predictions.

``train_folds`` is the one fold iterator: a run's CV and a tuning trial both walk the units
through it, so resume, seeding and the progress lines are the same for both.

OOF predictions are kept as a sum and a count per row (as AutoGluon's bagging does), so repeated
folds average correctly and a row never predicted stays visible as NaN. The test prediction is the
mean over all fold models (probabilities for classification).
"""
from __future__ import annotations

import logging
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..time_budget import TimeBudget
from ..training import FoldResult, fit_fold
from .folds import FoldUnit

log = logging.getLogger("pipeline")


@dataclass
class CVResult:
    oof: np.ndarray  # mean over the repeats that predicted each row; NaN where none did
    oof_count: np.ndarray
    test: np.ndarray
    folds: list[FoldResult]
    member_oof: dict[str, np.ndarray]  # each ensemble member's own OOF predictions (seeds, checkpoints)
    # Image competitions: OOF and test predictions of the identity view alone (without TTA).
    oof_no_tta: np.ndarray | None = None
    test_no_tta: np.ndarray | None = None


def train_folds(data, units: list[FoldUnit], fold_dir: Callable[[FoldUnit], Path], *, label: str = "",
                callbacks: Callable[[FoldUnit], list] | None = None,
                budget: TimeBudget | None = None) -> Iterator[FoldResult]:
    """Yield each unit's FoldResult: loaded when its folder is complete (resume), else trained.

    ``fold_dir(unit)``: where the unit's artifact lives; ``label`` prefixes the progress lines
    (a trial's number); ``callbacks(unit)``: extra Keras callbacks for that unit (pruning);
    ``budget``: a time limit: each fold gets its share, and folds that no longer fit are skipped."""
    trained = 0
    for position, unit in enumerate(units):
        path = fold_dir(unit)
        prefix = f"{label}{unit.name} ({unit.index + 1}/{len(units)})"
        result = _resume(path, prefix)
        if result is not None:
            log.info("%s: resumed from %s, %s %.5g", prefix, path, data.cfg.metric, result.score)
        elif budget is not None and not budget.can_start(trained):
            budget.folds_skipped += [u.name for u in units[position:] if not FoldResult.is_complete(fold_dir(u))]
            log.info("time limit: %.0fs left, a fold needs about %.0fs; not starting %s", budget.left(),
                     budget.cheapest_fold, ", ".join(budget.folds_skipped))
            return
        else:
            log.info("%s: training on %d rows, validating on %d", prefix, len(unit.train_idx), len(unit.valid_idx))
            start = time.monotonic()
            deadline = budget.fold_deadline(len(units) - position) if budget is not None else None
            result = fit_fold(data, unit.name, unit.train_idx, unit.valid_idx, path,
                              seed=data.cfg.train.seed + unit.index, label=prefix,
                              callbacks=callbacks(unit) if callbacks else None, deadline=deadline)
            trained += 1
            if budget is not None:
                timing = result.timing or {"train_seconds": 0.0, "slowest_epoch": 0.0}
                budget.record(time.monotonic() - start, timing["train_seconds"], timing["slowest_epoch"])
                if timing.get("cut"):
                    budget.folds_cut.append(unit.name)
            log.info("%s: %s %.5g (best epoch %d of %d, %.1fs)", prefix, data.cfg.metric, result.score,
                     result.best_epoch, result.epochs, result.seconds)
        yield result


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
    n, shape = len(data.train), (() if data.task != "multiclass" else (len(data.classes),))
    oof_sum, oof_count = np.zeros((n,) + shape), np.zeros(n)
    test_sum = np.zeros((len(data.test),) + shape)
    results, member_sum = [], {}
    plain_sum, plain_test = np.zeros_like(oof_sum), np.zeros_like(test_sum)
    for result in train_folds(data, units, fold_dir, budget=budget):
        oof_sum[result.valid_idx] += result.oof
        oof_count[result.valid_idx] += 1
        for member, (member_oof, _) in result.members.items():
            member_sum.setdefault(member, np.zeros_like(oof_sum))[result.valid_idx] += member_oof
        test_sum += result.test
        if result.no_tta is not None:
            plain_sum[result.valid_idx] += result.no_tta[0]
            plain_test += result.no_tta[1]
        results.append(result)
    count = oof_count.reshape((n,) + (1,) * len(shape))

    def mean(total):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    plain = all(r.no_tta is not None for r in results)
    # The mean over the fold models that ran (all of them, unless a time limit skipped some).
    ran = len(results)
    return CVResult(mean(oof_sum), oof_count, test_sum / ran, results,
                    {m: mean(total) for m, total in member_sum.items()},
                    mean(plain_sum) if plain else None, plain_test / ran if plain else None)
