"""Callbacks: the compact epoch logger and the standard Keras ones, built from the train config."""
from __future__ import annotations

import logging
import sys
import time
from collections import deque

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..errors import raise_if_terminated

log = logging.getLogger("pipeline")


class EpochLogger(keras.callbacks.Callback):
    """One line per ``every`` epochs (and the last): never Keras' per-batch progress bar. On a
    terminal, a tqdm bar per model with its ETA takes the place of the in-between lines; logs and
    notebooks get the lines."""

    def __init__(self, prefix: str, epochs: int, every: int = 10):
        super().__init__()
        self.prefix, self.epochs, self.every = prefix, epochs, max(1, every)
        self._bar = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        if sys.stdout.isatty() and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.epochs, desc=self.prefix, unit="epoch", leave=False, dynamic_ncols=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        done = epoch + 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss")})
            if done != self.epochs and not self.model.stop_training:
                return
        elif done % self.every and done != self.epochs and not self.model.stop_training:
            return
        parts = [f"{k} {v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss")]
        lr = self.model.optimizer.learning_rate
        lr = lr(self.model.optimizer.iterations) if callable(lr) else lr
        parts.append(f"lr {float(keras.backend.get_value(lr)):.2e}")
        log.info("%s epoch %d/%d  %s  %.1fs", self.prefix, done, self.epochs, "  ".join(parts),
                 time.perf_counter() - self._start)


class History(keras.callbacks.Callback):
    """Every epoch of a model as a row: loss, val_loss, the competition metric on the validation
    rows, the learning rate and the seconds so far. Saved as the fold's history.csv, drawn as the
    run's learning curves.

    ``validate(net) -> (val_loss, metric)``: one prediction pass over the validation rows gives
    both; it takes the place of Keras' own validation pass (``validates`` tells train_model to
    pass no ``validation_data``), so an epoch predicts its validation rows once, not twice."""

    def __init__(self, validate=None, seed: int = 0, sign: float = 1.0):
        super().__init__()
        self.validate, self.seed, self.sign, self.rows = validate, seed, sign, []
        self._start = None

    @property
    def validates(self) -> bool:
        return self.validate is not None

    def on_train_begin(self, logs=None):
        if self._start is None:  # a staged fit (head, then backbone) continues one history
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        lr = self.model.optimizer.learning_rate
        lr = lr(self.model.optimizer.iterations) if callable(lr) else lr
        value = None
        if self.validate is not None:
            # Written into the epoch's logs, which every later callback reads (early stopping,
            # "best", the progress line, tuning's pruner).
            logs["val_loss"], value = self.validate(self.model)
            logs[SCORE_KEY] = self.sign * value
        row = {"seed": self.seed, "epoch": epoch + 1, "loss": logs.get("loss"), "val_loss": logs.get("val_loss"),
               "val_metric": value,
               "lr": float(keras.backend.get_value(lr)), "seconds": round(time.perf_counter() - self._start, 2)}
        self.rows.append({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()})


class NonFiniteLoss(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite and remembers the epoch."""

    def on_train_begin(self, logs=None):
        self.bad_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        raise_if_terminated()  # a SIGTERM whose exception was swallowed inside TensorFlow
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.bad_epoch = epoch + 1
            self.model.stop_training = True


SCORE_KEY = "val_score"  # the competition metric on the validation rows, signed so that lower is better


class ScheduleLayers(keras.callbacks.Callback):
    """RealMLP's dropout on a flat-cosine schedule: before each epoch, every layer with
    ``set_schedule_factor`` gets flat_cos(progress) (progress over this fit's epochs)."""

    def __init__(self, net, first_epoch: int, epochs: int):
        super().__init__()
        self.layers = [layer for layer in net.layers if hasattr(layer, "set_schedule_factor")]
        self.first, self.epochs = first_epoch, max(1, epochs)

    def on_epoch_begin(self, epoch, logs=None):
        from .schedules import flat_cos

        factor = float(flat_cos((epoch - self.first) / self.epochs))
        for layer in self.layers:
            layer.set_schedule_factor(factor)


def monitor_key(cfg) -> str:
    """What early stopping, ReduceLROnPlateau and the "best" checkpoint watch: the competition's
    metric (``val_score``) when ``train.monitor`` asks for it or is auto and the metric is computed
    every epoch (``train.history_metric``), else the validation loss. The loss and the metric
    disagree where the metric is not the loss (AUC, accuracy, RMSE of a log-trained target). EMA
    validates its averaged weights by loss only, so it watches the loss."""
    if cfg.ema or cfg.monitor == "loss" or not cfg.history_metric:
        return "val_loss"
    return SCORE_KEY


def make_callbacks(cfg, prefix: str, constant_lr: bool, log_every: int, snapshots=None, history=None,
                   tensorboard_dir=None) -> list:
    """The History first (it adds the metric to the epoch's logs), then Snapshots (with EMA it
    rewrites val_loss), then those that read them."""
    monitor = monitor_key(cfg) if history is not None and history.validates else "val_loss"
    if snapshots is not None:
        snapshots.monitor = monitor
    cbs = ([history] if history is not None else []) + ([snapshots] if snapshots is not None else [])
    cbs += [NonFiniteLoss(), EpochLogger(prefix, cfg.epochs, log_every)]
    if tensorboard_dir is not None:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), histogram_freq=0, write_graph=False))
    if cfg.early_stopping is not None and cfg.early_stopping_factor and snapshots is not None:
        cbs.append(StopAfterBest(snapshots, cfg.early_stopping_factor, cfg.early_stopping))
    elif cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.early_stopping))
    if cfg.reduce_lr and constant_lr:  # a schedule owns the LR; ReduceLROnPlateau cannot set it
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=cfg.reduce_lr,
                                                     factor=cfg.reduce_lr_factor, min_lr=cfg.lr * 1e-3))
    return cbs


def ema_variables(optimizer, variables):
    """The optimizer's moving averages of ``variables`` (use_ema). tf_keras keeps them in a private
    list with no public accessor, so this is the one place that reads it."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # unwrap loss scaling
    averages = optimizer._model_variables_moving_average
    return [averages[optimizer._index_dict[optimizer._var_key(v)]] for v in variables]


class Snapshots(keras.callbacks.Callback):
    """Keeps the weights a checkpoint ensemble draws on: ``best`` (lowest monitored value: val_loss
    or the signed metric, see ``monitor_key``) and, with ``best_epochs`` > 1, the runners-up
    ``best2``, ``best3``, ... (the next best epochs, whose predictions the member averages with the
    best's), ``last`` and ``swa`` (the mean of the last ``swa_epochs`` epochs' weights).

    With EMA on, the weights of an epoch are the EMA weights: they are swapped in, validated, and
    their val_loss replaces the logged one, so early stopping and "best" judge what is predicted.
    Early stopping never restores weights itself; choosing weights is this callback's job.
    """

    def __init__(self, net, swa_epochs: int | None = None, ema: bool = False, valid_ds=None, best_epochs: int = 1):
        super().__init__()
        self.net, self.swa_epochs, self.ema, self.valid_ds = net, swa_epochs, ema, valid_ds
        self.best_epochs = best_epochs
        # State lives from here, not on_train_begin: a staged fit (head, then backbone) is one model.
        self.top: list[tuple[float, int, list]] = []  # (value, epoch, weights) of the best epochs, best first
        self.window = deque(maxlen=self.swa_epochs or 1)
        self.monitor = "val_loss"  # or the signed metric (make_callbacks sets it)

    @property
    def best(self):
        """The best epoch's weights (None before a finite monitored value)."""
        return self.top[0][2] if self.top else None

    @property
    def best_loss(self) -> float:
        return self.top[0][0] if self.top else np.inf

    @property
    def best_epoch(self) -> int:
        return self.top[0][1] if self.top else 0

    def _epoch_weights(self, logs):
        if not self.ema:
            return self.net.get_weights(), logs.get(self.monitor, logs.get("val_loss", logs.get("loss")))
        raw = self.net.get_weights()
        for v, avg in zip(self.net.trainable_variables, ema_variables(self.model.optimizer,
                                                                     self.net.trainable_variables)):
            v.assign(avg)
        weights = self.net.get_weights()
        if self.valid_ds is not None:
            logs["val_loss"] = float(self.model.evaluate(self.valid_ds, verbose=0))
        self.net.set_weights(raw)
        return weights, logs.get("val_loss", logs.get("loss"))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        weights, loss = self._epoch_weights(logs)
        if loss is not None and np.isfinite(loss):
            # Ties keep the earlier epoch first, as "best" always has.
            self.top = sorted(self.top + [(float(loss), epoch + 1, weights)], key=lambda t: t[:2])[:self.best_epochs]
        if self.swa_epochs:
            self.window.append(weights)

    def members(self, names) -> dict[str, list]:
        """Weights per requested member, after training (``last`` = the weights now in the net)."""
        out = {}
        for name in names:
            if name == "last":
                out[name] = self.net.get_weights()
            elif name == "best":
                out[name] = self.best if self.best is not None else self.net.get_weights()
                out.update({f"best{i}": w for i, (_, _, w) in enumerate(self.top[1:], start=2)})
            elif name == "swa":
                out[name] = [np.mean(ws, axis=0) for ws in zip(*self.window)]
        return out


class StopAfterBest(keras.callbacks.Callback):
    """Early stopping as RealMLP's authors write it (pytabkit's ``use_early_stopping``): stop once
    the next epoch would pass ``factor`` x the best epoch + ``extra``. Under coslog4 the best epoch
    sits at the end of a cycle, each cycle about twice as long as the one before: a factor of 2
    waits for the next cycle's end, where a fixed patience would stop inside a cycle's high-rate
    part or wait out the whole last one. Keras' EarlyStopping is the factor-1 case. The best epoch
    is the Snapshots callback's, the one whose weights are kept."""

    def __init__(self, snapshots, factor: float, extra: int):
        super().__init__()
        self.snapshots, self.factor, self.extra = snapshots, factor, extra

    def on_epoch_end(self, epoch, logs=None):
        best = self.snapshots.best_epoch
        if best and epoch + 2 > self.factor * best + self.extra:
            self.model.stop_training = True


def reestimate_batchnorm(net, dataset) -> None:
    """SWA's averaged weights need BatchNorm statistics of their own: reset the moving statistics
    and recompute them as a cumulative average over one pass of the training data."""
    layers = [l for l in net.submodules if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return
    saved = [l.momentum for l in layers]
    for l in layers:
        l.moving_mean.assign(tf.zeros_like(l.moving_mean))
        l.moving_variance.assign(tf.ones_like(l.moving_variance))
    for n, batch in enumerate(dataset):
        x = batch[0] if isinstance(batch, tuple) else batch
        for l in layers:
            l.momentum = n / (n + 1.0)  # moving = mean of the batch statistics seen so far
        net(x, training=True)
    for l, m in zip(layers, saved):
        l.momentum = m


class StopAtDeadline(keras.callbacks.Callback):
    """Stop training when the next epoch, and the model's predictions after it, would end after
    ``deadline``; both are taken as long as the slowest epoch so far (a prediction pass over the
    validation and test rows costs about a training epoch). The model keeps its best weights."""

    def __init__(self, deadline: float, clock=time.monotonic, label: str = ""):
        super().__init__()
        self.deadline, self.clock, self.label = deadline, clock, label
        self.slowest = 0.0
        self.train_seconds = 0.0
        self.stopped_at: int | None = None

    def on_train_begin(self, logs=None):
        self._train_start = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.slowest = max(self.slowest, now - self._epoch_start)
        if now + 2 * self.slowest > self.deadline and not self.model.stop_training:
            self.model.stop_training = True
            self.stopped_at = epoch + 1
            log.info("%s: time limit: stopping after epoch %d (its best weights are kept)", self.label, epoch + 1)

    def on_train_end(self, logs=None):
        self.train_seconds += self.clock() - self._train_start
