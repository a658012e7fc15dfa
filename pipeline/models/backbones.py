"""Transfer learning from tf_keras.applications backbones (EfficientNetB0, MobileNetV2/V3, ResNet50).

Weights come from a local file (``model.backbone.weights``: Kaggle attaches them as a dataset, e.g. the
``*_notop.h5`` files) or stay random; nothing is downloaded. Each backbone gets its own input
preprocessing inside the model, so the pipeline always feeds 0-255 pixels; grayscale images are
repeated to the 3 channels the backbones expect.

A pretrained backbone is called with ``training=False``: its BatchNormalization layers stay in
inference mode (their ImageNet statistics) even once unfrozen, as Keras' transfer-learning guide
advises, and ``set_trainable`` never unfreezes them. A backbone with random weights trains like any
network, BatchNormalization included (frozen random statistics would scale its features to ~0).
"""
from __future__ import annotations

from pathlib import Path

import tf_keras as keras

from ..errors import ConfigError
from . import BACKBONES
from .image_head import image_model
from .inputs import IMAGE_INPUT, make_inputs

BACKBONE_LAYER = "backbone"


@keras.saving.register_keras_serializable("pipeline")
class AppPreprocess(keras.layers.Layer):
    """keras.applications' ``preprocess_input`` as a layer: mode "tf" (to [-1, 1]), "caffe" (BGR,
    ImageNet mean subtracted), "torch", or "none" (the backbone rescales inside)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        if self.mode == "none":
            return x
        return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def make_backbone(name: str, shape: tuple[int, int, int], weights: str | None = None) -> keras.Model:
    app = getattr(keras.applications, BACKBONES[name][0])
    try:
        base = app(include_top=False, weights=None, input_shape=shape[:2] + (3,), pooling="avg")
    except ValueError as exc:  # e.g. an image size below the backbone's minimum
        raise ConfigError(f"model.name {name} cannot take image.size {list(shape[:2])}: {exc}") from None
    if weights:
        try:
            base.load_weights(weights)
        except (ValueError, OSError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(f"model.backbone.weights {weights}: does not match backbone {name} with "
                              f"include_top=False ({first}). Use that backbone's '_notop' weights file.") from None
    base._name = BACKBONE_LAYER
    return base


def build_backbone(spec, cfg, n_outputs: int, task: str = "regression", *, backbone: str) -> keras.Model:
    """``backbone`` (a key of BACKBONES) with the image head; ``cfg`` is the model.backbone section."""
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(f"model.backbone.weights {cfg.weights}: file not found. Attach the weights file and set "
                          f"its path.")
    inputs = make_inputs(spec)
    x = inputs[IMAGE_INPUT]
    if spec.image[2] == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = AppPreprocess(BACKBONES[backbone][1], name="app_preprocess")(x)
    base = make_backbone(backbone, spec.image, cfg.weights)
    x = base(x, training=False) if cfg.weights else base(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="features_dropout")(x)
    return image_model(inputs, x, spec, cfg, n_outputs, name=backbone)


def set_trainable(net: keras.Model, top_layers: int | None, pretrained: bool = True) -> int:
    """Freeze the backbone (``top_layers`` 0) or unfreeze its top N layers (None: all), keeping every
    BatchNormalization of a pretrained backbone frozen. Returns how many backbone layers with
    weights are trainable."""
    base = net.get_layer(BACKBONE_LAYER)
    layers = base.layers
    base.trainable = top_layers != 0
    if top_layers == 0:
        return 0
    cut = 0 if top_layers is None else max(0, len(layers) - top_layers)
    count = 0
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not (pretrained and isinstance(layer, keras.layers.BatchNormalization))
        count += layer.trainable and bool(layer.weights)
    return count


def has_backbone(net: keras.Model) -> bool:
    return any(l.name == BACKBONE_LAYER for l in net.layers)
