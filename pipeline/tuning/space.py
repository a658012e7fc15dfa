"""Search spaces: ``tune.space`` in the config (or a default per model family) → Optuna suggestions
→ config overrides, and the overrides back as a YAML overlay that a normal run accepts.

Parameters are named by the dotted config key they set (``train.lr``); a ``layers`` parameter
(``model.mlp.hidden``) is suggested as ``model.mlp.hidden.depth`` then ``model.mlp.hidden.width_<i>``
for each layer, which is Optuna's define-by-run way of conditional parameters.
"""
from __future__ import annotations

from typing import Any

from ..config import ParamSpec
from ..config_files import check_key
from ..errors import ConfigError
from ..models import BACKBONES

_LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "mlp": {
        "train.lr": _LR,
        "model.mlp.hidden": {"type": "layers", "low": 32, "high": 512, "log": True, "min_layers": 1, "max_layers": 3},
        "model.mlp.dropout": {"type": "float", "low": 0.0, "high": 0.4},
        "train.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [128, 256, 512]},
    },
    # The authors' search spaces, trimmed to what matters most in their ablations
    # (pytabkit's RealMLP-HPO; TabM's paper, table of hyperparameters).
    "realmlp": {
        "model.realmlp.lr": {"type": "float", "low": 2e-3, "high": 0.3, "log": True},
        "model.realmlp.dropout": {"type": "categorical", "choices": [0.0, 0.15, 0.3]},
        "model.realmlp.weight_decay": {"type": "categorical", "choices": [0.0, 0.02]},
        "model.realmlp.plr_sigma": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
    },
    "tabm": {
        "model.tabm.lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
        "model.tabm.weight_decay": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "model.tabm.dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "model.tabm.bins": {"type": "int", "low": 2, "high": 128},
    },
    "cnn": {
        "train.lr": _LR,
        "model.cnn.dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "train.label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
        "image.augment.rotation": {"type": "float", "low": 0.0, "high": 20.0},
    },
    "vit": {
        "train.lr": _LR,
        "model.vit.dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "model.vit.depth": {"type": "int", "low": 2, "high": 6},
        "train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    },
    "backbone": {
        "train.lr": _LR,
        "model.backbone.dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "model.backbone.backbone_lr_mult": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    },
    "hgb": {
        "model.hgb.learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "model.hgb.max_leaf_nodes": {"type": "int", "low": 8, "high": 128, "log": True},
        "model.hgb.min_samples_leaf": {"type": "int", "low": 5, "high": 100, "log": True},
        "model.hgb.l2_regularization": {"type": "float", "low": 1e-6, "high": 10.0, "log": True},
    },
    "lightgbm": {
        "model.lightgbm.learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "model.lightgbm.num_leaves": {"type": "int", "low": 8, "high": 256, "log": True},
        "model.lightgbm.min_data_in_leaf": {"type": "int", "low": 5, "high": 200, "log": True},
        "model.lightgbm.feature_fraction": {"type": "float", "low": 0.4, "high": 1.0},
        "model.lightgbm.lambda_l2": {"type": "float", "low": 1e-6, "high": 10.0, "log": True},
    },
    "linear_regression": {"model.linear.alpha": {"type": "float", "low": 1e-3, "high": 1e3, "log": True}},
    "linear_classification": {"model.linear.C": {"type": "float", "low": 1e-3, "high": 1e2, "log": True}},
}


def resolve_space(cfg, task: str) -> dict[str, ParamSpec]:
    """The configured space, or the model family's default; every key checked against the schema."""
    if cfg.tune.space:
        space = dict(cfg.tune.space)
    else:
        family = cfg.model.name
        if family in BACKBONES:
            family = "backbone"
        elif family == "linear":
            family = "linear_regression" if task == "regression" else "linear_classification"
        space = {k: ParamSpec(**v) for k, v in DEFAULT_SPACES[family].items()}
    for key, spec in space.items():
        check_key(key, f"tune.space.{key}")
        for other in (spec.when or {}):
            if other not in space:
                raise ConfigError(f"tune.space.{key}.when: {other!r} is not a parameter of the space "
                                  f"{sorted(space)}.")
    return space


def suggest(trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """One trial's config overrides (dotted key → value). Works with a FixedTrial for replays."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.when and any(values.get(k) not in allowed for k, allowed in spec.when.items()):
            continue
        values[key] = _suggest_one(trial, key, spec)
    return values


def _suggest_one(trial, key: str, spec: ParamSpec):
    if spec.type == "categorical":
        return trial.suggest_categorical(key, spec.choices)
    if spec.type == "float":
        return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=None if spec.log else spec.step)
    if spec.type == "int":
        return trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log,
                                 step=int(spec.step or 1) if not spec.log else 1)
    depth = trial.suggest_int(f"{key}.depth", spec.min_layers, spec.max_layers)
    return [trial.suggest_int(f"{key}.width_{i}", int(spec.low), int(spec.high), log=spec.log) for i in range(depth)]


def overlay(overrides: dict[str, Any]) -> dict:
    """Dotted overrides → the nested YAML overlay ``--params`` reads."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
