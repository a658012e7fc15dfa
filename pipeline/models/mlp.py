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


def build_mlp(spec, cfg, n_outputs: int) -> keras.Model:
    """Dense → [norm] → activation → [dropout] blocks, then a linear head of ``n_outputs`` units."""
    inputs = make_inputs(spec)
    x = encode_inputs(inputs, spec)
    for i, width in enumerate(cfg.hidden):
        block = [keras.layers.Dense(width, kernel_initializer=cfg.initializer, name=f"dense_{i}")]
        norm = _norm(cfg, width, f"{cfg.norm}_norm_{i}")
        if norm is not None:
            block.append(norm)
        block.append(keras.layers.Activation(cfg.activation, name=f"act_{i}"))
        if cfg.checkpoint:
            x = Recompute(block, name=f"block_{i}")(x)
        else:
            for layer in block:
                x = layer(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    # The head stays float32 under mixed precision.
    out = keras.layers.Dense(n_outputs, dtype="float32", name="head")(x)
    return keras.Model(inputs, out, name="mlp")
