"""Regression target transforms (log1p and/or standardization), inverted on every prediction."""
from __future__ import annotations

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler


def make_target_transformer(log1p: bool, standardize: bool):
    """An unfitted transformer for a column vector of targets; ``inverse_transform`` undoes it."""
    steps = []
    if log1p:
        steps.append(FunctionTransformer(np.log1p, inverse_func=np.expm1, check_inverse=False))
    if standardize:
        steps.append(StandardScaler())
    if not steps:
        steps.append(FunctionTransformer(check_inverse=False))
    return make_pipeline(*steps)
