"""TabM (Gorishniy et al., "TabM: Advancing Tabular Deep Learning with Parameter-Efficient
Ensembling", ICLR 2025): an MLP whose ``k`` members share their weight matrices, as its authors
train it (the ``tabm`` package's defaults; ``model.tabm``).

``variant: mini`` (the default, the authors' recommendation with numeric embeddings): the members
differ only by a multiplicative adapter r_i on the input (initialized per feature chunk from
N(0, 1) with embeddings, random signs without) and their own linear head; the hidden layers are
one shared Dense over (batch, k, d), i.e. one matmul of the k members' rows. Numeric columns go
through piecewise-linear embeddings (version B: a linear embedding of the value plus a
zero-initialized linear map of its piecewise-linear encoding over quantile bins of the fold's
training rows).

``variant: full``: BatchEnsemble in every hidden layer. Each hidden layer computes, for member i, ``((x_i * r_i) W) * s_i + b_i``: W is shared, the
adapters r_i, s_i and the bias b_i are the member's own. The first layer's r starts at random
signs (the members differ from the first step), the others at ones; every member has its own
linear head. In training the network outputs every member's prediction, (batch, k, outputs), and
the loss is the mean of the members' losses (Trainer.compute_loss), so they learn as k models. At
inference (``training=False``, what is saved and exported) it outputs one prediction: the
members' mean, as logits of the mean probability for classification, so heads.to_prediction and
the TFLite export see the usual (batch, outputs).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..preprocessing.table import NUMERIC_INPUT
from .inputs import make_inputs
from .layers import SelectColumns


def _rsqrt_uniform(d: int):
    return keras.initializers.RandomUniform(-1 / math.sqrt(d), 1 / math.sqrt(d))


@keras.saving.register_keras_serializable("pipeline")
class EnsembleDense(keras.layers.Layer):
    """BatchEnsemble linear layer over (batch, k, d_in) → (batch, k, units); a (batch, d_in) input
    is first shared by the k members."""

    def __init__(self, units: int, k: int, random_signs: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.k, self.random_signs = int(units), int(k), bool(random_signs)

    def build(self, input_shape):
        d = int(input_shape[-1])
        signs = keras.initializers.Constant(1.0)
        if self.random_signs:
            signs = _RandomSigns()
        self.r = self.add_weight("r", (self.k, d), initializer=signs)
        self.kernel = self.add_weight("kernel", (d, self.units), initializer=_rsqrt_uniform(d))
        self.s = self.add_weight("s", (self.k, self.units), initializer="ones")
        self.bias = self.add_weight("bias", (self.k, self.units), initializer=_rsqrt_uniform(d))
        super().build(input_shape)

    def call(self, x):
        if x.shape.rank == 2:
            x = tf.repeat(x[:, None, :], self.k, axis=1)
        h = tf.einsum("bki,io->bko", x * self.r, self.kernel)
        return h * self.s + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "k": self.k, "random_signs": self.random_signs}


@keras.saving.register_keras_serializable("pipeline")
class _RandomSigns(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None, **kwargs):
        return tf.where(tf.random.uniform(shape) < 0.5, -1.0, 1.0)


@keras.saving.register_keras_serializable("pipeline")
class EnsembleHead(keras.layers.Layer):
    """One linear head per member: (batch, k, d) → (batch, k, outputs)."""

    def __init__(self, outputs: int, **kwargs):
        super().__init__(**kwargs)
        self.outputs = int(outputs)

    def build(self, input_shape):
        k, d = int(input_shape[1]), int(input_shape[2])
        self.kernel = self.add_weight("kernel", (k, d, self.outputs), initializer=_rsqrt_uniform(d))
        self.bias = self.add_weight("bias", (k, self.outputs), initializer=_rsqrt_uniform(d))
        super().build(input_shape)

    def call(self, x):
        return tf.einsum("bkd,kdo->bko", x, self.kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "outputs": self.outputs}


@keras.saving.register_keras_serializable("pipeline")
class MemberMean(keras.layers.Layer):
    """Training: every member's output, (batch, k, outputs). Inference: their mean, as one output:
    the mean for regression, logit(mean probability) for binary, log(mean probability) for
    multiclass (whose softmax is the mean probability)."""

    def __init__(self, task: str, **kwargs):
        super().__init__(**kwargs)
        self.task = task

    def call(self, z, training=None):
        if training:
            return z
        if self.task == "regression":
            return tf.reduce_mean(z, axis=1)
        if self.task == "binary":  # log mean sigmoid - log mean (1 - sigmoid); the log k cancels
            return (tf.reduce_logsumexp(tf.math.log_sigmoid(z), axis=1)
                    - tf.reduce_logsumexp(tf.math.log_sigmoid(-z), axis=1))
        k = tf.cast(tf.shape(z)[1], z.dtype)
        return tf.reduce_logsumexp(tf.nn.log_softmax(z, axis=-1), axis=1) - tf.math.log(k)

    def get_config(self):
        return {**super().get_config(), "task": self.task}


@keras.saving.register_keras_serializable("pipeline")
class PiecewiseLinearEmbedding(keras.layers.Layer):
    """Piecewise-linear embeddings, version B (Gorishniy et al. 2022; 2025): per column j,
    ``x_j a_j + c_j + ple(x_j) W_j`` with W_j zero at the start. ple(x) over a column's T bins:
    1 for the bins below x, the fraction of x's own bin, 0 above (the first bin unbounded below,
    the last above); the bin edges are quantiles of training rows (``adapt_to``), kept as weights.
    (batch, n) → (batch, n * dim)."""

    def __init__(self, bins: int = 48, dim: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.bins, self.dim = int(bins), int(dim)

    def build(self, input_shape):
        n, b = int(input_shape[-1]), self.bins
        bound = 1.0 / math.sqrt(self.dim)
        # The encoding's affine map per (column, bin slot): w x + b before clipping (adapt_to).
        self.enc_w = self.add_weight("encoding_scale", (n, b), initializer="zeros", trainable=False)
        self.enc_b = self.add_weight("encoding_shift", (n, b), initializer="zeros", trainable=False)
        self.single = self.add_weight("single_bin", (n,), initializer="zeros", trainable=False)
        # One initializer instance each: an unseeded instance called twice repeats its values.
        self.a = self.add_weight("linear0_kernel", (n, self.dim), initializer=keras.initializers.RandomUniform(-bound, bound))
        self.c = self.add_weight("linear0_bias", (n, self.dim), initializer=keras.initializers.RandomUniform(-bound, bound))
        self.kernel = self.add_weight("kernel", (n, b, self.dim), initializer="zeros")
        super().build(input_shape)

    def adapt_to(self, x: np.ndarray, rng=None) -> None:
        """Bin edges: the unique quantiles 0, 1/T, ..., 1 of each column (the authors' compute_bins)."""
        x = np.asarray(x, dtype=np.float64)
        n, b = x.shape[1], self.bins
        w, c, single = np.zeros((n, b)), np.zeros((n, b)), np.zeros(n)
        for j in range(n):
            edges = np.unique(np.quantile(x[:, j], np.linspace(0.0, 1.0, b + 1)))
            if len(edges) < 2:  # a constant column: one bin of width 1
                edges = np.array([edges[0], edges[0] + 1.0])
            width = np.diff(edges)
            scale, shift = 1.0 / width, -edges[:-1] / width
            t = len(width)
            w[j, :t - 1], c[j, :t - 1] = scale[:-1], shift[:-1]  # leading bins, then padding, then the last
            w[j, -1], c[j, -1] = scale[-1], shift[-1]
            single[j] = float(t == 1)
        self.enc_w.assign(w.astype(np.float32))
        self.enc_b.assign(c.astype(np.float32))
        self.single.assign(single.astype(np.float32))

    def call(self, x):
        v = x[:, :, None] * self.enc_w + self.enc_b  # (batch, n, bins)
        last = v[..., -1:]
        last = tf.where(self.single[None, :, None] > 0, last, tf.maximum(last, 0.0))
        v = tf.concat([tf.minimum(v[..., :1], 1.0), tf.clip_by_value(v[..., 1:-1], 0.0, 1.0), last], axis=-1)
        e = x[:, :, None] * self.a + self.c + tf.einsum("bnt,ntd->bnd", v, self.kernel)
        return tf.reshape(e, (-1, e.shape[1] * self.dim))

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "dim": self.dim}


@keras.saving.register_keras_serializable("pipeline")
class ChunkNormal(keras.initializers.Initializer):
    """(k, d) values from N(0, 1), one value per member and feature chunk (the widths in
    ``chunks``): the members see each feature's embedding scaled as a whole (the authors' init)."""

    def __init__(self, chunks: list[int], seed: int | None = None):
        self.chunks, self.seed = [int(c) for c in chunks], seed

    def __call__(self, shape, dtype=None, **kwargs):
        values = tf.random.normal((shape[0], len(self.chunks)), seed=self.seed)
        return tf.repeat(values, self.chunks, axis=1)

    def get_config(self):
        return {"chunks": self.chunks, "seed": self.seed}


@keras.saving.register_keras_serializable("pipeline")
class MemberAdapter(keras.layers.Layer):
    """TabM-mini's only per-member weights before the heads: (batch, d) → (batch, k, d), member
    i's copy of the input multiplied by r_i."""

    def __init__(self, k: int, chunks: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.k, self.chunks = int(k), [int(c) for c in chunks] if chunks else None

    def build(self, input_shape):
        d = int(input_shape[-1])
        init = ChunkNormal(self.chunks) if self.chunks and sum(self.chunks) == d else _RandomSigns()
        self.r = self.add_weight("r", (self.k, d), initializer=init)
        super().build(input_shape)

    def call(self, x):
        return x[:, None, :] * self.r

    def get_config(self):
        return {**super().get_config(), "k": self.k, "chunks": self.chunks}


def _tabm_features(inputs, spec, cfg):
    """The encoded inputs and each feature's width: PLE per continuous column (or its value), one
    column per indicator or one-hot column, an embedding per embedded categorical."""
    parts, chunks = [], []
    if spec.numeric_dim:
        x = inputs[NUMERIC_INPUT]
        continuous = list(spec.continuous) if cfg.numeric_embedding == "ple" else []
        others = [i for i in range(spec.numeric_dim) if i not in set(continuous)]
        if continuous:
            cont = x if len(continuous) == spec.numeric_dim else SelectColumns(continuous, name="continuous")(x)
            parts.append(PiecewiseLinearEmbedding(cfg.bins, cfg.embedding_dim, name="ple")(cont))
            chunks += [cfg.embedding_dim] * len(continuous)
        if others:
            parts.append(x if len(others) == spec.numeric_dim else SelectColumns(others, name="numeric_rest")(x))
            chunks += [1] * len(others)
    for name, vocab, dim in spec.embeddings:
        emb = keras.layers.Embedding(vocab, dim, name=f"emb_{name}")(inputs[name])
        parts.append(keras.layers.Flatten(name=f"flat_{name}")(emb))
        chunks.append(dim)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    return x, chunks


def build_tabm(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """TabM over the preprocessed inputs; ``cfg`` is the model.tabm section: ``hidden`` layers
    (shared in the mini variant, BatchEnsemble in the full one) of ``k`` members, ReLU and dropout,
    one head per member, the members' mean at inference."""
    inputs = make_inputs(spec)
    x, chunks = _tabm_features(inputs, spec, cfg)
    embedded = cfg.numeric_embedding == "ple" and bool(spec.continuous)
    if cfg.variant == "mini":
        x = MemberAdapter(cfg.k, chunks if embedded else None, name="adapter")(x)
    for i, width in enumerate(cfg.hidden):
        if cfg.variant == "mini":  # one Dense over the last axis: the k members' rows in one matmul
            d = int(x.shape[-1])
            x = keras.layers.Dense(width, kernel_initializer=_rsqrt_uniform(d), bias_initializer=_rsqrt_uniform(d),
                                   name=f"dense_{i}")(x)
        else:
            x = EnsembleDense(width, cfg.k, random_signs=i == 0, name=f"ensemble_dense_{i}")(x)
        x = keras.layers.Activation("relu", name=f"act_{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    z = EnsembleHead(n_outputs, dtype="float32", name="heads")(x)
    return keras.Model(inputs, MemberMean(task, dtype="float32", name="head")(z), name="tabm")
