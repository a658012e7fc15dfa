"""TabM (Gorishniy et al., "TabM: Advancing Tabular Deep Learning with Parameter-Efficient
Ensembling", ICLR 2025): an MLP whose ``k`` members share their weight matrices (BatchEnsemble).

Each hidden layer computes, for member i, ``((x_i * r_i) W) * s_i + b_i``: W is shared, the
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

import tensorflow as tf
import tf_keras as keras

from .inputs import encode_inputs, make_inputs


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


def build_tabm(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """TabM over the encoded inputs: ``cfg.hidden`` BatchEnsemble layers of ``cfg.k``
    members, ReLU and dropout, one head per member, the members' mean at inference."""
    inputs = make_inputs(spec)
    x = encode_inputs(inputs, spec, cfg)
    for i, width in enumerate(cfg.hidden):
        x = EnsembleDense(width, cfg.k, random_signs=i == 0, name=f"ensemble_dense_{i}")(x)
        x = keras.layers.Activation(cfg.activation, name=f"act_{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    z = EnsembleHead(n_outputs, dtype="float32", name="heads")(x)
    return keras.Model(inputs, MemberMean(task, dtype="float32", name="head")(z), name="tabm")
