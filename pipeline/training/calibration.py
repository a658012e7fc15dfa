"""Post-hoc temperature scaling of a classifier's logits, with Laplace smoothing ("ts-mix").

RealMLP's authors' advice for log loss (pytabkit's ``calibration_method="ts-mix"`` with
``val_metric_name="ref-ll-ts"``; Berta, Holzmueller et al., "Rethinking Early Stopping: Refine,
Then Calibrate", 2025): choose the epoch by the log loss the validation rows would have after
temperature scaling (how well the model ranks and separates, not how calibrated it happens to be
at that epoch), then scale the chosen model's logits by the inverse temperature fitted on those
rows and mix the probabilities with the uniform distribution at 1 / (rows + 1).

Written here because the one library version of it, scikit-learn's ``CalibratedClassifierCV(...,
method="temperature")``, calibrates a classifier object, not a network's saved logits (its
temperature model is private); the fit is one convex problem in one variable, which scipy's
bounded scalar minimizer solves as scikit-learn's does.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

def class_logits(raw: np.ndarray, task: str) -> np.ndarray:
    """A classifier's raw output as one logit per class: a binary model's single logit z is the
    pair (0, z), whose softmax is (1 - sigmoid(z), sigmoid(z))."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "binary":
        z = raw.reshape(-1)
        return np.stack([np.zeros_like(z), z], axis=1)
    return raw


def fit_temperature(raw: np.ndarray, y: np.ndarray, task: str) -> dict:
    """The inverse temperature that minimizes the log loss of ``raw`` logits on labels ``y`` (class
    indices), and the share of the uniform distribution mixed in (1 / (rows + 1))."""
    z = class_logits(raw, task)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    rows = np.arange(len(y))

    def loss(log_beta: float) -> float:
        return float(-np.mean(log_softmax(np.exp(log_beta) * z, axis=1)[rows, y]))

    found = minimize_scalar(loss, bounds=(-10.0, 10.0), method="bounded", options={"xatol": 1e-8})
    return {"inverse_temperature": float(np.exp(found.x)), "mix": 1.0 / (len(y) + 1)}


def calibrate(raw: np.ndarray, task: str, temperature: dict) -> np.ndarray:
    """Probabilities in the metrics' internal form (binary: P(positive); multiclass: (n, K)) from
    raw logits scaled by ``temperature`` (fit_temperature's) and mixed with the uniform."""
    z = class_logits(raw, task)
    p = softmax(temperature["inverse_temperature"] * z, axis=1)
    p = (1.0 - temperature["mix"]) * p + temperature["mix"] / z.shape[1]
    return p[:, 1] if task == "binary" else p
