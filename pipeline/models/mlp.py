"""Multilayer perceptron over numeric features and entity embeddings."""
from __future__ import annotations

import math

import tf_keras as keras

from .inputs import encode_inputs, make_inputs
from .layers import Recompute


def _norm(cfg, width: int, name: str):
    if cfg.norm == "batch":
        return keras.layers.BatchNormalization(name=name)
    if cfg.norm == "layer":
        return keras.layers.LayerNormalization(name=name)
    if cfg.norm == "group":
        return keras.layers.GroupNormalization(groups=math.gcd(cfg.groups, width), name=name)
    return None


def dense_blocks(x, widths: list[int], cfg, prefix: str = ""):
    """Dense → [norm] → activation → [dropout] per width (the MLP body, also image models' heads)."""
    for i, width in enumerate(widths):
        block = [keras.layers.Dense(width, kernel_initializer=cfg.initializer, name=f"{prefix}dense_{i}")]
        norm = _norm(cfg, width, f"{prefix}{cfg.norm}_norm_{i}")
        if norm is not None:
            block.append(norm)
        block.append(keras.layers.Activation(cfg.activation, name=f"{prefix}act_{i}"))
        if cfg.checkpoint:
            x = Recompute(block, name=f"{prefix}block_{i}")(x)
        else:
            for layer in block:
                x = layer(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"{prefix}dropout_{i}")(x)
    return x


def linear_head(x, n_outputs: int):
    # The head stays float32 under mixed precision.
    return keras.layers.Dense(n_outputs, dtype="float32", name="head")(x)


def build_mlp(spec, cfg, n_outputs: int, task: str = "regression") -> keras.Model:
    """Dense blocks over the encoded inputs, then a linear head of ``n_outputs`` units."""
    inputs = make_inputs(spec)
    x = dense_blocks(encode_inputs(inputs, spec, cfg), cfg.hidden, cfg)
    return keras.Model(inputs, linear_head(x, n_outputs), name="mlp")
