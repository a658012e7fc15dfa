"""Optimizers by name, with gradient clipping and weight EMA from the train config.

Adam, AdamW, SGD (Nesterov momentum), RMSprop and Lion are tf_keras'; LAMB is written here because
no maintained package ships it for tf_keras (TensorFlow Addons, which had it, is end-of-life).
Clipping and EMA are tf_keras optimizer options (clipvalue / clipnorm / global_clipnorm, use_ema).
Lookahead wraps any of them inside the training step (trainer.py).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras
from tf_keras.src.optimizers import optimizer as optimizer_base

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lion", "lamb")


@keras.saving.register_keras_serializable("pipeline")
class Lamb(optimizer_base.Optimizer):
    """LAMB (You et al., 2020): Adam's update with decoupled weight decay, rescaled per layer by
    the trust ratio ||w|| / ||update|| so very large batches train stably."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.0,
                 name="Lamb", **kwargs):
        super().__init__(name=name, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.lamb_weight_decay = weight_decay  # applied inside the trust ratio, not by the base class

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):  # embeddings: LAMB's norms need the dense gradient
            gradient = tf.convert_to_tensor(gradient)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        i = self._index_dict[self._var_key(variable)]
        m, v = self._m[i], self._v[i]
        m.assign(b1 * m + (1 - b1) * gradient)
        v.assign(b2 * v + (1 - b2) * tf.square(gradient))
        m_hat = m / (1 - tf.pow(b1, step))
        v_hat = v / (1 - tf.pow(b2, step))
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon) + self.lamb_weight_decay * variable
        w_norm, u_norm = tf.norm(variable), tf.norm(update)
        trust = tf.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, tf.ones_like(w_norm))
        variable.assign_sub(lr * trust * update)

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate), beta_1=self.beta_1,
                      beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.lamb_weight_decay)
        return config


def make_optimizer(cfg, lr):
    """``lr``: a float or a schedule (schedules.make_schedule)."""
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
        return o.Adam(**common)
    if name == "adamw":
        return o.AdamW(weight_decay=cfg.weight_decay, **common)
    if name == "sgd":
        return o.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if name == "rmsprop":
        return o.RMSprop(momentum=cfg.momentum, **common)
    if name == "lion":
        return o.Lion(**common)
    return Lamb(weight_decay=cfg.weight_decay, **common)
