"""Train one fold: fit preprocessing on the fold's training rows, fit each member of the run on
the same inputs, keep every member's OOF and test predictions, save.

``fit_fold`` is the recipe; each member is a ``FoldModel`` (members.py): a Keras model (its seeds,
checkpoints, target transform and TTA) or one on a matrix (scikit-learn, LightGBM).
``train_model`` trains one Keras network. The run weighs the members' predictions afterwards
(ensemble.py, cv/loop.py).

What a fold folder holds, and how it is saved, loaded and asked for predictions: artifact.py.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..data.fold_inputs import FoldInputs
from ..data.load import declared_missing
from ..errors import ConfigError, TrainingError
from ..metrics import get_metric
from ..models import build_model
from ..models.layers import adapt_layers
from ..models.heads import make_loss, output_size
from ..models.sklearn_models import MATRIX_MODELS
from ..preprocessing import TabularPreprocessor, make_target_transformer
from .artifact import FoldArtifact, FoldResult
from .callbacks import History, NonFiniteLoss, ScheduleLayers, Snapshots, make_callbacks
from .devices import make_strategy, precision_policy
from .members import Fold, check_members, deadlines, fit_order, make_member
from .optimizers import make_optimizer
from .recipes import lr_setting
from .schedules import make_schedule
from .trainer import Trainer, steps_per_execution

log = logging.getLogger("pipeline")


def set_seed(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_train_config(cfg, task: str) -> None:
    """Checks that need the task or the hardware (the schema checks the rest)."""
    tc = cfg.train
    if tc.label_smoothing and task == "regression":
        raise ConfigError("train.label_smoothing applies to classification; this task is regression. Set it to 0.")
    if tc.pseudo_label and task == "regression":
        raise ConfigError("train.pseudo_label applies to classification (a confidence threshold on the predicted "
                          "class); this task is regression. Remove it.")
    if cfg.model.backbone.weights:  # a weights file that does not fit the backbone fails here, before any output
        from ..models.backbones import make_backbone

        make_backbone(cfg.model.name, (*cfg.image.size, 3), cfg.model.backbone.weights)
    names = check_members(cfg, bool(cfg.image.column))
    if all(n in MATRIX_MODELS for n in names):
        return
    replicas = make_strategy(tc.strategy).num_replicas_in_sync
    if replicas > 1 and (tc.grad_accum_steps > 1 or tc.sam_rho or tc.lookahead_steps):
        raise ConfigError(f"train.grad_accum_steps, train.sam_rho and train.lookahead_steps run on one replica; "
                          f"the {tc.strategy} strategy has {replicas}. Turn them off or use strategy=default.")


def model_inputs(data, pre, rows: dict[str, tuple[str, np.ndarray | None]], cfg=None,
                 cache_dir: Path | None = None, packed: bool = False) -> FoldInputs:
    """The fold prologue: named row sets → model inputs through the fold's fitted preprocessing.

    ``rows``: split name → ("train" | "test", positions, or None for all). Image competitions get
    each split's image files beside its tabular inputs. ``cfg`` defaults to the competition's.
    ``packed``: a tabular fold's 0/1 columns held as bits (preprocessing/arrays.py)."""
    tables = {"train": data.train, "test": data.test}
    packed = packed and data.images is None  # the image pipeline takes plain arrays
    # "train" is the rows the preprocessing was fitted on: their target encodings come cross-fitted.
    x = {k: pre.transform(tables[src], idx, fit_rows=k == "train", packed=packed) for k, (src, idx) in rows.items()}
    images = None
    if data.images is not None:
        images = {k: data.images[src] if idx is None else data.images[src][idx] for k, (src, idx) in rows.items()}
    return FoldInputs(x, cfg or data.cfg, images, cache_dir=cache_dir)


def input_spec(pre, cfg, images: bool):
    """What the model builder takes: the preprocessor's inputs, and the image shape if any."""
    spec = pre.input_spec_
    return dataclasses.replace(spec, image=(*cfg.image.size, cfg.image.channels)) if images else spec


def fit_target(cfg, task: str, y_train: np.ndarray):
    """Regression: the target transform fitted on the fold's training rows; else None."""
    if task != "regression":
        return None
    target = make_target_transformer(cfg.preprocessing.target_log1p, cfg.preprocessing.target_standardize,
                                     log_link=cfg.train.loss == "poisson")
    return target.fit(y_train.reshape(-1, 1))


def target_range(cfg, task: str, y_train: np.ndarray) -> tuple[float, float] | None:
    """Regression with ``preprocessing.target_clip``: the fold's training target range."""
    if task != "regression" or not cfg.preprocessing.target_clip:
        return None
    return float(np.min(y_train)), float(np.max(y_train))


def transform_target(y: np.ndarray, target) -> np.ndarray:
    return target.transform(y.reshape(-1, 1)).ravel() if target is not None else y


def fit_fold(data, name: str, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path,
             seed: int, label: str | None = None, callbacks: list | None = None,
             deadline: float | None = None, save: bool = True) -> FoldResult:
    """Train every member of the run on ``train_idx`` rows of ``data.train``; predict the
    ``valid_idx`` rows and the test rows with each; save the fold (``save=False``: a tuning
    trial, which keeps scores, not models).

    ``label`` prefixes the progress lines (default: ``name``). ``callbacks``: extra Keras callbacks
    for the first Keras member (tuning's pruning). ``deadline`` (``time.monotonic()`` seconds):
    when the fold must be done; the Keras members share the time the tree and linear ones leave and
    stop their epochs in time (time_budget.py).
    """
    cfg, start = data.cfg, time.perf_counter()
    set_seed(seed, cfg.train.deterministic)
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=seed, task=data.task).fit(
        data.train, data.y[train_idx], rows=train_idx)
    rows = {"train": ("train", train_idx), "valid": ("train", valid_idx), "test": ("test", None)}
    inputs = model_inputs(data, pre, rows, cache_dir=fold_dir.with_name(fold_dir.name + ".cache"), packed=True)
    fold = Fold(data, inputs, pre, input_spec(pre, cfg, data.images is not None), train_idx, valid_idx, seed,
                label or name, fold_dir)
    names = check_members(cfg, data.images is not None)
    members, fits = {}, {}
    try:
        first_keras = True
        for member, until in zip(fit_order(names), deadlines(fit_order(names), deadline)):
            model = make_member(member, cfg, data.task, len(data.classes))
            extra = list(callbacks or []) if model.kind == "keras" and first_keras else []
            first_keras = first_keras and model.kind != "keras"
            fits[member] = model.fit(dataclasses.replace(fold, callbacks=extra, deadline=until))
            members[member] = model
    finally:
        inputs.close()
    members = {m: members[m] for m in names}  # the config's order
    result = fold_result(data, name, valid_idx, {m: fits[m] for m in names}, time.perf_counter() - start)
    result.member_info = {m: model.describe() for m, model in members.items()}
    if save:
        bundle = {"preprocessor": pre, "task": data.task, "classes": data.classes, "features": list(data.columns),
                  "members": names, "missing_values": declared_missing(cfg)}
        FoldArtifact.save(fold_dir, members, bundle, result)
    return result


def fold_result(data, name: str, valid_idx: np.ndarray, fits: dict, seconds: float) -> FoldResult:
    """The fold's predictions and scores per member (the run weighs the members afterwards; the
    fold's own score until then is its best member's)."""
    metric, y_valid = get_metric(data.cfg.metric, data.task), data.y[valid_idx]
    scores = {m: metric(y_valid, f.oof, data.task) for m, f in fits.items()}
    details = {f"{m}/{sub}": p for m, f in fits.items() if len(f.details) > 1 for sub, p in f.details.items()}
    keras = [f for f in fits.values() if f.details]
    sign = 1.0 if metric.direction == "maximize" else -1.0
    no_tta = next((f.no_tta for f in fits.values() if f.no_tta is not None), None)
    result = FoldResult(name, np.asarray(valid_idx), max(scores.values(), key=lambda v: sign * v),
                        int(np.median([f.best_epoch for f in keras])) if keras else 0,
                        int(max(f.epochs for f in (keras or list(fits.values())))), round(seconds, 2),
                        scores, {m: (f.oof, f.test) for m, f in fits.items()},
                        {k: metric(y_valid, p[0], data.task) for k, p in details.items()}, details,
                        no_tta, metric(y_valid, no_tta[0], data.task) if no_tta is not None else None,
                        [row for f in fits.values() for row in f.history])
    timers = [t for f in fits.values() for t in f.timers]
    if timers:
        result.timing = {"train_seconds": sum(t.train_seconds for t in timers),
                         "slowest_epoch": max(t.slowest for t in timers),
                         "cut": any(t.stopped_at is not None for t in timers)}
    return result


def _stages(cfg, net, pretrained: bool = False) -> list[tuple[int, int | None]]:
    """(epochs, trainable top backbone layers) per training stage. Backbones with head_epochs, and
    a pretrained encoder (image.pretrain) with its head_epochs: the head alone first (0 layers),
    then ``model.backbone.unfreeze`` layers (None: all)."""
    from ..models.backbones import has_backbone

    if pretrained:
        head = cfg.image.pretrain.head_epochs
        return [(head, 0), (cfg.train.epochs - head, None)] if head else [(cfg.train.epochs, None)]
    if not has_backbone(net):
        return [(cfg.train.epochs, None)]
    head = cfg.model.backbone.head_epochs
    rest = (cfg.train.epochs - head, cfg.model.backbone.unfreeze)
    return [(head, 0), rest] if head else [rest]


def pretrained_weights(cfg, model_name: str) -> str | None:
    """The pretrained encoder ``model_name`` starts from (image.pretrain; the run fills the path)."""
    from ..models import PRETRAINABLE

    pc = cfg.image.pretrain
    return pc.weights if pc.method and model_name in PRETRAINABLE else None


def training_batches(inputs: FoldInputs, y, seed: int, batch_size: int, steps: int):
    """The training dataset and the ``steps_per_epoch`` to fit it with (None: one pass is an epoch;
    ``steps``: the epoch's batches).

    Tabular rows: one iterator for the whole fit. From a finite dataset Keras starts a new one
    every epoch (about 50 ms each on health_insurance's folds, one thread); a repeated one with
    steps_per_epoch is started once, and each repetition draws its epoch's permutation as a new
    iterator does (datasets.py). Keras also started one iterator before the first epoch and
    dropped it, so a fit's epochs had the 2nd, 3rd, ... permutations: the one started here keeps
    them, and every run's results to the bit."""
    ds = inputs.dataset("train", y, training=True, seed=seed, batch_size=batch_size)
    if inputs.images is not None:
        return ds, None
    iter(ds)
    return ds.repeat(), steps


def train_model(data, cfg, model_name: str, spec, inputs: FoldInputs, y_fit, seed: int, label: str,
                extra_callbacks: list, tensorboard_dir: Path | None = None):
    """One Keras network of ``model_name``: build under the precision policy and strategy, fit (in
    stages for backbones), return its snapshots."""
    from ..models.backbones import BACKBONE_LAYER, has_backbone, set_trainable

    task, tc = data.task, cfg.train
    set_seed(seed, tc.deterministic)
    steps = math.ceil(len(y_fit["train"]) / tc.batch_size)
    train_ds, steps_per_epoch = training_batches(inputs, y_fit["train"], seed, tc.batch_size, steps)
    valid_ds = inputs.dataset("valid", y_fit["valid"])
    with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
        net = build_model(model_name, spec, cfg.model, output_size(task, len(data.classes)), task)
        if inputs.images is None:  # data-dependent initialization (RealMLP, TabM's bins)
            adapt_layers(net, inputs.x["train"], seed=seed)
        pretrained = pretrained_weights(cfg, model_name)
        if pretrained:
            from .pretrain import load_encoder

            load_encoder(net, model_name, pretrained)
    snapshots = Snapshots(net, swa_epochs=tc.swa_epochs, ema=tc.ema, valid_ds=valid_ds, best_epochs=tc.best_epochs)
    done = 0
    for stage_epochs, unfreeze in _stages(cfg, net, bool(pretrained)):
        stage_tc = tc.model_copy(update={"epochs": stage_epochs})
        backbone_vars = None
        if pretrained:
            from .pretrain import set_encoder_trainable

            set_encoder_trainable(net, model_name, unfreeze != 0)
            log.info("%s: %d epochs with the pretrained encoder %s", label, stage_epochs,
                     "frozen (the head alone)" if unfreeze == 0 else "trainable")
        elif has_backbone(net):
            n = set_trainable(net, unfreeze, pretrained=bool(cfg.model.backbone.weights))
            log.info("%s: %d epochs with %d backbone layers trainable", label, stage_epochs, n)
            if n and cfg.model.backbone.backbone_lr_mult < 1:
                backbone_vars = net.get_layer(BACKBONE_LAYER).trainable_variables
        with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
            # The schedule counts optimizer steps: one per grad_accum_steps batches.
            lr = make_schedule(stage_tc, math.ceil(steps / tc.grad_accum_steps))
            backbone_opt = None
            if backbone_vars:
                slow_tc = stage_tc.model_copy(update={"lr": tc.lr * cfg.model.backbone.backbone_lr_mult})
                backbone_opt = make_optimizer(slow_tc, make_schedule(slow_tc, math.ceil(steps / tc.grad_accum_steps)))
            trainer = Trainer(net, grad_accum_steps=tc.grad_accum_steps, sam_rho=tc.sam_rho,
                              lookahead_steps=tc.lookahead_steps, lookahead_alpha=tc.lookahead_alpha,
                              backbone_variables=backbone_vars, backbone_optimizer=backbone_opt)
            optimizer = make_optimizer(stage_tc, lr, net=net, total_steps=stage_epochs * steps)
            trainer.compile(optimizer=optimizer, loss=make_loss(task, tc),
                            steps_per_execution=steps_per_execution(tc.steps_per_execution, steps),
                            jit_compile=tc.jit_compile)
            trainer.build_optimizer()
        recorder = next((cb for cb in extra_callbacks if isinstance(cb, History)), None)
        callbacks = make_callbacks(tc, label, constant_lr=isinstance(lr, float), log_every=tc.log_every,
                                   snapshots=snapshots, history=recorder, tensorboard_dir=tensorboard_dir)
        callbacks += [cb for cb in extra_callbacks if cb is not recorder]
        if any(hasattr(layer, "set_schedule_factor") for layer in net.layers):
            callbacks.append(ScheduleLayers(net, done, stage_epochs))
        with precision_policy(tc.precision):
            # The History's own pass over the validation rows gives val_loss when it computes the metric.
            validation = None if recorder is not None and recorder.validates else valid_ds
            history = trainer.fit(train_ds, steps_per_epoch=steps_per_epoch, validation_data=validation,
                                  initial_epoch=done, epochs=done + stage_epochs, callbacks=callbacks, verbose=0)
        guard = next(cb for cb in callbacks if isinstance(cb, NonFiniteLoss))
        if guard.bad_epoch is not None:
            raise TrainingError(f"{label}: the loss became NaN/infinite at epoch {guard.bad_epoch}; no predictions "
                                f"were written. Lower {lr_setting(model_name)} (now {tc.lr}) or add "
                                f"train.clip=global_norm.")
        # Early stopping in the head stage ends that stage only; the unfrozen stage still runs.
        done += len(history.history.get("loss", []))
    info = {"best_epoch": snapshots.best_epoch or done, "epochs": done}
    return snapshots.members(tc.checkpoints), net, info
