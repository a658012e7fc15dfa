"""A compact CNN trained from scratch: conv-BN-activation blocks, pooling, global average pooling."""
from __future__ import annotations

import tf_keras as keras

from .image_head import image_model
from .inputs import IMAGE_INPUT, make_inputs


def build_cnn(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """``cfg.filters`` blocks of ``cfg.convs_per_block`` 3x3 convolutions; 2x2 max pooling between
    blocks; global average pooling and dropout; then the shared head (image_head.py)."""
    inputs = make_inputs(spec)
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs[IMAGE_INPUT])
    for i, width in enumerate(cfg.filters):
        for j in range(cfg.convs_per_block):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=cfg.initializer,
                                    name=f"conv_{i}_{j}")(x)
            x = keras.layers.BatchNormalization(name=f"bn_{i}_{j}")(x)
            x = keras.layers.Activation(cfg.activation, name=f"act_{i}_{j}")(x)
        if i < len(cfg.filters) - 1:
            x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="gap_dropout")(x)
    return image_model(inputs, x, spec, cfg, n_outputs, name="cnn")
