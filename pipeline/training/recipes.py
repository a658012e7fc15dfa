"""Each Keras model family's training recipe, as its authors publish it.

``train.*`` is the recipe of mlp and the image models, and the run-wide settings of every Keras
member (seeds, checkpoints, precision, strategy, history metric). realmlp and tabm train as their
authors do; their section of the model config (model.realmlp, model.tabm) holds what differs, and
``member_config`` returns the config a member of that family trains with.
"""
from __future__ import annotations

from ..metrics import get_metric


def member_config(cfg, name: str, task: str):
    """The config the Keras member ``name`` trains with: ``cfg`` with its family's recipe in
    ``train`` (the same ``cfg`` for families without one)."""
    recipe = {"realmlp": realmlp_recipe, "tabm": tabm_recipe}.get(name)
    if recipe is None:
        return cfg
    train = cfg.train.model_copy(update=recipe(getattr(cfg.model, name), cfg.metric, task))
    return cfg.model_copy(update={"train": train})


def lr_setting(name: str) -> str:
    """Where a Keras member's learning rate is set (for messages that ask to lower it)."""
    from ..models import FAMILY_SECTIONS

    return f"model.{name}.lr" if name in FAMILY_SECTIONS else "train.lr"


def realmlp_recipe(r, metric: str | None, task: str) -> dict:
    """RealMLP-TD: Adam (beta2 0.95) with per-parameter factors and flat-cosine weight decay, the
    coslog4 schedule over every epoch (the best epoch kept; the authors' early stopping where
    model.realmlp.early_stopping is set), label smoothing
    0.1 only for metrics on hard labels, temperature scaling (ts-mix) for log loss. Not theirs: the
    predictions of the model.realmlp.best_epochs best epochs averaged (5; theirs: the best alone)."""
    smoothing = r.label_smoothing
    if smoothing == "auto":
        hard_labels = task != "regression" and not get_metric(metric, task).needs_proba
        smoothing = 0.1 if hard_labels else 0.0
    calibration = r.calibration
    if calibration == "auto":
        calibration = "ts-mix" if task != "regression" and metric == "logloss" else "none"
    return {"epochs": r.epochs, "batch_size": r.batch_size, "optimizer": "realmlp",
            "lr": r.lr if r.lr is not None else (0.2 if task == "regression" else 0.04),
            "weight_decay": r.weight_decay, "beta_2": r.beta_2, "schedule": "coslog4", "warmup_epochs": 0.0,
            "scale_lr": False, "early_stopping": r.early_stopping, "early_stopping_factor": r.early_stopping_factor,
            "best_epochs": r.best_epochs,
            "reduce_lr": None, "label_smoothing": float(smoothing) if task != "regression" else 0.0,
            "calibration": calibration if task != "regression" else "none"}


def tabm_recipe(t, metric: str | None, task: str) -> dict:
    """TabM: AdamW at a constant rate, early stopping on the validation rows."""
    return {"epochs": t.epochs, "batch_size": t.batch_size, "optimizer": "adamw", "lr": t.lr,
            "weight_decay": t.weight_decay, "beta_2": 0.999, "schedule": "constant", "warmup_epochs": 0.0,
            "scale_lr": False, "early_stopping": t.early_stopping, "reduce_lr": None, "label_smoothing": 0.0}
