"""Callbacks: the compact epoch logger and the standard Keras ones, built from the train config."""
from __future__ import annotations

import logging
import time

import numpy as np
import tf_keras as keras

log = logging.getLogger("pipeline")


class EpochLogger(keras.callbacks.Callback):
    """One line per ``every`` epochs (and the last): never Keras' per-batch progress bar."""

    def __init__(self, prefix: str, epochs: int, every: int = 10):
        super().__init__()
        self.prefix, self.epochs, self.every = prefix, epochs, max(1, every)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        done = epoch + 1
        if done % self.every and done != self.epochs and not self.model.stop_training:
            return
        parts = [f"{k} {v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss")]
        lr = self.model.optimizer.learning_rate
        lr = lr(self.model.optimizer.iterations) if callable(lr) else lr
        parts.append(f"lr {float(keras.backend.get_value(lr)):.2e}")
        log.info("%s epoch %d/%d  %s  %.1fs", self.prefix, done, self.epochs, "  ".join(parts),
                 time.perf_counter() - self._start)


class NonFiniteLoss(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite and remembers the epoch."""

    def on_train_begin(self, logs=None):
        self.bad_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.bad_epoch = epoch + 1
            self.model.stop_training = True


def make_callbacks(cfg, prefix: str, constant_lr: bool, log_every: int) -> list:
    cbs = [EpochLogger(prefix, cfg.epochs, log_every), NonFiniteLoss()]
    if cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping,
                                                 restore_best_weights=True))
    if cfg.reduce_lr and constant_lr:  # a schedule owns the LR; ReduceLROnPlateau cannot set it
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=cfg.reduce_lr,
                                                     factor=cfg.reduce_lr_factor, min_lr=cfg.lr * 1e-3))
    return cbs
