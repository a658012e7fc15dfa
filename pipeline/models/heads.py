"""Task heads: output width, loss, and raw output → prediction.

Models output logits (classification) or the transformed target (regression); the activation is
applied outside the model. That keeps the loss numerically stable (from_logits) and lets an INT8
export quantize logits instead of a 256-level probability.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras
from scipy.special import expit, softmax


def output_size(task: str, n_classes: int) -> int:
    return n_classes if task == "multiclass" else 1


def make_loss(task: str):
    if task == "regression":
        return keras.losses.MeanSquaredError()
    if task == "binary":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def to_prediction(raw: np.ndarray, task: str) -> np.ndarray:
    """Raw model output → regression value (still transformed), P(positive), or class probabilities."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "multiclass":
        return softmax(raw, axis=1)
    raw = raw.reshape(-1)
    return expit(raw) if task == "binary" else raw
