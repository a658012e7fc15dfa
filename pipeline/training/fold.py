"""Train one fold: fit preprocessing on the fold's training rows, train, predict OOF and test, save.

A fold folder holds everything needed to predict again without this run: ``model.keras``,
``preprocessing.joblib`` (the fitted TabularPreprocessor, the target transform, task and classes),
``predictions.npz`` and ``result.json``. The folder is written under a temporary name and renamed
when complete, so a killed run never leaves a fold that looks finished.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import joblib
import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..data.datasets import make_dataset
from ..errors import TrainingError
from ..metrics import get_metric
from ..models import get_builder
from ..models.heads import make_loss, output_size, to_prediction
from ..preprocessing import TabularPreprocessor, make_target_transformer
from .callbacks import NonFiniteLoss, make_callbacks
from .optimizers import make_optimizer, make_schedule

log = logging.getLogger("pipeline")
RESULT_FILE = "result.json"


@dataclass
class FoldResult:
    name: str
    valid_idx: np.ndarray
    oof: np.ndarray  # predictions for valid_idx, in the metric's internal form
    test: np.ndarray
    score: float
    best_epoch: int
    epochs: int
    seconds: float

    def summary(self) -> dict:
        d = asdict(self)
        for k in ("valid_idx", "oof", "test"):
            d.pop(k)
        return d

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldResult":
        meta = json.loads((fold_dir / RESULT_FILE).read_text())
        arrays = np.load(fold_dir / "predictions.npz")
        return cls(valid_idx=arrays["valid_idx"], oof=arrays["oof"], test=arrays["test"], **meta)

    @staticmethod
    def is_complete(fold_dir: Path) -> bool:
        return (fold_dir / RESULT_FILE).is_file()


def set_seed(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def fit_fold(data, name: str, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path,
             seed: int, label: str | None = None) -> FoldResult:
    """Train on ``train_idx`` rows of ``data.train``; score and predict ``valid_idx`` and test.

    ``label`` prefixes the progress lines (default: ``name``).
    """
    label = label or name
    cfg, task = data.cfg, data.task
    start = time.perf_counter()
    set_seed(seed, cfg.train.deterministic)

    train_rows, valid_rows = data.train.iloc[train_idx], data.train.iloc[valid_idx]
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=seed).fit(train_rows)
    x_train, x_valid, x_test = pre.transform(train_rows), pre.transform(valid_rows), pre.transform(data.test)
    y_train, y_valid = data.y[train_idx], data.y[valid_idx]
    target = None
    if task == "regression":
        target = make_target_transformer(cfg.preprocessing.target_log1p, cfg.preprocessing.target_standardize)
        target.fit(y_train.reshape(-1, 1))
        fit_y = lambda y: target.transform(y.reshape(-1, 1)).ravel().astype(np.float32)  # noqa: E731
    else:
        fit_y = lambda y: y.astype(np.int32)  # noqa: E731

    tc = cfg.train
    model = get_builder(cfg.model.name)(pre.input_spec_, cfg.model, output_size(task, len(data.classes)))
    steps = math.ceil(len(train_idx) / tc.batch_size)
    lr = make_schedule(tc, steps)
    model.compile(optimizer=make_optimizer(tc, lr), loss=make_loss(task),
                  steps_per_execution=tc.steps_per_execution)
    train_ds = make_dataset(x_train, fit_y(y_train), batch_size=tc.batch_size, shuffle=True, seed=seed)
    valid_ds = make_dataset(x_valid, fit_y(y_valid), batch_size=tc.predict_batch_size)
    callbacks = make_callbacks(tc, label, constant_lr=isinstance(lr, float), log_every=tc.log_every)
    history = model.fit(train_ds, validation_data=valid_ds, epochs=tc.epochs, callbacks=callbacks, verbose=0)

    guard = next(cb for cb in callbacks if isinstance(cb, NonFiniteLoss))
    if guard.bad_epoch is not None:
        raise TrainingError(f"{label}: the loss became NaN/infinite at epoch {guard.bad_epoch}; no "
                            f"predictions were written. Lower train.lr (now {tc.lr}) or check the inputs.")

    def predict(x):
        raw = model.predict(make_dataset(x, batch_size=tc.predict_batch_size), verbose=0)
        pred = to_prediction(raw, task)
        if target is not None:
            pred = target.inverse_transform(pred.reshape(-1, 1)).ravel()
        return pred

    oof, test = predict(x_valid), predict(x_test)
    if not (np.isfinite(oof).all() and np.isfinite(test).all()):
        raise TrainingError(f"{label}: the model predicts NaN/infinite values; no predictions were written. "
                            f"Lower train.lr (now {tc.lr}) or check the inputs for extreme values.")
    losses = history.history.get("val_loss", [])
    best_epoch = int(np.argmin(losses)) + 1 if losses else len(history.history["loss"])
    result = FoldResult(name, np.asarray(valid_idx), oof, test,
                        get_metric(cfg.metric, task)(y_valid, oof, task), best_epoch,
                        len(history.history["loss"]), round(time.perf_counter() - start, 2))
    _save(fold_dir, model, {"preprocessor": pre, "target": target, "task": task, "classes": data.classes,
                            "features": list(data.columns)}, result)
    return result


def _save(fold_dir: Path, model, bundle: dict, result: FoldResult) -> None:
    tmp = fold_dir.with_name(fold_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.keras")
    joblib.dump(bundle, tmp / "preprocessing.joblib")
    np.savez(tmp / "predictions.npz", valid_idx=result.valid_idx, oof=result.oof, test=result.test)
    (tmp / RESULT_FILE).write_text(json.dumps(result.summary(), indent=2))
    shutil.rmtree(fold_dir, ignore_errors=True)
    tmp.rename(fold_dir)  # the fold appears whole or not at all


def load_fold_predictor(fold_dir: Path):
    """A function raw DataFrame → predictions, from a saved fold (for notebooks and export)."""
    bundle = joblib.load(fold_dir / "preprocessing.joblib")
    model = keras.models.load_model(fold_dir / "model.keras")

    def predict(df):
        raw = model.predict(make_dataset(bundle["preprocessor"].transform(df), batch_size=4096), verbose=0)
        pred = to_prediction(raw, bundle["task"])
        if bundle["target"] is not None:
            pred = bundle["target"].inverse_transform(pred.reshape(-1, 1)).ravel()
        return pred

    return predict
