"""Model builders by name. Entries are "module:function" strings resolved on use, so validating a
config does not import TensorFlow; each builder is ``build(spec, model_cfg, n_outputs) -> keras.Model``.
"""
from __future__ import annotations

import importlib

from ..registry import Registry

MODELS: Registry[str] = Registry("model")
MODELS.register("mlp")("pipeline.models.mlp:build_mlp")


def get_builder(name: str):
    module, func = MODELS.get(name, "model.name").split(":")
    return getattr(importlib.import_module(module), func)
