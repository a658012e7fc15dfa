"""Categorical column encoders (registry ``ENCODERS``) and the embedding size rule.

Every encoder maps categories unseen in the training fold to a reserved code instead of failing,
and categories seen fewer than ``min_count`` times share one "rare" code (scikit-learn's
``min_frequency`` infrequent category).
"""
from __future__ import annotations

from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from ..registry import Registry

ENCODERS: Registry = Registry("categorical encoder")
MISSING = "__missing__"  # missing values are a category of their own


def _categories(order):
    return [[str(v) for v in order]] if order else "auto"


def _min_frequency(min_count: int):
    return min_count if min_count > 1 else None


@ENCODERS.register("onehot")
def _onehot(cfg, order=None):
    return OneHotEncoder(categories=_categories(order), handle_unknown="infrequent_if_exist",
                         min_frequency=_min_frequency(cfg.min_count), sparse_output=False)


@ENCODERS.register("ordinal")
def _ordinal(cfg, order=None):
    # Label encoding into the dense block: codes, unseen → -1, then standardized like numerics.
    return make_pipeline(
        OrdinalEncoder(categories=_categories(order), handle_unknown="use_encoded_value",
                       unknown_value=-1, min_frequency=_min_frequency(cfg.min_count)),
        StandardScaler())


@ENCODERS.register("embedding")
def _embedding(cfg, order=None):
    # Codes for a Keras Embedding; unseen → -1, shifted to the reserved index 0 in table.py.
    return OrdinalEncoder(categories=_categories(order), handle_unknown="use_encoded_value",
                          unknown_value=-1, min_frequency=_min_frequency(cfg.min_count))


# "auto" is resolved per column in TabularPreprocessor.fit: one-hot for few levels, else embedding.
ENCODERS.register("auto")(None)


def embedding_dim(n_categories: int) -> int:
    """fastai's rule of thumb (``emb_sz_rule``): min(600, round(1.6 * n ** 0.56))."""
    return int(min(600, round(1.6 * n_categories ** 0.56)))
