"""Numeric column scalers (registry ``SCALERS``), each a scikit-learn transformer factory.

A factory takes (preprocessing config, number of training rows, seed) and returns an unfitted
transformer for a block of numeric columns. Missing values are imputed before scaling (table.py).
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (FunctionTransformer, MinMaxScaler, QuantileTransformer,
                                   RobustScaler, SplineTransformer, StandardScaler)

from ..registry import Registry

SCALERS: Registry = Registry("numeric preprocessor")


@SCALERS.register("standardize")
def _standardize(cfg, n_rows, seed):
    return StandardScaler()


@SCALERS.register("minmax")
def _minmax(cfg, n_rows, seed):
    return MinMaxScaler()


@SCALERS.register("rankgauss")
def _rankgauss(cfg, n_rows, seed):
    # RankGauss = rank → Gaussian quantiles; QuantileTransformer does exactly that.
    return QuantileTransformer(output_distribution="normal", n_quantiles=max(10, min(1000, n_rows)),
                               subsample=None, random_state=seed)


def smooth_clip(x):
    """RealMLP's soft clipping: near-identity for |x| << 3, bounded by ±3 for outliers."""
    return x / np.sqrt(1.0 + (x / 3.0) ** 2)


@SCALERS.register("robust")
def _robust(cfg, n_rows, seed):
    # Median/IQR scaling then smooth clipping, as RealMLP (Holzmüller et al., 2024) does.
    return make_pipeline(RobustScaler(), FunctionTransformer(smooth_clip, feature_names_out="one-to-one"))


@SCALERS.register("none")
def _none(cfg, n_rows, seed):
    return FunctionTransformer(feature_names_out="one-to-one")


class PiecewiseLinear(TransformerMixin, BaseEstimator):
    """The standardized value plus a piecewise-linear encoding at the training quantiles.

    Each column gets degree-1 B-spline ("hat") features with knots at its training quantiles (PLE,
    Gorishniy et al., 2022): an MLP can then place thresholds as sharply as a tree does. Written
    around SplineTransformer, per column, because SplineTransformer takes one knot count for all
    columns and rejects the repeated quantiles of discrete columns (counts, flags).
    """

    def __init__(self, n_knots: int = 8):
        self.n_knots = n_knots

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.scaler_ = StandardScaler().fit(X)
        self.splines_ = []
        for j in range(X.shape[1]):
            knots = np.unique(np.quantile(X[:, j], np.linspace(0, 1, self.n_knots)))
            self.splines_.append(None if len(knots) < 3 else SplineTransformer(
                knots=knots.reshape(-1, 1), degree=1, extrapolation="constant").fit(X[:, [j]]))
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        parts = [self.scaler_.transform(X)]
        parts += [s.transform(X[:, [j]]) for j, s in enumerate(self.splines_) if s is not None]
        return np.hstack(parts)


@SCALERS.register("ple")
def _ple(cfg, n_rows, seed):
    return PiecewiseLinear(cfg.ple_knots)


# "auto" is resolved per column in TabularPreprocessor.fit (it needs the fold's data): see choose_auto.
SCALERS.register("auto")(None)


def choose_auto(values: np.ndarray, skew_threshold: float) -> str:
    """RankGauss for strongly skewed columns, standardization otherwise."""
    finite = values[np.isfinite(values)]
    if len(finite) < 3 or np.ptp(finite) == 0:
        return "standardize"
    return "rankgauss" if abs(stats.skew(finite)) > skew_threshold else "standardize"
