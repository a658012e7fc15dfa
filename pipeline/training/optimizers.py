"""Optimizers by name, with gradient clipping and weight EMA from the train config.

Adam, AdamW, SGD (Nesterov momentum), RMSprop and Lion are tf_keras'; LAMB is written here because
no maintained package ships it for tf_keras (TensorFlow Addons, which had it, is end-of-life), and
so is RealMLP's Adam (``FactorAdam``): tf_keras has no per-parameter learning rates, and Adam's
update does not scale with the gradient, so a factor must multiply the step itself.
Clipping and EMA are tf_keras optimizer options (clipvalue / clipnorm / global_clipnorm, use_ema).
Lookahead wraps any of them inside the training step (trainer.py).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras
from tf_keras.src.optimizers import optimizer as optimizer_base

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lion", "lamb", "realmlp")


class _AdamMoments(optimizer_base.Optimizer):
    """Adam's two moments per variable, bias-corrected (shared by LAMB and FactorAdam).

    What every variable's update in a step shares (the learning rate, the bias corrections, the
    weight-decay schedule) is built once per step and graph, not once per variable: with it built
    per variable, the optimizer was about 1,100 of the 1,600 ops of a RealMLP training step, each
    traced (a fold's first epoch) and executed (every step) again."""

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        # This step's shared values, built at its first variable. Set in __dict__: an attribute
        # set the usual way is tracked (wrapped, saved with the optimizer); this holds tensors.
        self.__dict__["_step_cache"] = {}
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _shared(self, variable, key=(), build=None):
        """The step's values for ``variable``'s dtype and device (and ``key``): built in the graph
        being traced (a step, a cond branch, an XLA update: each has its own) and on the device of
        the first variable that needs them (updates are placed with their variable), then reused
        by the step's other variables there."""
        cache = self.__dict__.setdefault("_step_cache", {})
        slot = (tf.compat.v1.get_default_graph(), variable.device, variable.dtype, key)
        if slot not in cache:
            cache[slot] = build() if build is not None else self._step_values(variable.dtype)
        return cache[slot]

    def _step_values(self, dtype) -> dict:
        step = tf.cast(self.iterations + 1, dtype)
        b1_power, b2_power = tf.pow(tf.cast(self.beta_1, dtype), step), tf.pow(tf.cast(self.beta_2, dtype), step)
        return {"lr": tf.cast(self.learning_rate, dtype), "m_scale": 1 / (1 - b1_power), "v_scale": 1 / (1 - b2_power),
                "b1_power": b1_power, "b2_power": b2_power,
                "epsilon": tf.cast(getattr(self, "epsilon", 0.0), dtype) * tf.sqrt(1 - b2_power)}

    def _update_moments(self, gradient, variable):
        """Updates the variable's moments with ``gradient``; returns them (not bias-corrected)."""
        i = self._index_dict[self._var_key(variable)]
        m, v = self._m[i], self._v[i]
        m.assign_add((gradient - m) * (1 - self.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
        return m, v

    def _moments(self, gradient, variable):
        """Updates the variable's moments with ``gradient``; returns (m_hat, v_hat)."""
        shared = self._shared(variable)
        m, v = self._update_moments(gradient, variable)
        return m * shared["m_scale"], v * shared["v_scale"]


@keras.saving.register_keras_serializable("pipeline")
class Lamb(_AdamMoments):
    """LAMB (You et al., 2020): Adam's update with decoupled weight decay, rescaled per layer by
    the trust ratio ||w|| / ||update|| so very large batches train stably."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.0,
                 name="Lamb", **kwargs):
        super().__init__(name=name, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.lamb_weight_decay = weight_decay  # applied inside the trust ratio, not by the base class

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):  # embeddings: LAMB's norms need the dense gradient
            gradient = tf.convert_to_tensor(gradient)
        lr = self._shared(variable)["lr"]
        m_hat, v_hat = self._moments(gradient, variable)
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon) + self.lamb_weight_decay * variable
        w_norm, u_norm = tf.norm(variable), tf.norm(update)
        trust = tf.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, tf.ones_like(w_norm))
        variable.assign_sub(lr * trust * update)

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate), beta_1=self.beta_1,
                      beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.lamb_weight_decay)
        return config


@keras.saving.register_keras_serializable("pipeline")
class FactorAdam(_AdamMoments):
    """Adam with a learning-rate and a weight-decay factor per variable (``factors``: variable
    name → (lr factor, wd factor); 1 and 1 for the others) and decoupled weight decay that follows
    a flat-cosine schedule over ``total_steps``: before each Adam step, w *= 1 - wd_t lr_t f_lr f_wd
    (pytabkit's order)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.95, epsilon=1e-8, weight_decay=0.0,
                 total_steps: int = 1, factors: dict | None = None, fused: bool = True, name="FactorAdam",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.decay, self.total_steps = float(weight_decay), int(total_steps)
        self.factors = {k: (float(v[0]), float(v[1])) for k, v in (factors or {}).items()}
        self.fused = bool(fused)  # False: the step in plain ops (bench/speed.py compares the two)

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):  # embeddings: a dense step, as the others
            gradient = tf.convert_to_tensor(gradient)
        factors = self.factors.get(_base_name(variable.name), (1.0, 1.0))
        step_lr, decay = self._shared(variable, factors, lambda: self._factor_values(variable, *factors))
        if decay is not None:
            variable.assign_sub(variable * decay)
        if not self.fused or tf.distribute.has_strategy():  # a strategy's variables: the step in plain ops
            m, v = self._update_moments(gradient, variable)
            variable.assign_sub(m * step_lr / (tf.sqrt(v * self._shared(variable)["v_scale"]) + self.epsilon))
            return
        # TensorFlow's fused Adam kernel: the moments and the step in one pass over the variable
        # instead of eight element-wise ops (a RealMLP step on two cores: 8-20% faster). Its update,
        # lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps'), is the one above when
        # eps' = eps sqrt(1 - b2^t).
        shared, i = self._shared(variable), self._index_dict[self._var_key(variable)]
        lr = self._shared(variable, ("lr",) + factors, lambda: shared["lr"] * factors[0])
        tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=self._m[i].handle, v=self._v[i].handle,
                                     beta1_power=shared["b1_power"], beta2_power=shared["b2_power"], lr=lr,
                                     beta1=tf.cast(self.beta_1, variable.dtype),
                                     beta2=tf.cast(self.beta_2, variable.dtype), epsilon=shared["epsilon"],
                                     grad=gradient, use_locking=False, use_nesterov=False)

    def _factor_values(self, variable, lr_factor: float, wd_factor: float):
        """For the variables of one (lr factor, wd factor): the step's bias-corrected learning rate
        and its weight-decay multiplier (None without decay)."""
        from .schedules import flat_cos

        dtype = variable.dtype
        shared = self._shared(variable)
        lr = shared["lr"] * lr_factor
        decay = None
        if self.decay and wd_factor:
            wd = self.decay * wd_factor * tf.cast(flat_cos(tf.cast(self.iterations, tf.float32) / self.total_steps), dtype)
            decay = wd * lr
        return lr * shared["m_scale"], decay

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate), beta_1=self.beta_1,
                      beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.decay,
                      total_steps=self.total_steps, factors={k: list(v) for k, v in self.factors.items()},
                      fused=self.fused)
        return config


def _base_name(name: str) -> str:
    return name.split(":")[0]


def param_factors(net) -> dict[str, tuple[float, float]]:
    """Variable name → (lr factor, wd factor) from the layers that declare them
    (``layer.param_factors()``: [(variable, lr factor, wd factor)])."""
    out = {}
    for layer in net.submodules:
        for var, lr_f, wd_f in getattr(layer, "param_factors", lambda: [])():
            out[_base_name(var.name)] = (lr_f, wd_f)
    return out


def make_optimizer(cfg, lr, net=None, total_steps: int = 1):
    """``lr``: a float or a schedule (schedules.make_schedule). ``net`` and ``total_steps``: for
    realmlp's per-parameter factors and weight-decay schedule."""
    common = {"learning_rate": lr}
    if cfg.clip == "value":
        common["clipvalue"] = cfg.clip_value
    elif cfg.clip == "norm":
        common["clipnorm"] = cfg.clip_value
    elif cfg.clip == "global_norm":
        common["global_clipnorm"] = cfg.clip_value
    if cfg.ema:
        common.update(use_ema=True, ema_momentum=cfg.ema_momentum)
    o = keras.optimizers
    name = cfg.optimizer
    if name == "adam":
        return o.Adam(beta_2=cfg.beta_2, **common)
    if name == "adamw":
        return o.AdamW(weight_decay=cfg.weight_decay, beta_2=cfg.beta_2, **common)
    if name == "realmlp":
        return FactorAdam(beta_2=cfg.beta_2, weight_decay=cfg.weight_decay, total_steps=total_steps,
                          factors=param_factors(net) if net is not None else {}, **common)
    if name == "sgd":
        return o.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if name == "rmsprop":
        return o.RMSprop(momentum=cfg.momentum, **common)
    if name == "lion":
        return o.Lion(**common)
    return Lamb(weight_decay=cfg.weight_decay, **common)
