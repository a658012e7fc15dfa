"""Learning-rate range test (Smith, 2017; fastai's ``lr_find``): one pass over the training data
with the LR rising exponentially from ``min_lr`` to ``max_lr``, the smoothed loss recorded per
step; the curve is saved as a PNG.

The suggestion is checked, not only read off the curve. The curve's candidate is fastai's
"valley": the middle of the longest stretch over which the loss keeps falling (the steepest point,
this module's earlier rule, sits near the blow-up and suggested 10-100x what tuning found). Then a
short run (``CHECK_EPOCHS`` epochs on 80% of the rows, validated on the rest) trains a fresh model
at the valley, a third of it and a tenth of it, and the one with the lowest validation loss is
suggested: a sweep measures one pass at a rising LR, training runs many passes at one.
"""
from __future__ import annotations


import math
from pathlib import Path

import numpy as np
import tf_keras as keras

from ..errors import ConfigError
from ..models import build_model
from ..models.layers import adapt_layers
from ..models.heads import encode_labels, make_loss, output_size
from ..preprocessing import TabularPreprocessor
from .devices import make_strategy, precision_policy
from .fold import fit_target, input_spec, model_inputs, set_seed, transform_target
from .optimizers import make_optimizer
from .recipes import member_config
from .trainer import Trainer


class LRSweep(keras.callbacks.Callback):
    """Sets the LR before each batch and records the exponentially smoothed loss after it."""

    def __init__(self, min_lr: float, max_lr: float, steps: int, smoothing: float = 0.98):
        super().__init__()
        self.min_lr, self.max_lr, self.steps, self.smoothing = min_lr, max_lr, max(2, steps), smoothing
        self.lrs, self.losses = [], []
        self._avg, self._best = 0.0, math.inf

    def lr_at(self, i: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (i / (self.steps - 1))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_at(len(self.lrs)))

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        i = len(self.lrs)
        self._avg = self.smoothing * self._avg + (1 - self.smoothing) * loss
        smoothed = self._avg / (1 - self.smoothing ** (i + 1))
        self.lrs.append(self.lr_at(i))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        if not math.isfinite(loss) or smoothed > 4 * self._best or i + 1 >= self.steps:
            self.model.stop_training = True


CHECK_EPOCHS = 2
CHECK_FACTORS = (1.0, 1 / 3, 1 / 10)  # of the valley LR, each trained briefly by the check


def valley_lr(lrs, losses) -> float:
    """fastai's valley rule: the longest decreasing run of the smoothed loss (a longest decreasing
    subsequence, so noise does not break it), and the LR halfway along it in steps (log-LR)."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n < 3:
        return float(lrs[0])
    length, prev = np.ones(n, dtype=int), np.full(n, -1)
    for i in range(1, n):
        higher = np.flatnonzero(losses[:i] > losses[i])
        if len(higher):
            j = higher[np.argmax(length[higher])]
            length[i], prev[i] = length[j] + 1, j
    end = int(np.argmax(length))
    start = end
    while prev[start] >= 0:
        start = prev[start]
    return float(lrs[start + (end - start) // 2])


def suggest_lr(lrs, losses, skip_start: float = 0.1) -> float:
    """The LR where the smoothed loss falls fastest (per log-LR), between the noisy first steps
    (the first ``skip_start`` of them, as fastai skips) and the minimum before the blow-up."""
    lrs, losses = np.asarray(lrs), np.asarray(losses)
    start = max(1, int(len(lrs) * skip_start)) if len(lrs) > 10 else 0
    end = int(np.argmin(losses[start:])) + start + 1
    if end - start < 3:
        return float(lrs[end - 1] / 10)
    slope = np.gradient(losses[start:end], np.log(lrs[start:end]))
    return float(lrs[start + int(np.argmin(slope))])


def plot_lr_curve(lrs, losses, suggestion: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested lr {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def lr_find(data, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int | None = None, check: bool = True):
    """Run the range test on all training rows with the configured model; returns (lr, sweep):
    the checked suggestion (``check=False``: the valley alone), and the sweep with ``valley`` and
    ``checked`` (LR → validation loss of the short runs).

    It fits preprocessing on all rows: it is a diagnostic that writes no OOF predictions.
    """
    model_name = keras_member_name(data.cfg, data.images is not None)
    cfg = member_config(data.cfg, model_name, data.task)  # realmlp and tabm: their own recipe
    task, tc = data.task, cfg.train
    set_seed(tc.seed)
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=tc.seed, task=task).fit(data.train, data.y)
    y = encode_labels(transform_target(data.y, fit_target(cfg, task, data.y)), task, len(data.classes), tc)
    n_batches = math.ceil(len(y) / tc.batch_size)
    steps = steps or max(100, n_batches)
    spec = input_spec(pre, cfg, data.images is not None)
    # No cache: the sweep may stop part-way through a pass, which a file cache cannot take.
    inputs = model_inputs(data, pre, {"train": ("train", None)}, cfg.model_copy(
        update={"image": cfg.image.model_copy(update={"cache": "none"})}))
    ds = inputs.dataset("train", y, training=True, seed=tc.seed, batch_size=tc.batch_size)
    with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
        net = fresh_network(model_name, spec, cfg, data, inputs.x["train"])
        trainer = Trainer(net)
        # A constant-LR optimizer the sweep can set; steps_per_execution 1 so it sets every batch.
        trainer.compile(optimizer=make_optimizer(tc, min_lr, net=net), loss=make_loss(task, tc), steps_per_execution=1)
        sweep = LRSweep(min_lr, max_lr, steps)
        trainer.fit(ds.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[sweep], verbose=0)
    sweep.valley = valley_lr(sweep.lrs, sweep.losses)
    sweep.checked = check_lrs(data, cfg, pre, spec, y, [sweep.valley * f for f in CHECK_FACTORS],
                              model_name) if check else {}
    lr = min(sweep.checked, key=sweep.checked.get) if sweep.checked else sweep.valley
    return lr, sweep


def keras_member_name(cfg, images: bool) -> str:
    """The run's first Keras member: the model the range test trains."""
    from ..models.sklearn_models import MATRIX_MODELS
    from .members import check_members

    names = check_members(cfg, images)
    keras_names = [n for n in names if n not in MATRIX_MODELS]
    if not keras_names:
        raise ConfigError(f"--lr-find: the run's members {names} have no Keras model; the LR range test trains "
                          f"one. Add a Keras model to model.members (e.g. --set 'model.members=[mlp, hgb]').")
    return keras_names[0]


def fresh_network(model_name: str, spec, cfg, data, features: dict):
    """A new network of ``model_name``, its data-dependent layers fitted on ``features``."""
    net = build_model(model_name, spec, cfg.model, output_size(data.task, len(data.classes)), data.task)
    if data.images is None:
        adapt_layers(net, features, seed=cfg.train.seed)
    return net


def check_lrs(data, cfg, pre, spec, y, lrs: list[float], model_name: str) -> dict[float, float]:
    """Each LR's validation loss after CHECK_EPOCHS epochs of a fresh model on 80% of the rows
    (a fixed split), the rest validating. NaN losses (diverged) never win. ``cfg``: the member's."""
    task, tc = data.task, cfg.train
    rng = np.random.default_rng(tc.seed)
    order = rng.permutation(len(y))
    cut = int(0.8 * len(order))
    fit_rows, valid_rows = np.sort(order[:cut]), np.sort(order[cut:])
    inputs = model_inputs(data, pre, {"fit": ("train", fit_rows), "valid": ("train", valid_rows)}, cfg.model_copy(
        update={"image": cfg.image.model_copy(update={"cache": "none"})}))
    out = {}
    for lr in lrs:
        set_seed(tc.seed)
        with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
            net = fresh_network(model_name, spec, cfg, data, inputs.x["fit"])
            trainer = Trainer(net)
            trainer.compile(optimizer=make_optimizer(tc, lr, net=net), loss=make_loss(task, tc))
            history = trainer.fit(inputs.dataset("fit", y[fit_rows], training=True, seed=tc.seed,
                                                 batch_size=tc.batch_size),
                                  validation_data=inputs.dataset("valid", y[valid_rows]),
                                  epochs=CHECK_EPOCHS, verbose=0)
        loss = float(history.history["val_loss"][-1])
        out[float(lr)] = loss if np.isfinite(loss) else float("inf")
    return out
