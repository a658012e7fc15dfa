"""Learning-rate schedules by name, each with optional linear warmup.

constant: flat (ReduceLROnPlateau may lower it). cosine: cosine decay to 0. sgdr: cosine with warm
restarts (Loshchilov & Hutter), first period ``sgdr_period`` epochs, each next one ``sgdr_mult``
times longer. onecycle: fastai's one-cycle, a rise from lr/25 to lr over the warmup part (30% of the
steps unless warmup_epochs is set), then cosine annealing to lr/25/1e4. step: multiply by
``step_factor`` every ``step_every`` epochs.

Warmup rises linearly from lr/25 to the schedule's starting value over ``warmup_epochs``; the
schedule then runs over the remaining steps.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

SCHEDULES = ("constant", "cosine", "sgdr", "onecycle", "step")
WARMUP_START = 1 / 25  # of the peak learning rate (one-cycle's div_factor)


def effective_lr(cfg) -> float:
    """The configured lr, scaled linearly with the batch size when asked (Goyal et al., 2017)."""
    return cfg.lr * cfg.batch_size / cfg.base_batch_size if cfg.scale_lr else cfg.lr


@keras.saving.register_keras_serializable("pipeline")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from ``start`` to ``after(0)`` over ``steps``, then ``after(step - steps)``."""

    def __init__(self, after, steps: int, start: float):
        self.after, self.steps, self.start = after, int(steps), float(start)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = tf.cast(self.after(0) if callable(self.after) else self.after, tf.float32)
        rising = self.start + (peak - self.start) * step / max(1, self.steps)
        later = self.after(tf.maximum(step - self.steps, 0.0)) if callable(self.after) else peak
        return tf.where(step < self.steps, rising, tf.cast(later, tf.float32))

    def get_config(self):
        after = keras.optimizers.schedules.serialize(self.after) if callable(self.after) else self.after
        return {"after": after, "steps": self.steps, "start": self.start}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["steps"], config["start"])


def make_schedule(cfg, steps_per_epoch: int):
    """A float (constant LR, which ReduceLROnPlateau may lower) or a LearningRateSchedule."""
    lr = effective_lr(cfg)
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle" and warmup == 0:
        warmup = int(0.3 * total)
    rest = max(1, total - warmup)
    s = keras.optimizers.schedules
    if cfg.schedule == "constant":
        after = lr
    elif cfg.schedule == "cosine":
        after = s.CosineDecay(lr, rest)
    elif cfg.schedule == "onecycle":
        after = s.CosineDecay(lr, rest, alpha=WARMUP_START / 1e4)
    elif cfg.schedule == "sgdr":
        after = s.CosineDecayRestarts(lr, max(1, int(cfg.sgdr_period * steps_per_epoch)), t_mul=cfg.sgdr_mult)
    else:  # step
        after = s.ExponentialDecay(lr, max(1, int(cfg.step_every * steps_per_epoch)), cfg.step_factor,
                                   staircase=True)
    if warmup == 0:
        return after
    return Warmup(after, warmup, lr * WARMUP_START)


def lr_at(schedule, steps) -> list[float]:
    """The learning rate at each of ``steps`` (for tests and plots)."""
    if not callable(schedule):
        return [float(schedule)] * len(steps)
    return [float(schedule(s)) for s in steps]

