"""The one tf.data builder for in-memory arrays (training, validation and prediction), with
batch-level Mixup for training.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..preprocessing.arrays import PackedColumns


LEAN = tf.data.Options()
LEAN.experimental_optimization.apply_default_optimizations = False
# No autotuning thread. Keras makes a new training iterator every epoch, and deleting the last one
# waited for that thread's next wake-up, a sleep that doubles while an iterator lives: 0.52-0.64 s
# between every two epochs of 0.6-0.7 s on diamonds' default fold (2026-12-06, one core), 19 s at
# the end of a fold trained from one iterator. What autotuning sets here, the map's parallel calls
# and the prefetch buffer, falls back to TensorFlow's defaults for tf.data.AUTOTUNE without it.
LEAN.autotune.enabled = False


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


def as_tensor(array) -> tf.Tensor:
    """A tensor over the array's own memory when TensorFlow can share it (C-contiguous, 64-byte
    aligned: the preprocessor's outputs are allocated so), else a copy. A fold's inputs are the
    largest arrays of a run; a copy per dataset built from them (train, validation, each seed)
    would double or triple its memory. The tensor keeps the array alive through DLPack."""
    if isinstance(array, tf.Tensor):
        return array
    array = np.asarray(array)
    shareable = (array.flags.c_contiguous and array.ctypes.data % 64 == 0 and array.size > 0
                 and array.dtype in (np.float32, np.int32, np.int64, np.float64, np.uint8))
    if shareable:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)


_BITS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' order: the first flag is the high bit


def _joined(values, flags, count, order):
    """A batch of a PackedColumns block as the float32 block: its flags' bits unpacked, then its
    columns side by side, in order. (The bits' constant is made here, in the dataset's function:
    a tensor made when this module is imported would start TensorFlow's runtime, after which a
    multi-worker strategy can no longer be created.)"""
    bits = tf.bitwise.bitwise_and(flags[..., None], tf.constant(_BITS, tf.uint8)) > 0  # (batch, bytes, 8)
    bits = tf.reshape(bits, tf.concat([tf.shape(flags)[:-1], [-1]], axis=0))[..., :count]
    both = tf.concat([values, tf.cast(bits, values.dtype)], axis=-1)
    return both if order is None else tf.gather(both, order, axis=-1)


def make_dataset(features: dict[str, np.ndarray], y: np.ndarray | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0, mixup_alpha: float = 0.0) -> tf.data.Dataset:
    """(features dict[, y]) → batches: shuffled each epoch (training), [mixed], prefetched.

    Batch-level on purpose: the arrays are in memory, so each batch is one gather of a slice of a
    permutation instead of ``from_tensor_slices → shuffle → batch`` pushing every row through
    tf.data one by one (measured: ~50 ms per epoch of 14k rows, more than a small MLP's compute).
    Unshuffled datasets (validation, prediction) are sliced in order, each batch a view of the
    arrays (not cached: a cache would be a second copy of rows already in memory).

    tf.data's default graph optimizations are off: to rewrite a pipeline, tf.data serializes it,
    and the arrays its functions capture become constants in that graph, a full copy of the fold's
    inputs per dataset (measured: +571 MB on the first batch of an 800,000 x 174 float32 block,
    +7 MB with them off). What they would add here is set by hand: the parallel map, the prefetch.
    """
    # A PackedColumns input is two tensors, (values, flags), put back together batch by batch.
    orders = {k: (v.flag_count, None if v.in_order else tf.constant(v.order)) for k, v in features.items()
              if isinstance(v, PackedColumns)}
    leaves = {k: (v.values, v.flags) if k in orders else v for k, v in features.items()}
    tensors = tf.nest.map_structure(as_tensor, leaves if y is None else (leaves, y))
    n = len(y) if y is not None else len(next(iter(features.values())))
    starts = tf.data.Dataset.range(0, n, batch_size)

    def unpack(batch):
        x = batch if y is None else batch[0]
        x = {k: _joined(*v, *orders[k]) if k in orders else v for k, v in x.items()}
        return x if y is None else (x, batch[1])

    def take(idx):
        return unpack(tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors))

    if shuffle:
        def epoch(s):
            # One permutation per epoch; Dataset.random draws a new s each time Keras re-iterates.
            perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([s, seed]))
            return starts.map(lambda i: take(perm[i:i + batch_size]), num_parallel_calls=tf.data.AUTOTUNE)

        ds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).flat_map(epoch)
        # flat_map hides the length; Keras needs it (steps_per_execution, progress).
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    else:
        ds = starts.map(lambda i: unpack(tf.nest.map_structure(lambda t: t[i:i + batch_size], tensors)),
                        num_parallel_calls=tf.data.AUTOTUNE)
    if mixup_alpha > 0 and y is not None:
        # Batch-level, in the input pipeline: outside the (possibly XLA-compiled) training step,
        # whose compiler has no Gamma sampler. One stateless seed per batch keeps runs reproducible.
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda b, s: mixup_batch(b[0], b[1], mixup_alpha, s),
                                                 num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(LEAN)
