"""Metric registry: every competition metric with its direction and the predictions it needs.

Predictions are passed in one internal form per task:
- regression: shape (n,), values in the target's own units;
- binary: shape (n,), probability of the positive class; ``y_true`` is 0/1;
- multiclass: shape (n, K), class probabilities; ``y_true`` is the class index 0..K-1.
Each metric turns them into what it scores (labels, rounded values) itself, so callers never do.
The arithmetic is scikit-learn's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from sklearn import metrics as skm

from .errors import ConfigError
from .registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray, str], float]
    direction: Literal["minimize", "maximize"]
    tasks: tuple[str, ...]
    needs_proba: bool  # the submission must carry probabilities, not labels

    def __call__(self, y_true, y_pred, task: str) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred), task))

    @property
    def greater_is_better(self) -> bool:
        return self.direction == "maximize"

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b``."""
        return a > b if self.greater_is_better else a < b


METRICS: Registry[Metric] = Registry("metric")
DEFAULT_METRIC = {"regression": "rmse", "binary": "auc", "multiclass": "logloss"}


def _add(name, direction, tasks, needs_proba=False):
    def wrap(fn):
        METRICS.register(name)(Metric(name, fn, direction, tasks, needs_proba))
        return fn

    return wrap


def to_labels(y_pred: np.ndarray, task: str) -> np.ndarray:
    """Class indices from probabilities (binary threshold 0.5, multiclass argmax)."""
    if task == "binary":
        return (y_pred >= 0.5).astype(int)
    if task == "multiclass":
        return y_pred.argmax(axis=1)
    return y_pred


REG, CLS = ("regression",), ("binary", "multiclass")


@_add("rmse", "minimize", REG)
def _rmse(y, p, task):
    return skm.root_mean_squared_error(y, p)


@_add("mae", "minimize", REG)
def _mae(y, p, task):
    return skm.mean_absolute_error(y, p)


@_add("rmsle", "minimize", REG)
def _rmsle(y, p, task):
    # Predictions below zero have no log; Kaggle's scorer rejects them, so clip as Kagglers do.
    return skm.root_mean_squared_log_error(y, np.clip(p, 0, None))


@_add("r2", "maximize", REG)
def _r2(y, p, task):
    return skm.r2_score(y, p)


@_add("auc", "maximize", CLS, needs_proba=True)
def _auc(y, p, task):
    if task == "multiclass":
        return skm.roc_auc_score(y, p, multi_class="ovr", labels=np.arange(p.shape[1]))
    return skm.roc_auc_score(y, p)


@_add("logloss", "minimize", CLS, needs_proba=True)
def _logloss(y, p, task):
    labels = np.arange(p.shape[1]) if task == "multiclass" else [0, 1]
    return skm.log_loss(y, p, labels=labels)


@_add("accuracy", "maximize", CLS)
def _accuracy(y, p, task):
    return skm.accuracy_score(y, to_labels(p, task))


@_add("f1", "maximize", CLS)
def _f1(y, p, task):
    return skm.f1_score(y, to_labels(p, task), average="binary" if task == "binary" else "macro")


@_add("qwk", "maximize", REG + CLS)
def _qwk(y, p, task):
    if task == "regression":
        # Ordinal targets predicted as numbers: round to the nearest grade seen in y_true.
        lo, hi = np.min(y), np.max(y)
        return skm.cohen_kappa_score(np.rint(y).astype(int),
                                     np.clip(np.rint(p), lo, hi).astype(int), weights="quadratic")
    return skm.cohen_kappa_score(y, to_labels(p, task), weights="quadratic")


def get_metric(name: str, task: str, field: str = "metric") -> Metric:
    metric = METRICS.get(name, field)
    if task not in metric.tasks:
        raise ConfigError(f"{field}: {name!r} does not apply to a {task} task. "
                          f"Valid for {task}: {[m for m in METRICS if task in METRICS.get(m).tasks]}")
    return metric
