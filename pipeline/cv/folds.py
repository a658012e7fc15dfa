"""Assign CV folds once, save them, and reuse them in every later run of the competition.

Saved folds make the OOF files of different runs line up row by row, which stacking needs. The
file is keyed by the CV settings and a hash of the training ids/target/groups, so a change of
either gives new folds instead of silently reusing stale ones.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from ..errors import DataError


@dataclass(frozen=True)
class FoldUnit:
    """One model of the CV: its name (its folder under the run's folds/), repeat, fold and rows."""

    index: int
    name: str
    repeat: int
    fold: int
    train_idx: np.ndarray
    valid_idx: np.ndarray


def fold_columns(repeats: int) -> list[str]:
    """folds.csv columns: ``fold`` for the first repeat, ``fold_2``... for further repeats."""
    return ["fold"] + [f"fold_{r + 1}" for r in range(1, repeats)]


def fold_units(folds: pd.DataFrame, repeats: int) -> list[FoldUnit]:
    """Every model to train, in order. The one place a fold's name is made."""
    units = []
    for r, col in enumerate(fold_columns(repeats)):
        assignment = folds[col].to_numpy()
        for k in sorted(np.unique(assignment[assignment >= 0])):
            name = f"fold_{k}" if repeats == 1 else f"r{r + 1}_fold_{k}"
            units.append(FoldUnit(len(units), name, r, int(k), np.flatnonzero(assignment != k),
                                  np.flatnonzero(assignment == k)))
    return units


def _strata(data) -> np.ndarray:
    if data.task != "regression":
        return data.y
    # Regression: stratify on quantile bins of the target, so every fold sees the whole range.
    bins = min(data.cfg.cv.stratify_bins, len(data.y) // data.cfg.cv.folds)
    return pd.qcut(data.y, q=max(2, bins), labels=False, duplicates="drop")


def _splitter(scheme: str, folds: int, seed: int):
    return {"kfold": KFold(folds, shuffle=True, random_state=seed),
            "stratified": StratifiedKFold(folds, shuffle=True, random_state=seed),
            "group": GroupKFold(folds, shuffle=True, random_state=seed),
            "stratified_group": StratifiedGroupKFold(folds, shuffle=True, random_state=seed)}[scheme]


def assign_folds(data) -> pd.DataFrame:
    cv = data.cfg.cv
    if cv.folds > len(data.train):
        raise DataError(f"cv.folds={cv.folds} is more than the {len(data.train)} training rows of "
                        f"{data.paths.get('train', 'the training file')}. Lower cv.folds.")
    groups = data.train[cv.group].to_numpy() if cv.group else None
    if groups is not None and pd.Series(groups).nunique() < cv.folds:
        raise DataError(f"cv.group {cv.group!r} has {pd.Series(groups).nunique()} groups, fewer than "
                        f"cv.folds={cv.folds}. Lower cv.folds.")
    strata = _strata(data)
    if cv.scheme in ("stratified", "stratified_group"):
        smallest = int(pd.Series(strata).value_counts().min())
        if smallest < cv.folds:
            raise DataError(f"cv.scheme {cv.scheme}: a target class has only {smallest} rows, fewer than "
                            f"cv.folds={cv.folds}. Lower cv.folds or use cv.scheme=kfold.")
    out = pd.DataFrame({data.cfg.data.id: data.train[data.cfg.data.id].to_numpy()})
    for r, col in enumerate(fold_columns(cv.repeats)):
        fold = np.full(len(out), -1, dtype=np.int64)
        splitter = _splitter(cv.scheme, cv.folds, cv.seed + r)
        for k, (_, valid) in enumerate(splitter.split(np.zeros(len(out)), strata, groups)):
            fold[valid] = k
        out[col] = fold
    return out


def folds_key(data) -> str:
    cv = data.cfg.cv
    h = hashlib.sha1()
    for values in (data.train[data.cfg.data.id], data.y,
                   data.train[cv.group] if cv.group else pd.Series(dtype=float)):
        h.update(pd.util.hash_pandas_object(pd.Series(values), index=False).to_numpy().tobytes())
    return f"{cv.scheme}-k{cv.folds}-r{cv.repeats}-s{cv.seed}-{h.hexdigest()[:10]}"


def load_or_assign_folds(data, folds_dir: Path | None) -> pd.DataFrame:
    """Folds from ``folds_dir/<key>.csv`` if saved, else assigned now (and saved if a dir is given)."""
    from ..outputs import write_csv

    if folds_dir is not None:
        path = folds_dir / f"{folds_key(data)}.csv"
        if path.is_file():
            id_col = data.cfg.data.id
            # Ids read as the training file's ids were (text ids such as 00042 keep their zeros).
            text = pd.api.types.is_object_dtype(data.train[id_col]) or pd.api.types.is_string_dtype(data.train[id_col])
            return pd.read_csv(path, dtype={id_col: str} if text else None)
    folds = assign_folds(data)
    if folds_dir is not None:
        write_csv(folds, path)
    return folds
