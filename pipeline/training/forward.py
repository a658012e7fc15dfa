"""A network's outputs on tabular rows already in memory, without ``Model.predict``.

Why: ``Model.predict`` builds a data handler, an iterator and a callback list on every call and
gathers the batches in Python. Measured on two cores with a realmlp network: 19 ms for a 469-row
validation split and 69 ms for 8,631 rows, where one traced forward pass over the same rows took
3 and 24 ms. A run's Keras members predict their validation rows after every epoch, so that
overhead was paid on every epoch of every fold. Here the forward pass is one tf.function per
network, called on chunks of rows; a packed block (its 0/1 columns as bits, preprocessing/arrays.py)
is unpacked chunk by chunk, never copied whole.

Image inputs (decoded batch by batch by the image pipeline) and strategies with several replicas
or a TPU keep ``Model.predict``, which places the batches on the replicas (``can_forward``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def can_forward(net) -> bool:
    """Whether ``net`` may be called directly: one replica, not a TPU."""
    strategy = net.distribute_strategy
    return strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.TPUStrategy)


def forward_function(net):
    """``net`` in inference mode (dropout off) as one traced function of a dict of inputs (its
    inputs by name; other keys are left out, values cast to the input's dtype).

    Traced once, for any number of rows: traced for a given row count, TensorFlow's kernels may
    round differently than in the trace for any count (up to 2.5e-7 apart on one realmlp network's
    outputs), so the same rows predicted after different chunks (a fit's validation rows, then a
    saved run's --predict) could differ in their last bit; with one trace they cannot."""
    from .trainer import Trainer

    inner = net.net if isinstance(net, Trainer) else net  # a fit's Trainer wraps the functional network
    spec = {name: tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name)
            for name, t in zip(inner.input_names, inner.inputs)}

    def forward(x):
        return net(x, training=False)

    traced = tf.function(forward, input_signature=[spec])

    def call(x: dict):
        return traced({k: np.asarray(x[k], dtype=s.dtype.as_numpy_dtype) for k, s in spec.items()})

    call.traced = traced  # its trace count, for the tests
    return call


def predict_rows(forward, features: dict, rows_per_call: int) -> np.ndarray:
    """``forward`` (from ``forward_function``) over every row of ``features`` (name → array or
    PackedColumns), ``rows_per_call`` rows at a time; float32, one row of outputs per row."""
    n = len(next(iter(features.values())))
    parts = [np.asarray(forward({k: v[start:start + rows_per_call] for k, v in features.items()}),  # cast there
                        dtype=np.float32)
             for start in range(0, n, rows_per_call)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
