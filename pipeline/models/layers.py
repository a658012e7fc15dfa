"""Custom layers shared by the model families."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..memory import release_memory


def adapt_layers(net, features: dict[str, np.ndarray], rows: int = 50_000, seed: int = 0) -> int:
    """Data-dependent initialization: every layer with an ``adapt_to(x)`` method (RealMLP's
    scaling and NTK layers, TabM's bins) is fitted, in the network's order, on what reaches it from
    a sample of the training rows. Returns the number of layers adapted.

    ``x`` is a ``LayerInput``: sliced by rows it computes only those rows; ``np.asarray(x)`` gives
    them all. (RealMLP's first NTK layer takes 840 columns on a 100-column table: the whole sample
    of them, 168 MB, was most of a 1M-row fold's peak above its data.)"""
    adaptive = [layer for layer in net.layers if hasattr(layer, "adapt_to")]
    if not adaptive:
        return 0
    rng = np.random.default_rng(seed)
    n = len(next(iter(features.values())))
    idx = np.sort(rng.choice(n, size=min(n, rows), replace=False))
    sample = {k: v[idx] for k, v in features.items() if k in set(net.input_names)}
    for layer in adaptive:
        layer.adapt_to(LayerInput(keras.Model(net.inputs, layer.input), sample), rng)
    del sample
    release_memory()  # the sample, its blocks and the upstream models' runs: not kept under training
    return len(adaptive)


class LayerInput:
    """What reaches a layer from ``sample`` through the network's layers before it (``model``),
    run eagerly, a batch at a time, only for the rows asked for: ``x[i:j]`` → those rows,
    ``np.asarray(x)`` → every row. Not ``model.predict``: each adapted layer has its own upstream
    model, traced once and run once (RealMLP: 5 traces, about 1 s of a small fold)."""

    def __init__(self, model, sample: dict[str, np.ndarray], batch_size: int = 2048):
        self.model, self.sample, self.batch_size = model, sample, batch_size

    def __len__(self) -> int:
        return len(next(iter(self.sample.values())))

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("LayerInput: slice it by a range of rows (x[i:j]) or take np.asarray(x)")
        start, stop, _ = rows.indices(len(self))
        out = None
        for i in range(start, stop, self.batch_size):
            part = self.model({k: v[i:min(i + self.batch_size, stop)] for k, v in self.sample.items()},
                              training=False).numpy()
            if out is None:  # one array allocated up front: a list of parts joined at the end is two copies
                out = np.empty((stop - start,) + part.shape[1:], part.dtype)
            out[i - start:i - start + len(part)] = part
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@keras.saving.register_keras_serializable("pipeline")
class Recompute(keras.layers.Layer):
    """Runs a sequence of layers under ``tf.recompute_grad`` (gradient checkpointing): their
    activations are not kept for the backward pass but computed again, trading compute for memory.

    Only deterministic layers belong inside (Dense, normalization, activations): dropout inside
    would draw a different mask when recomputed, so builders apply it outside.
    """

    def __init__(self, block: list, **kwargs):
        super().__init__(**kwargs)
        self.block = list(block)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.block:  # create every variable now, never inside the recomputed function
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        super().build(input_shape)

    def call(self, x, training=None):
        def forward(h):
            for layer in self.block:
                h = layer(h, training=training)
            return h

        return tf.recompute_grad(forward)(x)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.block:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "block": [keras.layers.serialize(l) for l in self.block]}

    @classmethod
    def from_config(cls, config):
        block = [keras.layers.deserialize(c) for c in config.pop("block")]
        return cls(block, **config)


@keras.saving.register_keras_serializable("pipeline")
class SelectColumns(keras.layers.Layer):
    """The given columns of a (batch, d) input (a Lambda would not load in safe mode)."""

    def __init__(self, columns: list[int], **kwargs):
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, x):
        return tf.gather(x, self.columns, axis=1)

    def get_config(self):
        return {**super().get_config(), "columns": self.columns}


@keras.saving.register_keras_serializable("pipeline")
class PeriodicEmbedding(keras.layers.Layer):
    """PLR numeric embeddings (Gorishniy et al., "On Embeddings for Numerical Features in Tabular
    Deep Learning", 2022): per feature j, ``v = [sin(2 pi c_j x_j), cos(2 pi c_j x_j)]`` with
    ``frequencies`` trainable c_j drawn from N(0, sigma^2), then a per-feature linear map to
    ``dim`` and ReLU. (batch, features) → (batch, features * dim), flattened."""

    def __init__(self, frequencies: int = 16, dim: int = 16, sigma: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.frequencies, self.dim, self.sigma = int(frequencies), int(dim), float(sigma)

    def build(self, input_shape):
        n = int(input_shape[-1])
        self.c = self.add_weight("frequencies", (n, self.frequencies),
                                 initializer=keras.initializers.RandomNormal(0.0, self.sigma))
        fan_in = 2 * self.frequencies
        bound = 1.0 / fan_in ** 0.5
        self.kernel = self.add_weight("kernel", (n, fan_in, self.dim),
                                      initializer=keras.initializers.RandomUniform(-bound, bound))
        self.bias = self.add_weight("bias", (n, self.dim), initializer=keras.initializers.RandomUniform(-bound, bound))
        super().build(input_shape)

    def call(self, x):
        angle = 2.0 * 3.141592653589793 * x[:, :, None] * self.c  # (batch, n, frequencies)
        v = tf.concat([tf.sin(angle), tf.cos(angle)], axis=-1)
        h = tf.nn.relu(tf.einsum("bnf,nfd->bnd", v, self.kernel) + self.bias)
        return tf.reshape(h, (-1, h.shape[1] * self.dim))

    def get_config(self):
        return {**super().get_config(), "frequencies": self.frequencies, "dim": self.dim, "sigma": self.sigma}


@keras.saving.register_keras_serializable("pipeline")
class PositionEmbedding(keras.layers.Layer):
    """A learned vector per token position, added to (batch, tokens, dim) inputs (a ViT's patch
    tokens). tf_keras has no such layer; an Embedding of tf.range would need a Lambda, which does
    not load in safe mode."""

    def build(self, input_shape):
        self.table = self.add_weight("table", (1, int(input_shape[1]), int(input_shape[2])),
                                     initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        super().build(input_shape)

    def call(self, x):
        return x + tf.cast(self.table, x.dtype)
