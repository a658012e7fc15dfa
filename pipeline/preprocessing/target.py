"""Regression target transforms (log1p and/or standardization), inverted on every prediction, and
the log link of a Poisson loss (the model outputs log(rate); the prediction is exp of it)."""
from __future__ import annotations

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler


def make_target_transformer(log1p: bool, standardize: bool, log_link: bool = False):
    """An unfitted transformer for a column vector of targets; ``inverse_transform`` undoes it.
    ``log_link`` (Poisson loss): targets stay as they are, outputs are exponentiated."""
    if log_link:  # divided by its spread so that the first steps' exp(z) - y stay near 1
        return make_pipeline(StandardScaler(with_mean=False),
                             FunctionTransformer(None, inverse_func=np.exp, check_inverse=False))
    steps = []
    if log1p:
        steps.append(FunctionTransformer(np.log1p, inverse_func=np.expm1, check_inverse=False))
    if standardize:
        steps.append(StandardScaler())
    if not steps:
        steps.append(FunctionTransformer(check_inverse=False))
    return make_pipeline(*steps)
