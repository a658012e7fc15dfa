"""The one tf.data builder for in-memory arrays (training, validation and prediction), with
batch-level Mixup for training.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def mixup_batch(x, y, alpha: float, seed):
    """Mix each row with a shuffled partner by lambda ~ Beta(alpha, alpha), per row.

    Floats (the numeric block, the labels) are averaged; integer inputs (categories for
    embeddings) cannot be, so each is taken from the partner with probability 1 - lambda, which
    mixes them by lambda in expectation. Labels must be float (one-hot for multiclass). ``seed`` is
    a stateless seed (shape [2]) so the same seed gives the same batch.
    """
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    n = tf.shape(y)[0]
    g1 = tf.random.stateless_gamma([n], s[0], alpha=alpha)  # Beta(a, a) = G1 / (G1 + G2)
    g2 = tf.random.stateless_gamma([n], s[1], alpha=alpha)
    lam = g1 / (g1 + g2)
    perm = tf.argsort(tf.random.stateless_uniform([n], s[2]))
    keep = tf.random.stateless_uniform([n], s[3]) < lam

    def mix(a):
        b = tf.gather(a, perm)
        shape = [-1] + [1] * (len(a.shape) - 1)
        if a.dtype.is_floating:
            l = tf.reshape(tf.cast(lam, a.dtype), shape)
            return l * a + (1 - l) * b
        return tf.where(tf.reshape(keep, shape), a, b)

    return tf.nest.map_structure(mix, x), mix(tf.cast(y, tf.float32))


def make_dataset(features: dict[str, np.ndarray], y: np.ndarray | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0, cache: bool = True,
                 mixup_alpha: float = 0.0) -> tf.data.Dataset:
    """(features dict[, y]) → shuffled (training only), batched, [mixed], cached and prefetched batches."""
    ds = tf.data.Dataset.from_tensor_slices((features,) if y is None else (features, y))
    if cache:
        ds = ds.cache()
    if shuffle:
        n = len(next(iter(features.values())))
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if mixup_alpha > 0 and y is not None:
        # Batch-level, in the input pipeline: outside the (possibly XLA-compiled) training step,
        # whose compiler has no Gamma sampler. One stateless seed per batch keeps runs reproducible.
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda b, s: mixup_batch(b[0], b[1], mixup_alpha, s),
                                                 num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
