"""The one tf.data builder for in-memory tabular arrays: training, validation and prediction."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def make_dataset(features: dict[str, np.ndarray], y: np.ndarray | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0, cache: bool = True) -> tf.data.Dataset:
    """(features dict[, y]) → shuffled (training only), batched, cached and prefetched batches."""
    ds = tf.data.Dataset.from_tensor_slices((features,) if y is None else (features, y))
    if cache:
        ds = ds.cache()
    if shuffle:
        n = len(next(iter(features.values())))
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
