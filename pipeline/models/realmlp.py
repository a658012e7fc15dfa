"""RealMLP-TD (Holzmueller et al., "Better by Default: Strong Pre-Tuned MLPs and Boosted Trees on
Tabular Data", NeurIPS 2024), with the defaults of its reference code (pytabkit's
``RealMLP_TD_CLASS`` / ``RealMLP_TD_REG``), in tf_keras.

The network, in order:
- robust scaling and smooth clipping of the numeric block: (x - median) / IQR (half the range when
  the IQR is 0; 0 for a constant column), then x / sqrt(1 + (x / 3)^2);
- PBLD embeddings of the continuous columns: per column, cos(2 pi w x + b) on ``plr_hidden``
  frequencies, a linear map to ``plr_dim - 1`` values, and the value itself beside them;
- ``embedding_dim``-wide embeddings of the categoricals above preprocessing.onehot_max_levels
  (the preprocessing one-hot encodes the others, as the authors do up to 9 levels);
- a learnable scale per input feature (its own learning rate: ``scale_lr_factor``);
- ``hidden`` layers in the NTK parametrization (x W / sqrt(fan_in), W ~ N(0, 1) rescaled so that
  every unit's pre-activation has unit spread on the training rows; biases placed at a random
  convex combination of 5 training rows' pre-activations, "he+5"), each followed by a parametric
  activation x + (f(x) - x) a (SELU for classification, Mish for regression) and dropout on a
  flat-cosine schedule; a last NTK layer as the head.

Data-dependent initialization (the scaling statistics, the weight spreads and the biases) runs on
a sample of the fold's training rows before the first step (``adapt_layers``); every statistic is
a weight of the model, so the saved and exported model serves the same preprocessing.

Training (the member's recipe, training/recipes.py): Adam with beta2 = 0.95, the coslog4 learning
rate schedule, per-parameter learning-rate factors, decoupled weight decay 0.02 on a flat-cosine
schedule, label smoothing 0.1 for metrics on hard labels, the best validation epoch kept.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..preprocessing.table import NUMERIC_INPUT
from .inputs import make_inputs
from .layers import SelectColumns


def _mish(x):
    return x * tf.tanh(tf.nn.softplus(x))


def _mish_for_training(x):
    """Mish as a training step differentiates it, in float32 whatever the compute dtype (its exp
    overflows float16 long before tanh saturates)."""
    if x.dtype == tf.float32:
        return _mish_written_out(x)
    return tf.cast(_mish_written_out(tf.cast(x, tf.float32)), x.dtype)


@tf.custom_gradient
def _mish_written_out(x):
    """Mish with one exp and its derivative written out. tanh(log(1 + e)) = n / (n + 2) with
    e = exp(x), n = e (e + 2), and Mish' = t + 4 x e (1 + e) / (n + 2)^2 with t = n / (n + 2).
    TensorFlow's own gradient of x tanh(softplus(x)) chains softplus, tanh and their gradient
    kernels, three transcendental passes forward and more backward over every hidden unit of
    every row: a 3 x 256 RealMLP stack with dropout took 0.53-0.63 s an epoch with it on one
    core against 0.48-0.55 s with this, 1.11-1.14x (bench/speed.py --parts layers, two runs).
    Above x = 20, t is 1 in float32, so the exp is capped there (no inf / inf).

    Training steps only: inference, the saved model's serving and the TFLite export keep
    x tanh(softplus(x)) (the same values to 2e-6), because n reaches 1e17 here, a range INT8
    quantization cannot hold (the division's quantized denominator became zero)."""
    e = tf.exp(tf.minimum(x, 20.0))
    n = e * (e + 2.0)
    t = n / (n + 2.0)

    def grad(dy):
        d = n + 2.0
        return dy * (t + 4.0 * x * e * (1.0 + e) / (d * d))

    return x * t, grad


ACTIVATIONS = {"selu": tf.nn.selu, "mish": _mish, "relu": tf.nn.relu}
# The form a training step differentiates, where a faster one gives the same values.
TRAINING_FORMS = {"mish": _mish_for_training}


@keras.saving.register_keras_serializable("pipeline")
class RobustScaleClip(keras.layers.Layer):
    """(x - median) * factor, then smooth clipping to about +-3; the statistics are fitted by
    ``adapt_to`` on training rows and kept as (non-trainable) weights."""

    def __init__(self, max_abs: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.max_abs = float(max_abs)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.center = self.add_weight("center", (d,), initializer="zeros", trainable=False)
        self.factor = self.add_weight("factor", (d,), initializer="ones", trainable=False)
        super().build(input_shape)

    def adapt_to(self, x: np.ndarray, rng=None) -> None:
        # In float64, 16 columns at a time: each statistic is per column, so the values are those
        # of the whole sample, and the float64 copy and the sorts' copies stay a group's size.
        x, stats = np.asarray(x), []
        for j in range(0, x.shape[1], 16):
            g = np.asarray(x[:, j:j + 16], dtype=np.float64)
            stats.append((np.median(g, axis=0), np.quantile(g, 0.75, axis=0) - np.quantile(g, 0.25, axis=0),
                          0.5 * (g.max(axis=0) - g.min(axis=0))))
        median, spread, half_range = (np.concatenate(s) for s in zip(*stats))
        spread = np.where(spread == 0, half_range, spread)
        factor = np.where(spread == 0, 0.0, 1.0 / np.where(spread == 0, 1.0, spread))
        self.center.assign(median.astype(np.float32))
        self.factor.assign(factor.astype(np.float32))

    def call(self, x):
        z = (x - self.center) * self.factor
        return z / tf.sqrt(1.0 + tf.square(z / self.max_abs))

    def get_config(self):
        return {**super().get_config(), "max_abs": self.max_abs}


@keras.saving.register_keras_serializable("pipeline")
class PBLDEmbedding(keras.layers.Layer):
    """PBLD numeric embeddings ("periodic, bias, linear, densenet"): per column j,
    ``[cos(2 pi w_j x_j + b_j) V_j + c_j, x_j]``, w_j ~ N(0, sigma^2) on ``hidden`` frequencies,
    b_j ~ U(-pi, pi). (batch, n) → (batch, n * (dim - 1) + n)."""

    def __init__(self, hidden: int = 16, dim: int = 4, sigma: float = 0.1, lr_factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.dim, self.sigma, self.lr_factor = int(hidden), int(dim), float(sigma), float(lr_factor)

    def build(self, input_shape):
        n, out = int(input_shape[-1]), self.dim - 1
        bound = 1.0 / math.sqrt(self.hidden)
        uniform = keras.initializers.RandomUniform
        self.w = self.add_weight("frequencies", (n, self.hidden), initializer=keras.initializers.RandomNormal(0.0, self.sigma))
        self.b = self.add_weight("phases", (n, self.hidden), initializer=uniform(-math.pi, math.pi))
        self.kernel = self.add_weight("kernel", (n, self.hidden, out), initializer=uniform(-bound, bound))
        self.bias = self.add_weight("bias", (n, out), initializer=uniform(-bound, bound))
        super().build(input_shape)

    def call(self, x):
        h = tf.cos(2.0 * math.pi * x[:, :, None] * self.w + self.b)  # (batch, n, hidden)
        e = tf.einsum("bnh,nho->bno", h, self.kernel) + self.bias
        return tf.concat([tf.reshape(e, (-1, e.shape[1] * e.shape[2])), x], axis=1)

    def param_factors(self):
        return [(v, self.lr_factor, 1.0) for v in (self.w, self.b, self.kernel, self.bias)]

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "dim": self.dim, "sigma": self.sigma,
                "lr_factor": self.lr_factor}


@keras.saving.register_keras_serializable("pipeline")
class FrontScale(keras.layers.Layer):
    """A learnable scale per input feature, starting at 1 (a soft feature selection)."""

    def __init__(self, lr_factor: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.lr_factor = float(lr_factor)

    def build(self, input_shape):
        self.scale = self.add_weight("scale", (int(input_shape[-1]),), initializer="ones")
        super().build(input_shape)

    def call(self, x):
        return x * self.scale

    def param_factors(self):
        return [(self.scale, self.lr_factor, 1.0)]

    def get_config(self):
        return {**super().get_config(), "lr_factor": self.lr_factor}


@keras.saving.register_keras_serializable("pipeline")
class NTKDense(keras.layers.Layer):
    """x W / sqrt(fan_in) + b with W ~ N(0, 1) (the NTK parametrization: the learning rate acts on
    the function the same way whatever the width). ``adapt_to`` rescales each column of W so that
    its pre-activation has unit spread on training rows, and sets b to minus a random convex
    combination of 5 rows' pre-activations (pytabkit's "std" and "he+5"). Biases learn at
    ``bias_lr_factor`` of the rate and get no weight decay."""

    def __init__(self, units: int, bias_lr_factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.units, self.bias_lr_factor = int(units), float(bias_lr_factor)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.gain = 1.0 / math.sqrt(d)
        self.kernel = self.add_weight("kernel", (d, self.units), initializer=keras.initializers.RandomNormal(0.0, 1.0))
        self.bias = self.add_weight("bias", (self.units,), initializer="zeros")
        super().build(input_shape)

    def adapt_to(self, x: np.ndarray, rng=None) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        w = self.kernel.numpy().astype(np.float64)
        n, block = len(x), 2048
        # One pass over the sample's pre-activations, a block of 2,048 rows at a time, each block
        # computed from x (a LayerInput, layers.py: the rows run through the layers before this
        # one) rather than the whole 50,000 x units float64 matrix held: that matrix and its input
        # were the peak of a 1M-row fold. The mean is that of the whole matrix to the last bit
        # (numpy sums axis 0 row after row, which the running sum repeats); the spread comes from
        # the running sum of squares beside it (float64, values of unit order: no cancellation
        # that float32 weights would see), so the upstream layers run once per adapted layer, not
        # twice: the default network on 30,000 rows initialized in 1.1 s instead of 2.2 s, every
        # weight the same to the last bit as with the two passes (2026-12-06).
        rows = rng.integers(0, n, size=(self.units, 5))
        weights = rng.exponential(1.0, size=(self.units, 5))
        weights /= weights.sum(axis=1, keepdims=True)
        units = np.broadcast_to(np.arange(self.units)[:, None], rows.shape)
        total, squares, picked = np.zeros(self.units), np.zeros(self.units), np.empty(rows.shape)
        for i in range(0, n, block):
            p = (np.asarray(x[i:i + block], dtype=np.float64) @ w) * self.gain
            total = np.add.reduce(np.vstack((total, p)), axis=0)
            squares += np.square(p).sum(axis=0)
            here = (rows >= i) & (rows < i + block)
            picked[here] = p[rows[here] - i, units[here]]
        mean = total / n
        squares = np.maximum(squares - n * np.square(mean), 0.0)
        std = np.sqrt(squares / n)
        std = np.where(std > 0, std, 1.0)
        w = w / std
        bias = -(picked / std[:, None] * weights).sum(axis=1)
        self.kernel.assign(w.astype(np.float32))
        self.bias.assign(bias.astype(np.float32))

    def call(self, x):
        return tf.matmul(x, tf.cast(self.kernel, x.dtype)) * self.gain + tf.cast(self.bias, x.dtype)

    def param_factors(self):
        return [(self.bias, self.bias_lr_factor, 0.0)]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "bias_lr_factor": self.bias_lr_factor}


@keras.saving.register_keras_serializable("pipeline")
class ParametricActivation(keras.layers.Layer):
    """x + (f(x) - x) a, with a learnable a per unit starting at 1 (f itself at the start)."""

    def __init__(self, activation: str = "selu", lr_factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.activation, self.lr_factor = activation, float(lr_factor)

    def build(self, input_shape):
        self.a = self.add_weight("mix", (int(input_shape[-1]),), initializer="ones")
        super().build(input_shape)

    def call(self, x, training=None):
        f = TRAINING_FORMS.get(self.activation) if training else None
        return x + ((f or ACTIVATIONS[self.activation])(x) - x) * self.a

    def param_factors(self):
        return [(self.a, self.lr_factor, 1.0)]

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "lr_factor": self.lr_factor}


@keras.saving.register_keras_serializable("pipeline")
class ScheduledDropout(keras.layers.Layer):
    """Dropout whose rate is a variable: ``rate`` times a schedule set between epochs
    (training/callbacks.ScheduleLayers); inference is the identity."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def build(self, input_shape):
        self.current = self.add_weight("current_rate", (), initializer=keras.initializers.Constant(self.rate),
                                       trainable=False)
        super().build(input_shape)

    def call(self, x, training=None):
        if not training:
            return x
        return tf.nn.dropout(x, rate=tf.cast(self.current, x.dtype))

    def set_schedule_factor(self, factor: float) -> None:
        self.current.assign(self.rate * float(factor))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def activation_name(cfg, task: str) -> str:
    if cfg.activation != "auto":
        return cfg.activation
    return "mish" if task == "regression" else "selu"


def build_realmlp(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """RealMLP-TD over the preprocessed inputs; ``cfg`` is the model.realmlp section."""
    inputs = make_inputs(spec)
    parts = []
    if spec.numeric_dim:
        x = RobustScaleClip(name="robust_scale")(inputs[NUMERIC_INPUT])
        continuous = list(spec.continuous)
        others = [i for i in range(spec.numeric_dim) if i not in set(continuous)]
        if continuous:
            cont = x if len(continuous) == spec.numeric_dim else SelectColumns(continuous, name="continuous")(x)
            parts.append(PBLDEmbedding(cfg.plr_hidden, cfg.plr_dim, cfg.plr_sigma, cfg.plr_lr_factor, name="pbld")(cont))
        if others:
            parts.append(SelectColumns(others, name="indicators")(x))
    for name, vocab, _ in spec.embeddings:
        emb = keras.layers.Embedding(vocab, cfg.embedding_dim, name=f"emb_{name}")(inputs[name])
        parts.append(keras.layers.Flatten(name=f"flat_{name}")(emb))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    x = FrontScale(cfg.scale_lr_factor, name="front_scale")(x)
    act = activation_name(cfg, task)
    for i, width in enumerate(cfg.hidden):
        x = NTKDense(width, cfg.bias_lr_factor, name=f"ntk_dense_{i}")(x)
        x = ParametricActivation(act, cfg.act_lr_factor, name=f"act_{i}")(x)
        if cfg.dropout:
            x = ScheduledDropout(cfg.dropout, name=f"dropout_{i}")(x)
    out = NTKDense(n_outputs, cfg.bias_lr_factor, dtype="float32", name="head")(x)
    return keras.Model(inputs, out, name="realmlp")
