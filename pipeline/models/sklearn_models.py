"""scikit-learn level-1 models run through the same CV as the Keras models: HistGradientBoosting
and a linear model (Ridge / logistic regression). Same folds, same per-fold preprocessing, same
outputs, so a stack can mix a neural net with a GBDT.

Both take the TabularPreprocessor's output: the numeric block (scaled numerics, one-hot and ordinal
codes) and one integer code column per embedded categorical. HistGradientBoosting treats those
codes as categories natively; the linear model one-hot encodes them.
"""
from __future__ import annotations

import inspect

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from ..preprocessing.table import NUMERIC_INPUT

# The members that take the fold preprocessing's output as one matrix (to_matrix) rather than Keras
# inputs: scikit-learn's estimators here and LightGBM (lgbm.py).
MATRIX_MODELS = {"hgb", "linear", "lightgbm"}
HGB_MAX_CATEGORIES = 255  # HistGradientBoosting's limit on a categorical feature's levels


def to_matrix(features: dict[str, np.ndarray], rows: np.ndarray | None = None,
              dtype=np.float64) -> tuple[np.ndarray, list[int]]:
    """Model inputs → one matrix, float64 by default (what scikit-learn's estimators compute in),
    and the indexes of its category-code columns. ``rows``: the positions to take, in that order
    (None: every row as it is). Filled in place: one copy of the rows, not a copy per block and
    then their stack. float32 holds every input exactly (the numeric block is float32, the codes
    int32 below 2^24 levels): LightGBM reads it as it is; HGB casts it to its own float64 copy
    anyway (training/members.py: SklearnMember._dtype)."""
    names = sorted(k for k in features if k != NUMERIC_INPUT)
    numeric = features.get(NUMERIC_INPUT)
    width = numeric.shape[1] if numeric is not None else 0
    n = len(numeric) if numeric is not None else len(features[names[0]])
    take = slice(None) if rows is None else np.asarray(rows)
    out = np.empty((n if rows is None else len(take), width + len(names)), dtype=dtype)
    if numeric is not None:  # by row blocks: a packed block (preprocessing/arrays.py) unpacks a block at a time
        for i in range(0, len(out), 65536):
            out[i:i + 65536, :width] = numeric[i:i + 65536] if rows is None else numeric[take[i:i + 65536]]
    for i, name in enumerate(names):
        out[:, width + i] = np.asarray(features[name]).reshape(-1)[take]
    return out, list(range(width, width + len(names)))


def frequent_codes(codes: np.ndarray, vocab: int, keep: int = HGB_MAX_CATEGORIES - 1) -> np.ndarray:
    """A lookup from a column's category codes to at most ``keep + 1`` codes: its ``keep`` most
    frequent codes in ``codes`` (the fold's training rows) keep a code of their own, by frequency,
    and every other code (rarer levels, unseen ones) shares the last. So HistGradientBoosting,
    which takes at most 255 levels per categorical feature, splits on a column of thousands of
    levels as categories instead of as the arbitrary order of their codes (LightGBM and CatBoost
    users cap such columns the same way; bench/generalization.py's HGB does)."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=vocab)
    order = np.argsort(-counts, kind="stable")[:keep]
    lookup = np.full(vocab, keep, dtype=np.int64)
    lookup[order] = np.arange(len(order))
    return lookup


def hgb_validation_rows(y: np.ndarray, task: str, params: dict, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Row positions (fit, held out) of the split HistGradientBoosting's early stopping makes
    itself, for a scikit-learn that takes the held-out rows as ``X_val`` (1.7 and later); None
    where early stopping is off or scikit-learn splits itself (1.6).

    Handed over as two views of one matrix (the fit rows first), the rows are not copied: left to
    HGB, its split copies the fold's whole matrix, in float64. The split replays scikit-learn's
    own (its first draw from ``random_state`` seeds ``train_test_split``, stratified for
    classification), so the trees are the ones it grew before (tests/test_models.py compares them
    on the installed version). ``early_stopping="auto"`` is decided on every training row, as HGB
    decides it when it splits itself."""
    if "X_val" not in inspect.signature(HistGradientBoostingRegressor.fit).parameters:
        return None
    early, fraction = params.get("early_stopping", "auto"), params.get("validation_fraction", 0.1)
    if early == "auto":
        early = len(y) > 10_000
    # class_weight: HGB weighs the rows it holds out itself, not rows handed over (and balances
    # on the fit rows alone); such a fit splits itself, as on 1.6.
    if not early or fraction is None or params.get("class_weight") is not None:
        return None
    split_seed = np.random.RandomState(seed).randint(np.iinfo(np.uint32).max, dtype="u8")
    fit, held_out = train_test_split(np.arange(len(y)), test_size=fraction, random_state=split_seed,
                                     stratify=None if task == "regression" else y)
    return fit, held_out


def build_sklearn(name: str, task: str, params: dict, cat_columns: list[int], vocab: dict[int, int], seed: int,
                  poisson: bool = False):
    """An unfitted estimator; ``vocab``: category column → number of codes. ``poisson``: a count
    target, fitted with a Poisson loss and log link (HGB's loss="poisson", PoissonRegressor)."""
    if name == "hgb":  # a column of more levels arrives remapped by frequent_codes
        cats = [c for c in cat_columns if vocab[c] <= HGB_MAX_CATEGORIES]
        mask = cats or None
        cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
        if poisson:
            params = {"loss": "poisson", **params}
        return cls(categorical_features=mask, random_state=seed, **params)
    if task == "regression" and poisson:
        # A small penalty: the inputs are scaled, and PoissonRegressor's default alpha=1 flattens them.
        model = PoissonRegressor(**{"alpha": 1e-4, "max_iter": 1000, **params})
    elif task == "regression":
        model = Ridge(**{"alpha": 1.0, **params})
    else:
        model = LogisticRegression(**{"C": 1.0, "max_iter": 2000, **params})
    if not cat_columns:
        return model
    onehot = ColumnTransformer([("cats", OneHotEncoder(handle_unknown="ignore"), cat_columns)],
                               remainder="passthrough")
    return make_pipeline(onehot, model)


def predict(model, x: np.ndarray, task: str) -> np.ndarray:
    """Regression value, P(positive) or class probabilities (the metrics' internal forms)."""
    if task == "regression":
        return model.predict(x)
    proba = model.predict_proba(x)
    return proba[:, 1] if task == "binary" else proba
