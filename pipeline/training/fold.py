"""Train one fold: fit preprocessing on the fold's training rows, train, predict OOF and test, save.

Image competitions predict every TTA view (``image.tta.views``) and average the probabilities; the
identity view's predictions are kept beside them so the run reports what TTA bought.

A fold trains ``train.seeds`` models (seed averaging); each contributes the weights named in
``train.checkpoints`` (best, last, swa). Every (seed, checkpoint) pair is a *member*; the fold's
prediction is the mean of its members' predictions, and each member's predictions are kept so the
run can report every member's OOF score beside the ensemble's.

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
from ..errors import ConfigError, DataError, TrainingError
from ..metrics import get_metric
from ..models import get_builder
from ..models.heads import encode_labels, make_loss, output_size
from ..models.sklearn_models import SKLEARN_MODELS, build_sklearn, to_matrix
from ..models.sklearn_models import predict as sklearn_predict
from ..preprocessing import TabularPreprocessor, make_target_transformer
from .artifact import FoldArtifact, FoldResult, clip_target, invert_target, to_output
from .callbacks import History, NonFiniteLoss, Snapshots, StopAtDeadline, make_callbacks, reestimate_batchnorm
from .devices import make_strategy, precision_policy
from .optimizers import make_optimizer
from .schedules import make_schedule
from .trainer import Trainer

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
    if cfg.model.weights:  # a weights file that does not fit the backbone fails here, before any output
        from ..models.backbones import make_backbone

        make_backbone(cfg.model.name, (*cfg.image.size, 3), cfg.model.weights)
    if cfg.model.name in SKLEARN_MODELS:
        try:
            build_sklearn(cfg.model.name, task, dict(cfg.model.params), [], {}, 0).get_params()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.params {dict(cfg.model.params)} do not fit model.name {cfg.model.name}: "
                              f"{exc}") from None
        return
    replicas = make_strategy(tc.strategy).num_replicas_in_sync
    if replicas > 1 and (tc.grad_accum_steps > 1 or tc.sam_rho or tc.lookahead_steps):
        raise ConfigError(f"train.grad_accum_steps, train.sam_rho and train.lookahead_steps run on one replica; "
                          f"the {tc.strategy} strategy has {replicas}. Turn them off or use strategy=default.")


def model_inputs(data, pre, rows: dict[str, tuple[str, np.ndarray | None]], cfg=None,
                 cache_dir: Path | None = None) -> FoldInputs:
    """The fold prologue: named row sets → model inputs through the fold's fitted preprocessing.

    ``rows``: split name → ("train" | "test", positions, or None for all). Image competitions get
    each split's image files beside its tabular inputs. ``cfg`` defaults to the competition's."""
    tables = {"train": data.train, "test": data.test}
    # "train" is the rows the preprocessing was fitted on: their target encodings come cross-fitted.
    x = {k: pre.transform(tables[src], idx, fit_rows=k == "train") for k, (src, idx) in rows.items()}
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


def member_names(train_cfg) -> list[str]:
    ckpts = train_cfg.checkpoints
    if train_cfg.seeds == 1:
        return list(ckpts)
    return [f"seed{s}_{c}" for s in range(train_cfg.seeds) for c in ckpts]


def fit_fold(data, name: str, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path,
             seed: int, label: str | None = None, callbacks: list | None = None,
             deadline: float | None = None) -> FoldResult:
    """Train on ``train_idx`` rows of ``data.train``; score and predict ``valid_idx`` and test.

    ``label`` prefixes the progress lines (default: ``name``). ``callbacks``: extra Keras callbacks
    for every model of the fold (tuning's pruning). ``deadline`` (``time.monotonic()`` seconds):
    when the fold must be done; each seed's model gets an equal share and stops its epochs in time
    (time_budget.py).
    """
    label = label or name
    cfg, task, tc = data.cfg, data.task, data.cfg.train
    start = time.perf_counter()
    set_seed(seed, tc.deterministic)

    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=seed, task=task).fit(
        data.train.iloc[train_idx], data.y[train_idx])
    rows = {"train": ("train", train_idx), "valid": ("train", valid_idx), "test": ("test", None)}
    inputs = model_inputs(data, pre, rows, cache_dir=fold_dir.with_name(fold_dir.name + ".cache"))
    x, spec, images = inputs.x, input_spec(pre, cfg, data.images is not None), inputs.images
    y_train, y_valid = data.y[train_idx], data.y[valid_idx]
    target = fit_target(cfg, task, y_train)
    clip = target_range(cfg, task, y_train)
    y_fit = {k: encode_labels(transform_target(v, target), task, len(data.classes), tc)
             for k, v in (("train", y_train), ("valid", y_valid))}

    def to_pred(raw):
        return to_output(raw, task, target, clip)

    metric = get_metric(cfg.metric, task)
    if cfg.model.name in SKLEARN_MODELS:
        return _fit_sklearn(data, name, x, pre, target, clip, train_idx, valid_idx, fold_dir, seed, start)
    # model.blend: the scikit-learn model on the same fold inputs, fitted first so that a time
    # limit's deadline for the Keras epochs already counts its time.
    blend = cfg.model.blend if images is None else None
    if blend:
        params = {**COMPANION_PARAMS.get(blend, {}), **cfg.model.blend_params}
        companion = _fit_estimator(data, blend, params, x, pre, target, clip, train_idx, seed)
    members, saved, best_epochs, epochs_run, identity, histories = {}, {}, [], [], [], []
    timers: list[StopAtDeadline] = []
    valid_plain = inputs.dataset("valid")

    def score(net) -> float:  # the competition metric of this epoch's weights, for history.csv
        with precision_policy(tc.precision):
            pred = to_pred(net.predict(valid_plain, verbose=0))
        # A diverged epoch has no score; NonFiniteLoss stops the fold with the error that says so.
        return metric(y_valid, pred, task) if np.isfinite(pred).all() else float("nan")

    try:
        for s in range(tc.seeds):
            member_seed = seed + 1000 * s
            tag = label if tc.seeds == 1 else f"{label} seed {s}"
            history = History(score if tc.history_metric else None, seed=s,
                              sign=1.0 if metric.direction == "minimize" else -1.0)
            tensorboard = fold_dir.with_name(f"{fold_dir.name}.tensorboard") / f"seed{s}" if tc.tensorboard else None
            # Extra callbacks (tuning's per-epoch pruning) watch the first seed's model: one report per epoch.
            extra = [history] + ((callbacks or []) if s == 0 else [])
            if deadline is not None:
                now = time.monotonic()
                timers.append(StopAtDeadline(now + (deadline - now) / (tc.seeds - s), label=tag))
                extra.append(timers[-1])
            weights, net, info = _train_model(data, spec, inputs, y_fit, member_seed, tag, extra, tensorboard)
            histories += history.rows
            best_epochs.append(info["best_epoch"])
            epochs_run.append(info["epochs"])
            for ckpt in tc.checkpoints:
                member = ckpt if tc.seeds == 1 else f"seed{s}_{ckpt}"
                with precision_policy(tc.precision):
                    net.set_weights(weights[ckpt])
                    if ckpt == "swa":
                        reestimate_batchnorm(net, inputs.dataset("train"))
                    views = {v: tuple(to_pred(net.predict(inputs.dataset(k, view=v), verbose=0))
                                      for k in ("valid", "test")) for v in inputs.views}
                    if "identity" not in views:
                        views_plain = tuple(to_pred(net.predict(inputs.dataset(k), verbose=0)) for k in ("valid", "test"))
                    else:
                        views_plain = views["identity"]
                # TTA: the mean of the views' probabilities (predictions for regression).
                oof, test = (np.mean([p[i] for p in views.values()], axis=0) for i in (0, 1))
                if not (np.isfinite(oof).all() and np.isfinite(test).all()):
                    raise TrainingError(f"{tag}: the model predicts NaN/infinite values; no predictions were written. "
                                        f"Lower train.lr (now {tc.lr}) or add train.clip=global_norm.")
                members[member] = (oof, test)
                identity.append(views_plain)
                saved[member] = (net, net.get_weights())  # after SWA's BatchNorm re-estimation
    except tf.errors.InvalidArgumentError as exc:
        if images is None:
            raise
        first = str(exc).strip().splitlines()[0][:200]
        raise DataError(f"{label}: an image could not be decoded or resized ({first}). "
                        f"Check the files under image.train_dir / image.test_dir.") from None
    finally:
        inputs.close()

    oof = np.mean([m[0] for m in members.values()], axis=0)
    test = np.mean([m[1] for m in members.values()], axis=0)
    if blend:  # the blended model's share of the fold's prediction
        model, preds = companion
        members[blend], saved[blend] = preds, (model, None)
        w = cfg.model.blend_weight
        oof, test = ((1 - w) * keras_part + w * part for keras_part, part in zip((oof, test), preds))
    member_scores = {m: metric(y_valid, p[0], task) for m, p in members.items()}
    no_tta = score_no_tta = None
    if images is not None:
        no_tta = tuple(np.mean([p[i] for p in identity], axis=0) for i in (0, 1))
        score_no_tta = metric(y_valid, no_tta[0], task)
    result = FoldResult(name, np.asarray(valid_idx), oof, test, metric(y_valid, oof, task),
                        int(np.median(best_epochs)), int(max(epochs_run)), round(time.perf_counter() - start, 2),
                        member_scores, members, no_tta, score_no_tta, histories)
    if timers:
        result.timing = {"train_seconds": sum(t.train_seconds for t in timers),
                         "slowest_epoch": max(t.slowest for t in timers),
                         "cut": any(t.stopped_at is not None for t in timers)}
    bundle = _bundle(data, pre, target, clip, images is not None)
    if blend:
        bundle["blend_weight"] = cfg.model.blend_weight
    FoldArtifact.save(fold_dir, saved, bundle, result)
    return result


def _fit_estimator(data, name: str, params: dict, x: dict, pre, target, clip, train_idx, seed: int):
    """A scikit-learn model (``model.name`` hgb / linear, or ``model.blend``) fitted on the fold's
    inputs; returns it and its (OOF, test) predictions in target units."""
    converted = {k: to_matrix(v) for k, v in x.items()}
    cats = converted["train"][1]
    names = sorted(k for k in x["train"] if k != "numeric")
    sizes = {e[0]: e[1] for e in pre.input_spec_.embeddings}
    vocab = {c: sizes[n] for c, n in zip(cats, names)}
    model = build_sklearn(name, data.task, params, cats, vocab, seed)
    model.fit(converted["train"][0], transform_target(data.y[train_idx], target))
    preds = tuple(clip_target(invert_target(sklearn_predict(model, converted[k][0], data.task), target), clip)
                  for k in ("valid", "test"))
    return model, preds


# The blended model's settings unless model.blend_params says otherwise: the generalization
# README's HGB (learning rate 0.05, early stopping on a 10% inner split), with a cap of 500 rounds
# and 30 of patience so that a 19-class set stays in minutes.
COMPANION_PARAMS = {"hgb": {"learning_rate": 0.05, "max_iter": 500, "early_stopping": True,
                            "validation_fraction": 0.1, "n_iter_no_change": 30}}


def _fit_sklearn(data, name, x, pre, target, clip, train_idx, valid_idx, fold_dir, seed, start) -> FoldResult:
    """A scikit-learn model on the same fold, preprocessing and target transform as a Keras one."""
    cfg, task = data.cfg, data.task
    model, (oof, test) = _fit_estimator(data, cfg.model.name, dict(cfg.model.params), x, pre, target, clip,
                                        train_idx, seed)
    metric = get_metric(cfg.metric, task)
    score = metric(data.y[valid_idx], oof, task)
    n_iter = getattr(model, "n_iter_", None)  # None for Ridge's direct solvers
    iterations = int(np.max(n_iter)) if n_iter is not None else 0
    result = FoldResult(name, np.asarray(valid_idx), oof, test, score, 0, iterations,
                        round(time.perf_counter() - start, 2), {"best": score}, {"best": (oof, test)})
    FoldArtifact.save(fold_dir, {"best": (model, None)}, _bundle(data, pre, target, clip, False), result)
    return result


def _bundle(data, pre, target, clip, images: bool) -> dict:
    """What the fold's artifact needs besides its models to predict raw rows again."""
    return {"preprocessor": pre, "target": target, "task": data.task, "classes": data.classes,
            "features": list(data.columns), "image": data.cfg.image.model_dump() if images else None,
            "target_clip": list(clip) if clip is not None else None}


def _stages(cfg, net) -> list[tuple[int, int | None]]:
    """(epochs, trainable top backbone layers) per training stage. Backbones with head_epochs: the
    head alone first (0 backbone layers), then ``model.unfreeze`` layers (None: all)."""
    from ..models.backbones import has_backbone

    if not has_backbone(net):
        return [(cfg.train.epochs, None)]
    head = cfg.model.head_epochs
    rest = (cfg.train.epochs - head, cfg.model.unfreeze)
    return [(head, 0), rest] if head else [rest]


def _train_model(data, spec, inputs: FoldInputs, y_fit, seed: int, label: str, extra_callbacks: list,
                 tensorboard_dir: Path | None = None):
    """One model: build under the precision policy and strategy, fit (in stages for backbones),
    return its snapshots."""
    from ..models.backbones import BACKBONE_LAYER, has_backbone, set_trainable

    cfg, task, tc = data.cfg, data.task, data.cfg.train
    set_seed(seed, tc.deterministic)
    steps = math.ceil(len(y_fit["train"]) / tc.batch_size)
    train_ds = inputs.dataset("train", y_fit["train"], training=True, seed=seed)
    valid_ds = inputs.dataset("valid", y_fit["valid"])
    with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
        net = get_builder(cfg.model.name)(spec, cfg.model, output_size(task, len(data.classes)), task)
    snapshots = Snapshots(net, swa_epochs=tc.swa_epochs, ema=tc.ema, valid_ds=valid_ds)
    done = 0
    for stage_epochs, unfreeze in _stages(cfg, net):
        stage_tc = tc.model_copy(update={"epochs": stage_epochs})
        backbone_vars = None
        if has_backbone(net):
            n = set_trainable(net, unfreeze, pretrained=bool(cfg.model.weights))
            log.info("%s: %d epochs with %d backbone layers trainable", label, stage_epochs, n)
            if n and cfg.model.backbone_lr_mult < 1:
                backbone_vars = net.get_layer(BACKBONE_LAYER).trainable_variables
        with precision_policy(tc.precision), make_strategy(tc.strategy).scope():
            # The schedule counts optimizer steps: one per grad_accum_steps batches.
            lr = make_schedule(stage_tc, math.ceil(steps / tc.grad_accum_steps))
            backbone_opt = None
            if backbone_vars:
                slow_tc = stage_tc.model_copy(update={"lr": tc.lr * cfg.model.backbone_lr_mult})
                backbone_opt = make_optimizer(slow_tc, make_schedule(slow_tc, math.ceil(steps / tc.grad_accum_steps)))
            trainer = Trainer(net, grad_accum_steps=tc.grad_accum_steps, sam_rho=tc.sam_rho,
                              lookahead_steps=tc.lookahead_steps, lookahead_alpha=tc.lookahead_alpha,
                              backbone_variables=backbone_vars, backbone_optimizer=backbone_opt)
            trainer.compile(optimizer=make_optimizer(stage_tc, lr), loss=make_loss(task, tc),
                            steps_per_execution=tc.steps_per_execution, jit_compile=tc.jit_compile)
            trainer.build_optimizer()
        recorder = next((cb for cb in extra_callbacks if isinstance(cb, History)), None)
        callbacks = make_callbacks(tc, label, constant_lr=isinstance(lr, float), log_every=tc.log_every,
                                   snapshots=snapshots, history=recorder, tensorboard_dir=tensorboard_dir)
        callbacks += [cb for cb in extra_callbacks if cb is not recorder]
        with precision_policy(tc.precision):
            history = trainer.fit(train_ds, validation_data=valid_ds, initial_epoch=done,
                                  epochs=done + stage_epochs, callbacks=callbacks, verbose=0)
        guard = next(cb for cb in callbacks if isinstance(cb, NonFiniteLoss))
        if guard.bad_epoch is not None:
            raise TrainingError(f"{label}: the loss became NaN/infinite at epoch {guard.bad_epoch}; no predictions "
                                f"were written. Lower train.lr (now {tc.lr}) or add train.clip=global_norm.")
        # Early stopping in the head stage ends that stage only; the unfrozen stage still runs.
        done += len(history.history.get("loss", []))
    info = {"best_epoch": snapshots.best_epoch or done, "epochs": done}
    return snapshots.members(tc.checkpoints), net, info
