"""Train one fold: fit preprocessing on the fold's training rows, train, predict OOF and test, save.

A fold trains ``train.seeds`` models (seed averaging); each contributes the weights named in
``train.checkpoints`` (best, last, swa). Every (seed, checkpoint) pair is a *member*; the fold's
prediction is the mean of its members' predictions, and each member's predictions are kept so the
run can report every member's OOF score beside the ensemble's.

A fold folder holds everything needed to predict again without this run: ``model_<member>.keras``,
``preprocessing.joblib`` (the fitted TabularPreprocessor, the target transform, task and classes),
``predictions.npz`` and ``result.json``. It is written under a temporary name and renamed when
complete, so a killed run never leaves a fold that looks finished.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..data.datasets import make_dataset
from ..errors import ConfigError, TrainingError
from ..metrics import get_metric
from ..models import get_builder
from ..models.heads import encode_labels, make_loss, output_size, to_prediction
from ..preprocessing import TabularPreprocessor, make_target_transformer
from .callbacks import NonFiniteLoss, Snapshots, make_callbacks, reestimate_batchnorm
from .devices import make_strategy, precision_policy
from .optimizers import make_optimizer
from .schedules import make_schedule
from .trainer import Trainer

log = logging.getLogger("pipeline")
RESULT_FILE = "result.json"


@dataclass
class FoldResult:
    name: str
    valid_idx: np.ndarray
    oof: np.ndarray  # the members' mean prediction for valid_idx, in the metric's internal form
    test: np.ndarray
    score: float
    best_epoch: int
    epochs: int
    seconds: float
    member_scores: dict[str, float] = field(default_factory=dict)
    members: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name → (oof, test)

    def summary(self) -> dict:
        keys = ("name", "score", "best_epoch", "epochs", "seconds", "member_scores")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldResult":
        meta = json.loads((fold_dir / RESULT_FILE).read_text())
        arrays = np.load(fold_dir / "predictions.npz")
        members = {m: (arrays[f"oof__{m}"], arrays[f"test__{m}"]) for m in meta["member_scores"]}
        return cls(valid_idx=arrays["valid_idx"], oof=arrays["oof"], test=arrays["test"], members=members, **meta)

    @staticmethod
    def is_complete(fold_dir: Path) -> bool:
        return (fold_dir / RESULT_FILE).is_file()


def set_seed(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_train_config(cfg, task: str) -> None:
    """Checks that need the task or the hardware (the schema checks the rest)."""
    tc = cfg.train
    if tc.label_smoothing and task == "regression":
        raise ConfigError("train.label_smoothing applies to classification; this task is regression. Set it to 0.")
    replicas = make_strategy(tc.strategy).num_replicas_in_sync
    if replicas > 1 and (tc.grad_accum_steps > 1 or tc.sam_rho or tc.lookahead_steps):
        raise ConfigError(f"train.grad_accum_steps, train.sam_rho and train.lookahead_steps run on one replica; "
                          f"the {tc.strategy} strategy has {replicas}. Turn them off or use strategy=default.")


def member_names(train_cfg) -> list[str]:
    ckpts = train_cfg.checkpoints
    if train_cfg.seeds == 1:
        return list(ckpts)
    return [f"seed{s}_{c}" for s in range(train_cfg.seeds) for c in ckpts]


def fit_fold(data, name: str, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path,
             seed: int, label: str | None = None) -> FoldResult:
    """Train on ``train_idx`` rows of ``data.train``; score and predict ``valid_idx`` and test.

    ``label`` prefixes the progress lines (default: ``name``).
    """
    label = label or name
    cfg, task, tc = data.cfg, data.task, data.cfg.train
    start = time.perf_counter()
    set_seed(seed, tc.deterministic)

    train_rows, valid_rows = data.train.iloc[train_idx], data.train.iloc[valid_idx]
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=seed).fit(train_rows)
    x = {"train": pre.transform(train_rows), "valid": pre.transform(valid_rows), "test": pre.transform(data.test)}
    y_train, y_valid = data.y[train_idx], data.y[valid_idx]
    target = None
    if task == "regression":
        target = make_target_transformer(cfg.preprocessing.target_log1p, cfg.preprocessing.target_standardize)
        target.fit(y_train.reshape(-1, 1))
        y_fit = {k: target.transform(v.reshape(-1, 1)).ravel() for k, v in (("train", y_train), ("valid", y_valid))}
    else:
        y_fit = {"train": y_train, "valid": y_valid}
    y_fit = {k: encode_labels(v, task, len(data.classes), tc) for k, v in y_fit.items()}

    def to_pred(raw):
        pred = to_prediction(raw, task)
        return target.inverse_transform(pred.reshape(-1, 1)).ravel() if target is not None else pred

    metric = get_metric(cfg.metric, task)
    members, saved, best_epochs, epochs_run = {}, {}, [], []
    for s in range(tc.seeds):
        member_seed = seed + 1000 * s
        tag = label if tc.seeds == 1 else f"{label} seed {s}"
        weights, net, info = _train_model(data, pre, x, y_fit, member_seed, tag)
        best_epochs.append(info["best_epoch"])
        epochs_run.append(info["epochs"])
        for ckpt in tc.checkpoints:
            member = ckpt if tc.seeds == 1 else f"seed{s}_{ckpt}"
            with precision_policy(tc.precision):
                net.set_weights(weights[ckpt])
                if ckpt == "swa":
                    reestimate_batchnorm(net, make_dataset(x["train"], batch_size=tc.batch_size))
                oof, test = (to_pred(net.predict(make_dataset(x[k], batch_size=tc.predict_batch_size), verbose=0))
                             for k in ("valid", "test"))
            if not (np.isfinite(oof).all() and np.isfinite(test).all()):
                raise TrainingError(f"{tag}: the model predicts NaN/infinite values; no predictions were written. "
                                    f"Lower train.lr (now {tc.lr}) or add train.clip=global_norm.")
            members[member] = (oof, test)
            saved[member] = (net, net.get_weights())  # after SWA's BatchNorm re-estimation

    oof = np.mean([m[0] for m in members.values()], axis=0)
    test = np.mean([m[1] for m in members.values()], axis=0)
    member_scores = {m: metric(y_valid, p[0], task) for m, p in members.items()}
    result = FoldResult(name, np.asarray(valid_idx), oof, test, metric(y_valid, oof, task),
                        int(np.median(best_epochs)), int(max(epochs_run)), round(time.perf_counter() - start, 2),
                        member_scores, members)
    _save(fold_dir, saved, {"preprocessor": pre, "target": target, "task": task, "classes": data.classes,
                           "features": list(data.columns)}, result)
    return result


def _train_model(data, pre, x, y_fit, seed: int, label: str):
    """One model: build under the precision policy and strategy, fit, return its snapshots."""
    cfg, task, tc = data.cfg, data.task, data.cfg.train
    set_seed(seed, tc.deterministic)
    steps = math.ceil(len(y_fit["train"]) / tc.batch_size)
    train_ds = make_dataset(x["train"], y_fit["train"], batch_size=tc.batch_size, shuffle=True, seed=seed,
                            mixup_alpha=tc.mixup_alpha)
    valid_ds = make_dataset(x["valid"], y_fit["valid"], batch_size=tc.predict_batch_size)
    with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
        net = get_builder(cfg.model.name)(pre.input_spec_, cfg.model, output_size(task, len(data.classes)))
        trainer = Trainer(net, grad_accum_steps=tc.grad_accum_steps, sam_rho=tc.sam_rho,
                          lookahead_steps=tc.lookahead_steps, lookahead_alpha=tc.lookahead_alpha)
        # The schedule counts optimizer steps: one per grad_accum_steps batches.
        lr = make_schedule(tc, math.ceil(steps / tc.grad_accum_steps))
        trainer.compile(optimizer=make_optimizer(tc, lr), loss=make_loss(task, tc),
                        steps_per_execution=tc.steps_per_execution, jit_compile=tc.jit_compile)
        trainer.build_optimizer()
    snapshots = Snapshots(net, swa_epochs=tc.swa_epochs, ema=tc.ema, valid_ds=valid_ds)
    callbacks = make_callbacks(tc, label, constant_lr=isinstance(lr, float), log_every=tc.log_every,
                               snapshots=snapshots)
    with precision_policy(tc.precision):
        history = trainer.fit(train_ds, validation_data=valid_ds, epochs=tc.epochs, callbacks=callbacks, verbose=0)
    guard = next(cb for cb in callbacks if isinstance(cb, NonFiniteLoss))
    if guard.bad_epoch is not None:
        raise TrainingError(f"{label}: the loss became NaN/infinite at epoch {guard.bad_epoch}; no predictions "
                            f"were written. Lower train.lr (now {tc.lr}) or add train.clip=global_norm.")
    info = {"best_epoch": snapshots.best_epoch or len(history.history["loss"]),
            "epochs": len(history.history["loss"])}
    return snapshots.members(tc.checkpoints), net, info


def _save(fold_dir: Path, saved: dict, bundle: dict, result: FoldResult) -> None:
    """``saved``: member → (network, its weights)."""
    tmp = fold_dir.with_name(fold_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for member, (net, weights) in saved.items():
        net.set_weights(weights)
        net.save(tmp / f"model_{member}.keras")
    joblib.dump(bundle, tmp / "preprocessing.joblib")
    arrays = {"valid_idx": result.valid_idx, "oof": result.oof, "test": result.test}
    for member, (oof, test) in result.members.items():
        arrays[f"oof__{member}"], arrays[f"test__{member}"] = oof, test
    np.savez(tmp / "predictions.npz", **arrays)
    (tmp / RESULT_FILE).write_text(json.dumps(result.summary(), indent=2))
    shutil.rmtree(fold_dir, ignore_errors=True)
    tmp.rename(fold_dir)  # the fold appears whole or not at all


def load_fold_predictor(fold_dir: Path):
    """A function raw DataFrame → predictions (the mean over the fold's members), from a saved fold."""
    bundle = joblib.load(fold_dir / "preprocessing.joblib")
    models = [keras.models.load_model(p) for p in sorted(fold_dir.glob("model_*.keras"))]

    def predict(df):
        x = make_dataset(bundle["preprocessor"].transform(df), batch_size=4096)
        preds = []
        for model in models:
            pred = to_prediction(model.predict(x, verbose=0), bundle["task"])
            if bundle["target"] is not None:
                pred = bundle["target"].inverse_transform(pred.reshape(-1, 1)).ravel()
            preds.append(pred)
        return np.mean(preds, axis=0)

    return predict
