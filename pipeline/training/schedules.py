"""Learning-rate schedules by name, each with optional linear warmup.

constant: flat (ReduceLROnPlateau may lower it). cosine: cosine decay to 0. sgdr: cosine with warm
restarts (Loshchilov & Hutter), first period ``sgdr_period`` epochs, each next one ``sgdr_mult``
times longer. coslog4: RealMLP's four cosine cycles on a log time axis, each twice as long as the
one before (Holzmueller et al. 2024). onecycle: fastai's one-cycle, a rise from lr/25 to lr over the warmup part (30% of the
steps unless warmup_epochs is set), then cosine annealing to lr/25/1e4. step: multiply by
``step_factor`` every ``step_every`` epochs.

Warmup rises linearly from lr/25 to the schedule's starting value over ``warmup_epochs``; the
schedule then runs over the remaining steps.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

SCHEDULES = ("constant", "cosine", "sgdr", "onecycle", "step", "coslog4")
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


def coslog(t, cycles: int = 4):
    """RealMLP's coslog schedule at training progress ``t`` in [0, 1]: 0.5 (1 - cos(2 pi log2(1 +
    (2^cycles - 1) t))). It starts and ends each cycle at 0 and peaks at 1 in each."""
    return 0.5 * (1.0 - tf.cos(2.0 * 3.141592653589793 * tf.math.log(1.0 + (2.0 ** cycles - 1.0) * t)
                                / tf.math.log(2.0)))


def flat_cos(t):
    """1 for the first half of training, then a half cosine down to 0 (RealMLP's dropout and
    weight-decay schedule)."""
    t = tf.clip_by_value(tf.cast(t, tf.float32), 0.0, 1.0)
    return tf.where(t < 0.5, 1.0, 0.5 * (1.0 + tf.cos(3.141592653589793 * (2.0 * t - 1.0))))


@keras.saving.register_keras_serializable("pipeline")
class Coslog(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * coslog(step / total)``; 0 after ``total`` steps."""

    def __init__(self, lr: float, total: int, cycles: int = 4):
        self.lr, self.total, self.cycles = float(lr), int(total), int(cycles)

    def __call__(self, step):
        t = tf.minimum(tf.cast(step, tf.float32) / max(1, self.total), 1.0)
        return self.lr * coslog(t, self.cycles)

    def get_config(self):
        return {"lr": self.lr, "total": self.total, "cycles": self.cycles}


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
    elif cfg.schedule == "coslog4":
        after = Coslog(lr, rest, cycles=4)
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

