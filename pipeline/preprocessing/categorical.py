"""Categorical column encoders (registry ``ENCODERS``), the rare-level threshold and the
embedding size rule.

Every encoder maps categories unseen in the training fold to a reserved code instead of failing,
and categories seen fewer than ``min_count`` times share one "rare" code (scikit-learn's
``min_frequency`` infrequent category). ``min_count: auto`` sets that threshold per column from
the fold's own rows (``auto_min_count``).

Target-aware encoders (``target``) are fitted with the fold's training labels and cross-fitted
inside the fold (scikit-learn's ``TargetEncoder``): a training row's encoding never saw its own
label, so a column of noise carries no signal into the validation rows.
"""
from __future__ import annotations

import math

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from ..registry import Registry

ENCODERS: Registry = Registry("categorical encoder")
MISSING = "__missing__"  # missing values are a category of their own
MAX_AUTO_MIN_COUNT = 20
TARGET_AWARE = {"target"}  # encoders whose fit needs the fold's labels


def _categories(order):
    return [[str(v) for v in order]] if order else "auto"


def _min_frequency(min_count: int):
    return min_count if min_count > 1 else None


def auto_min_count(counts: np.ndarray) -> int:
    """The rare-level threshold for one column of one fold: the square root of the mean rows per
    level, within [2, 20]. A column of few, well-filled levels keeps them all (a level with 2 rows
    of 3 levels in 600 rows is not noise); one with thousands of levels seen a few times each (ids,
    schools, movies) pools the levels seen too rarely for their own embedding to learn more than
    their rows' labels. Levels seen once never get a row of their own then."""
    counts = np.asarray(counts)
    if len(counts) == 0:
        return 1
    mean_rows = counts.sum() / len(counts)
    return int(min(MAX_AUTO_MIN_COUNT, max(2, round(math.sqrt(mean_rows)))))


@ENCODERS.register("onehot")
def _onehot(cfg, order=None, min_count=1, **_):
    # float32: 0 and 1 are exact, and a float64 block would make the fold's stacked output float64.
    return OneHotEncoder(categories=_categories(order), handle_unknown="infrequent_if_exist",
                         min_frequency=_min_frequency(min_count), sparse_output=False, dtype=np.float32)


@ENCODERS.register("ordinal")
def _ordinal(cfg, order=None, min_count=1, **_):
    # Label encoding into the dense block: codes, unseen → -1, then standardized like numerics.
    return make_pipeline(
        OrdinalEncoder(categories=_categories(order), handle_unknown="use_encoded_value",
                       unknown_value=-1, min_frequency=_min_frequency(min_count)),
        StandardScaler())


@ENCODERS.register("embedding")
def _embedding(cfg, order=None, min_count=1, **_):
    # Codes for a Keras Embedding; unseen → -1, shifted to the reserved index 0 in table.py.
    return OrdinalEncoder(categories=_categories(order), handle_unknown="use_encoded_value",
                          unknown_value=-1, min_frequency=_min_frequency(min_count))


# scikit-learn 1.9 deprecates TargetEncoder's shuffle= for a splitter given as cv=; 1.6 (the
# oldest supported) takes only an int there.
_SPLITTER_CV = tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 9)


def target_encoder(task: str | None, seed: int):
    """The smoothed mean target per category (one column per class for multiclass), cross-fitted
    over 5 shuffled parts of the fold in ``fit_transform``; unseen categories get the fold's mean.
    ``task`` is given so that an integer regression target is not taken for classes."""
    kind = {"regression": "continuous"}.get(task, task or "auto")
    if _SPLITTER_CV:  # scikit-learn >= 1.9 takes the shuffled splitter itself (shuffle= is deprecated)
        from sklearn.model_selection import KFold, StratifiedKFold

        split = KFold if kind in ("continuous", "auto") else StratifiedKFold
        return TargetEncoder(target_type=kind, cv=split(5, shuffle=True, random_state=seed))
    return TargetEncoder(target_type=kind, cv=5, shuffle=True, random_state=seed)




@ENCODERS.register("target")
def _target(cfg, order=None, min_count=1, task=None, seed=0):
    # Standardized like numerics, into the dense block.
    return make_pipeline(target_encoder(task, seed), StandardScaler())


class FrequencyEncoder(TransformerMixin, BaseEstimator):
    """log(1 + the category's row count in the training fold), standardized; unseen → log 1 = 0.
    scikit-learn has no count encoder, hence this one."""

    def fit(self, X, y=None):
        values = np.asarray(X, dtype=object)[:, 0]
        cats, counts = np.unique(values.astype(str), return_counts=True)
        self.counts_ = dict(zip(cats.tolist(), counts.tolist()))
        logs = np.log1p(counts.astype(np.float64))
        freq = np.repeat(logs, counts)  # the rows' values, for the row-weighted mean and spread
        self.mean_, self.scale_ = float(freq.mean()), float(freq.std()) or 1.0
        return self

    def transform(self, X):
        values = np.asarray(X, dtype=object)[:, 0].astype(str)
        counts = np.array([self.counts_.get(v, 0) for v in values], dtype=np.float64)
        return ((np.log1p(counts) - self.mean_) / self.scale_).reshape(-1, 1)

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"{input_features[0] if input_features is not None else 'x0'}_count"], dtype=object)


@ENCODERS.register("frequency")
def _frequency(cfg, order=None, min_count=1, **_):
    return FrequencyEncoder()


# "auto" is resolved per column in TabularPreprocessor.fit: one-hot for few levels, else embedding.
ENCODERS.register("auto")(None)


def embedding_dim(n_categories: int) -> int:
    """fastai's rule of thumb (``emb_sz_rule``): min(600, round(1.6 * n ** 0.56))."""
    return int(min(600, round(1.6 * n_categories ** 0.56)))
