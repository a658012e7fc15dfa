"""Model builders by name. Entries are "module:function" strings resolved on use, so validating a
config does not import TensorFlow; each builder is ``build(spec, section, n_outputs, task) -> keras.Model``
and receives only its own section of the model config (``model_section``): model.mlp for mlp,
model.realmlp, model.tabm, model.cnn, model.vit, and model.backbone for every tf_keras.applications backbone
(its builder is told which one). scikit-learn models take model.hgb / model.linear as their
estimator's arguments (training/members.py: sklearn_params).
"""
from __future__ import annotations

import functools
import importlib

from ..registry import Registry

MODELS: Registry[str] = Registry("model")
MODELS.register("mlp")("pipeline.models.mlp:build_mlp")
MODELS.register("tabm")("pipeline.models.tabm:build_tabm")
MODELS.register("realmlp")("pipeline.models.realmlp:build_realmlp")
# Tabular models whose settings include their own training recipe (training/recipes.py).
FAMILY_SECTIONS = ("realmlp", "tabm")
MODELS.register("cnn")("pipeline.models.cnn:build_cnn")
MODELS.register("vit")("pipeline.models.vit:build_vit")
# tf_keras.applications backbones: name → (class, input preprocessing mode); see backbones.py.
# "none": the network rescales 0-255 pixels itself.
BACKBONES = {
    "efficientnetb0": ("EfficientNetB0", "none"),
    "mobilenetv2": ("MobileNetV2", "tf"),
    "mobilenetv3small": ("MobileNetV3Small", "none"),
    "mobilenetv3large": ("MobileNetV3Large", "none"),
    "resnet50": ("ResNet50", "caffe"),
}
for _name in BACKBONES:
    MODELS.register(_name)("pipeline.models.backbones:build_backbone")
IMAGE_MODELS = {"cnn", "vit", *BACKBONES}
# Image models whose encoder image.pretrain pretrains: the layer whose output is the image features.
PRETRAINABLE = {"cnn": "gap", "vit": "token_mean"}
# Models on one matrix through the same CV (sklearn_models.py, lgbm.py; a different builder contract).
MODELS.register("hgb")("pipeline.models.sklearn_models:build_sklearn")
MODELS.register("linear")("pipeline.models.sklearn_models:build_sklearn")
MODELS.register("lightgbm")("pipeline.models.lgbm:fit_booster")


def section_name(name: str) -> str:
    """The model config's section that holds ``name``'s settings: model.<section>."""
    return "backbone" if name in BACKBONES else name


def model_section(model_cfg, name: str):
    """What ``name``'s builder receives: its own section of the model config."""
    return getattr(model_cfg, section_name(name))


def build_model(name: str, spec, model_cfg, n_outputs: int, task: str):
    return get_builder(name)(spec, model_section(model_cfg, name), n_outputs, task)


def get_builder(name: str):
    """``name``'s builder; a backbone's is told which network it builds."""
    module, func = MODELS.get(name, "model.name").split(":")
    builder = getattr(importlib.import_module(module), func)
    return functools.partial(builder, backbone=name) if name in BACKBONES else builder

# The modules that register custom Keras objects (layers, heads, optimizers, schedules): a process
# that loads a saved network without having built one (--predict, a run whose folds trained in
# worker processes) imports them first, or Keras cannot rebuild those layers.
KERAS_OBJECT_MODULES = ("pipeline.models.layers", "pipeline.models.heads", "pipeline.models.realmlp",
                        "pipeline.models.tabm", "pipeline.models.backbones", "pipeline.training.optimizers",
                        "pipeline.training.schedules")


def register_keras_objects() -> None:
    for module in KERAS_OBJECT_MODULES:
        importlib.import_module(module)

