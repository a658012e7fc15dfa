"""Settings inferred from the data, in one place: what the config leaves open (task, metric, CV
scheme, regression loss, target log1p, image size and channels, the backbone weights' path) is
decided here from the checked training rows, and written into the resolved config that a run
keeps as config.yaml (and fingerprints in run.json). Reading files is read.py's; checking them,
load.py's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config, validate
from ..errors import ConfigError, DataError
from ..metrics import DEFAULT_METRIC, METRICS, get_metric


def is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def infer_task(y: pd.Series) -> tuple[str, str]:
    """The task the target's values suggest, and why."""
    levels = y.nunique()
    if levels <= 2:
        return "binary", f"the target has {levels} values"
    if not is_numeric(y):
        return "multiclass", f"the target is text with {levels} values"
    values = y.to_numpy(dtype=float)
    values = values[np.isfinite(values)]  # an infinite target is refused later, with its row
    if np.all(np.mod(values, 1) == 0) and levels <= 10:
        return "multiclass", f"the target holds {levels} whole numbers (10 or fewer)"
    return "regression", f"the target is numeric with {levels} values"


def task_and_reason(cfg: Config, target: pd.Series) -> tuple[str, str]:
    """The config's task; else the metric decides when it scores one kind of task (rmse, mae:
    regression; auc, logloss: classes); else the target's values."""
    if cfg.task:
        return cfg.task, "task is set in the config"
    guess, why = infer_task(target)
    if cfg.metric is None:
        return guess, why
    tasks = METRICS.get(cfg.metric).tasks
    if guess == "regression" and "regression" not in tasks:
        # A quantity (fractions, or more than 10 whole numbers) under a metric of classes: guessing
        # classes trained a 300-class model on a price. The config must say which it is.
        raise ConfigError(f"{cfg.path or 'config'}: metric {cfg.metric} scores classes, but target "
                          f"{cfg.data.target!r} is continuous ({why}). Set a regression metric (metric: rmse or "
                          f"mae), or task: multiclass if these values are classes.")
    if guess in tasks:
        return guess, f"{why}, and metric {cfg.metric} scores it"
    if "regression" in tasks and is_numeric(target):
        return "regression", f"metric {cfg.metric} scores regression (the values alone suggested {guess})"
    kind = "binary" if target.nunique() <= 2 else "multiclass"
    if kind in tasks:
        return kind, f"metric {cfg.metric} scores classes; the target has {target.nunique()} values"
    return guess, why


def scoring(cfg: Config, task: str) -> tuple[str, str]:
    """The metric (default per task) and the CV scheme ("auto" resolved)."""
    metric = cfg.metric or DEFAULT_METRIC[task]
    get_metric(metric, task)
    scheme = cfg.cv.scheme
    if scheme == "auto":
        scheme = "stratified" if task != "regression" else "kfold"
        if cfg.cv.group is not None:
            scheme = "stratified_group" if task != "regression" else "group"
    if scheme in ("group", "stratified_group") and cfg.cv.group is None:
        raise DataError(f"cv.scheme {scheme} needs cv.group, the column that holds each row's group.")
    return metric, scheme


LOG_SCALE_METRICS = {"rmsle"}  # scored on log1p(target): preprocessing.target_log1p auto turns on


def count_like(y: np.ndarray) -> bool:
    """Counts of events: non-negative whole numbers that reach down to 0 or 1, with a long right
    tail (skewness above 1). A Poisson loss with a log link fits them (predictions stay positive,
    errors scale with size). Whole-dollar prices are not counts: they never come near 0."""
    from scipy.stats import skew

    y = np.asarray(y, dtype=np.float64)
    return bool(len(y) > 2 and (y >= 0).all() and (y % 1 == 0).all() and y.min() <= 1
                and len(np.unique(y)) > 2 and skew(y) > 1)


MAX_AUTO_IMAGE_SIDE = 224  # image.size auto: the images' own size, the longer side capped here


IMAGE_SAMPLE = 32  # training images whose headers decide image.size / image.channels auto


def _image_defaults(cfg: Config, resolved: dict, paths: np.ndarray) -> None:
    """Image competitions: the images' own size and channels when the config gives none, read from
    the headers of the first training images (Pillow reads no pixels for that). (With no model
    named, config_files.check_names has made it a CNN.)"""
    from collections import Counter

    from PIL import Image

    if cfg.image.size is not None and cfg.image.channels is not None:
        return
    sizes, gray = Counter(), 0
    for path in paths[:IMAGE_SAMPLE]:
        try:
            with Image.open(path) as img:
                sizes[(img.height, img.width)] += 1
                gray += img.mode in ("1", "L", "I", "I;16", "F")
        except OSError as exc:
            raise DataError(f"{path}: cannot be read as an image ({exc}). Fix or remove the file.") from None
    if cfg.image.size is None:
        (h, w), _ = sizes.most_common(1)[0]
        scale = min(1.0, MAX_AUTO_IMAGE_SIDE / max(h, w))
        resolved["image"]["size"] = [max(8, round(h * scale)), max(8, round(w * scale))]
    if cfg.image.channels is None:
        resolved["image"]["channels"] = 1 if gray == sum(sizes.values()) else 3


def resolved_config(cfg: Config, task: str, metric: str, scheme: str, columns: dict, y=None,
                     images: dict | None = None) -> Config:
    """The config with everything inferred written in: what the run saves as config.yaml."""
    resolved = cfg.to_dict()
    given = cfg.model.backbone.weights
    if given:  # relative to the config's folder, checked before any training
        weights = Path(given)
        weights = weights if weights.is_absolute() else cfg.root / weights
        if not weights.is_file():
            raise DataError(f"model.backbone.weights {given}: file not found (looked at {weights}). "
                            f"Attach the backbone's weights file and set model.backbone.weights to its path.")
        resolved["model"]["backbone"]["weights"] = str(weights)
    given = cfg.image.pretrain.weights
    if given:
        weights = Path(given) if Path(given).is_absolute() else cfg.root / given
        if not weights.is_file():
            raise DataError(f"image.pretrain.weights {given}: file not found (looked at {weights}). Give the "
                            f"encoder.weights.h5 of an earlier pretraining, or remove the key to pretrain.")
        resolved["image"]["pretrain"]["weights"] = str(weights)
    resolved.update(task=task, metric=metric)
    if images is not None:
        _image_defaults(cfg, resolved, images["train"])
    if resolved["preprocessing"]["target_log1p"] == "auto":  # learn on the scale the metric scores
        resolved["preprocessing"]["target_log1p"] = task == "regression" and metric in LOG_SCALE_METRICS
    if resolved["train"]["loss"] == "auto":
        counts = task == "regression" and not resolved["preprocessing"]["target_log1p"] and count_like(y)
        resolved["train"]["loss"] = "poisson" if counts else "mse"
    if resolved["train"]["loss"] == "poisson" and (task != "regression" or (y < 0).any()):
        raise ConfigError(f"{cfg.path or 'config'}: train.loss=poisson needs a regression target >= 0; "
                          f"this one is {task}{'' if task != 'regression' else f' with minimum {y.min()!r}'}. "
                          f"Use train.loss=mse.")
    resolved["cv"]["scheme"] = scheme
    cols = resolved["features"]["columns"]
    for col, plan in columns.items():
        cols.setdefault(col, {})["type"] = plan["type"]
    rcfg = validate(resolved, str(cfg.path or "config"))
    rcfg._path = cfg.path
    return rcfg

