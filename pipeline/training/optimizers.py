"""Optimizer and learning-rate schedule from the train config."""
from __future__ import annotations

import tf_keras as keras


def make_schedule(cfg, steps_per_epoch: int):
    """A float (constant LR, which ReduceLROnPlateau may lower) or a schedule object.

    "cosine": linear warmup from lr/25 to lr over ``warmup_epochs`` (one-cycle's start), then cosine
    decay to 0 over the remaining epochs. "constant" with warmup: the same warmup, then flat.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "constant" and warmup == 0:
        return cfg.lr
    alpha = 1.0 if cfg.schedule == "constant" else 0.0  # alpha=1: no decay after the warmup
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(cfg.lr, total, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        cfg.lr / 25.0, max(1, total - warmup), alpha=alpha, warmup_target=cfg.lr, warmup_steps=warmup)


def make_optimizer(cfg, lr):
    """``lr``: a float or a schedule from make_schedule."""
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)
