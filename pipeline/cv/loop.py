"""The K-fold loop: train every (repeat, fold), gather OOF and test predictions, resume.

OOF predictions are kept as a sum and a count per row (as AutoGluon's bagging does), so repeated
folds average correctly and a row never predicted stays visible as NaN. The test prediction is the
mean over all fold models (probabilities for classification). Folds whose folder is complete are
loaded instead of retrained, which is how a killed run resumes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..training import FoldResult, fit_fold
from .folds import fold_columns

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


def fold_units(folds: pd.DataFrame, repeats: int):
    """(name, repeat, fold, train_idx, valid_idx) for every model to train."""
    for r, col in enumerate(fold_columns(repeats)):
        assignment = folds[col].to_numpy()
        for k in sorted(np.unique(assignment[assignment >= 0])):
            name = f"fold_{k}" if repeats == 1 else f"r{r + 1}_fold_{k}"
            yield name, r, int(k), np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)


def run_cv(data, folds: pd.DataFrame, run_dir: Path) -> CVResult:
    id_col = data.cfg.data.id
    if not np.array_equal(folds[id_col].astype(str).to_numpy(), data.train[id_col].astype(str).to_numpy()):
        raise DataError(f"folds do not match the ids of {data.paths['train']} row by row. "
                        f"Delete the saved folds file to assign new ones.")
    units = list(fold_units(folds, data.cfg.cv.repeats))
    n, shape = len(data.train), (() if data.task != "multiclass" else (len(data.classes),))
    oof_sum, oof_count = np.zeros((n,) + shape), np.zeros(n)
    test_sum = np.zeros((len(data.test),) + shape)
    results, member_sum = [], {}
    plain_sum, plain_test = np.zeros_like(oof_sum), np.zeros_like(test_sum)
    for i, (name, _, _, train_idx, valid_idx) in enumerate(units):
        fold_dir = run_dir / "folds" / name
        prefix = f"{name} ({i + 1}/{len(units)})"
        if FoldResult.is_complete(fold_dir):
            result = FoldResult.load(fold_dir)
            log.info("%s: resumed from %s, %s %.5g", prefix, fold_dir, data.cfg.metric, result.score)
        else:
            log.info("%s: training on %d rows, validating on %d", prefix, len(train_idx), len(valid_idx))
            result = fit_fold(data, name, train_idx, valid_idx, fold_dir, seed=data.cfg.train.seed + i,
                              label=prefix)
            log.info("%s: %s %.5g (best epoch %d of %d, %.1fs)", prefix, data.cfg.metric, result.score,
                     result.best_epoch, result.epochs, result.seconds)
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
    return CVResult(mean(oof_sum), oof_count, test_sum / len(units), results,
                    {m: mean(total) for m, total in member_sum.items()},
                    mean(plain_sum) if plain else None, plain_test / len(units) if plain else None)
