"""A compact CNN trained from scratch: conv-BN-activation blocks, pooling, global average pooling."""
from __future__ import annotations

import tf_keras as keras

from .image_head import image_model
from .inputs import IMAGE_INPUT, make_inputs


MAX_BLOCKS, FIRST_WIDTH, MAX_WIDTH = 5, 32, 256


def auto_filters(image_size) -> list[int]:
    """Conv widths sized to the image: one block, then one more per 2x2 pooling that leaves the
    shorter side at least 2 pixels (8x8 → 8, 4, 2: 3 blocks; 28x28 → 28, 14, 7, 3: 4), at most
    MAX_BLOCKS; widths double from FIRST_WIDTH up to MAX_WIDTH. Small images are never upscaled:
    the network shrinks to them instead."""
    side, blocks = min(image_size), 1
    while blocks < MAX_BLOCKS and side // 2 >= 2:
        side //= 2
        blocks += 1
    return [min(MAX_WIDTH, FIRST_WIDTH * 2 ** i) for i in range(blocks)]


def build_cnn(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """``cfg.filters`` blocks (None: ``auto_filters``) of ``cfg.convs_per_block`` 3x3 convolutions;
    2x2 max pooling between blocks; global average pooling and dropout; then the shared head
    (image_head.py)."""
    inputs = make_inputs(spec)
    filters = cfg.filters or auto_filters(spec.image[:2])
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs[IMAGE_INPUT])
    for i, width in enumerate(filters):
        for j in range(cfg.convs_per_block):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=cfg.initializer,
                                    name=f"conv_{i}_{j}")(x)
            x = keras.layers.BatchNormalization(name=f"bn_{i}_{j}")(x)
            x = keras.layers.Activation(cfg.activation, name=f"act_{i}_{j}")(x)
        if i < len(filters) - 1:
            x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="gap_dropout")(x)
    return image_model(inputs, x, spec, cfg, n_outputs, name="cnn")
