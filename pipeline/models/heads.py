"""Task heads: output width, loss, label encoding and raw output → prediction.

Models output logits (classification) or the transformed target (regression); the activation is
applied outside the model. That keeps the loss numerically stable (from_logits) and lets an INT8
export quantize logits instead of a 256-level probability.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from scipy.special import expit, softmax


def output_size(task: str, n_classes: int) -> int:
    return n_classes if task == "multiclass" else 1


def dense_labels(task: str, train_cfg) -> bool:
    """Multiclass labels go one-hot when they must be soft (label smoothing, Mixup)."""
    return task == "multiclass" and (train_cfg.label_smoothing > 0 or train_cfg.mixup_alpha > 0)


@keras.saving.register_keras_serializable("pipeline")
class PoissonLogLink(keras.losses.Loss):
    """Poisson deviance up to a constant, for a model that outputs z = log(rate): exp(z) - y z.
    (Keras' Poisson loss takes the rate itself; a log output keeps it positive without a clip.)"""

    def call(self, y_true, y_pred):
        y_true = tf.cast(tf.reshape(y_true, tf.shape(y_pred)), y_pred.dtype)
        return tf.reduce_mean(tf.exp(y_pred) - y_true * y_pred, axis=-1)


def make_loss(task: str, train_cfg=None):
    smoothing = train_cfg.label_smoothing if train_cfg is not None else 0.0
    if task == "regression":
        if train_cfg is not None and train_cfg.loss == "poisson":
            return PoissonLogLink()
        return keras.losses.MeanSquaredError()
    if task == "binary":
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=smoothing)
    if train_cfg is not None and dense_labels(task, train_cfg):
        return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def encode_labels(y: np.ndarray, task: str, n_classes: int, train_cfg) -> np.ndarray:
    """Class indices → what the loss takes (float for binary/Mixup, one-hot when dense)."""
    if task == "regression":
        return y.astype(np.float32)
    if dense_labels(task, train_cfg):
        return np.eye(n_classes, dtype=np.float32)[y]
    return y.astype(np.float32 if task == "binary" else np.int32)


def to_prediction(raw: np.ndarray, task: str) -> np.ndarray:
    """Raw model output → regression value (still transformed), P(positive), or class probabilities."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "multiclass":
        return softmax(raw, axis=1)
    raw = raw.reshape(-1)
    return expit(raw) if task == "binary" else raw
