"""Model builders by name. Entries are "module:function" strings resolved on use, so validating a
config does not import TensorFlow; each builder is ``build(spec, section, n_outputs, task) -> keras.Model``
and receives only its own section of the model config (``model_section``): model.realmlp for
realmlp, model.tabm for tabm, the model section itself for the others.
"""
from __future__ import annotations

import importlib

from ..registry import Registry

MODELS: Registry[str] = Registry("model")
MODELS.register("mlp")("pipeline.models.mlp:build_mlp")
MODELS.register("tabm")("pipeline.models.tabm:build_tabm")
MODELS.register("realmlp")("pipeline.models.realmlp:build_realmlp")
# Models whose settings, training recipe included, are their own section: model.<name>.
FAMILY_SECTIONS = ("realmlp", "tabm")
MODELS.register("cnn")("pipeline.models.cnn:build_cnn")
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
IMAGE_MODELS = {"cnn", *BACKBONES}
# scikit-learn level-1 models through the same CV (sklearn_models.py; a different builder contract).
MODELS.register("hgb")("pipeline.models.sklearn_models:build_sklearn")
MODELS.register("linear")("pipeline.models.sklearn_models:build_sklearn")


def model_section(model_cfg, name: str):
    """What ``name``'s builder receives: its own section of the model config."""
    return getattr(model_cfg, name) if name in FAMILY_SECTIONS else model_cfg


def build_model(name: str, spec, model_cfg, n_outputs: int, task: str):
    return get_builder(name)(spec, model_section(model_cfg, name), n_outputs, task)


def get_builder(name: str):
    module, func = MODELS.get(name, "model.name").split(":")
    return getattr(importlib.import_module(module), func)
