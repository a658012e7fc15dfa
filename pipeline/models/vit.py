"""A small Vision Transformer for small images: a convolutional stem, non-overlapping patches of its
output as tokens, learned position embeddings, pre-norm encoder blocks (multi-head self-attention,
then a GELU MLP, each with a residual), the tokens' mean, then the shared head (image_head.py).

Sized for competitions' own images trained from scratch: no class token (the mean of the tokens
trains as well on small data and keeps the graph simple for TFLite), the patch side chosen from
the image so the grid is at most 7 tokens a side: 7x7 on 28x28 and 14x14 digits, 4x4 on 8x8 ones.
"""
from __future__ import annotations

import tf_keras as keras

from .image_head import image_model
from .inputs import IMAGE_INPUT, make_inputs
from .layers import PositionEmbedding

GRID = 7  # patch: None → at most this many tokens along the shorter side


def patch_size(image_size: tuple[int, int], patch: int | None) -> int:
    """The patch side: the configured one, or ceil(shorter side / GRID). Not side // GRID: on 8x8
    images that is 1, 64 tokens: mnist8's first fold took 467 s at 0.940, against 127 s at 0.941
    with 2x2 patches (16 tokens), on different splits (bench/images.py --part vit, issue 29 notes)."""
    side = min(image_size)
    size = patch if patch is not None else -(-side // GRID)
    if size > side:
        raise ValueError(f"model.vit.patch {size} is larger than the image's shorter side {side}")
    return size


def encoder_block(x, cfg, i: int):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""
    h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"vit_{i}_ln1")(x)
    h = keras.layers.MultiHeadAttention(cfg.heads, cfg.dim // cfg.heads, dropout=cfg.attention_dropout,
                                        name=f"vit_{i}_attention")(h, h)
    if cfg.dropout:
        h = keras.layers.Dropout(cfg.dropout, name=f"vit_{i}_drop1")(h)
    x = keras.layers.Add(name=f"vit_{i}_res1")([x, h])
    h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"vit_{i}_ln2")(x)
    h = keras.layers.Dense(int(cfg.dim * cfg.mlp_ratio), activation="gelu", name=f"vit_{i}_mlp1")(h)
    h = keras.layers.Dense(cfg.dim, name=f"vit_{i}_mlp2")(h)
    if cfg.dropout:
        h = keras.layers.Dropout(cfg.dropout, name=f"vit_{i}_drop2")(h)
    return keras.layers.Add(name=f"vit_{i}_res2")([x, h])


def build_vit(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """``cfg``: the model.vit section (config.py: ViTConfig)."""
    inputs = make_inputs(spec)
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs[IMAGE_INPUT])
    for i, width in enumerate(cfg.stem):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=cfg.initializer,
                                name=f"stem_conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"stem_bn_{i}")(x)
        x = keras.layers.Activation(cfg.activation, name=f"stem_act_{i}")(x)
    p = patch_size(spec.image[:2], cfg.patch)
    # Patch embedding, one token per patch; "same" padding keeps the edge pixels of a side that the
    # patch does not divide.
    x = keras.layers.Conv2D(cfg.dim, p, strides=p, padding="same", name="patches")(x)
    grid = (-(-spec.image[0] // p), -(-spec.image[1] // p))
    x = keras.layers.Reshape((grid[0] * grid[1], cfg.dim), name="tokens")(x)
    x = PositionEmbedding(name="positions")(x)
    for i in range(cfg.depth):
        x = encoder_block(x, cfg, i)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="vit_ln")(x)
    x = keras.layers.GlobalAveragePooling1D(name="token_mean")(x)
    return image_model(inputs, x, spec, cfg, n_outputs, name="vit")
