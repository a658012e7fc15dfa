"""Multilayer perceptron over numeric features and entity embeddings."""
from __future__ import annotations

import tf_keras as keras

from .inputs import encode_inputs, make_inputs

_NORMS = {"batch": keras.layers.BatchNormalization, "layer": keras.layers.LayerNormalization}


def build_mlp(spec, cfg, n_outputs: int) -> keras.Model:
    """Dense → [norm] → activation → [dropout] blocks, then a linear head of ``n_outputs`` units."""
    inputs = make_inputs(spec)
    x = encode_inputs(inputs, spec)
    for i, width in enumerate(cfg.hidden):
        x = keras.layers.Dense(width, kernel_initializer=cfg.initializer, name=f"dense_{i}")(x)
        if cfg.norm in _NORMS:
            x = _NORMS[cfg.norm](name=f"{cfg.norm}_norm_{i}")(x)
        x = keras.layers.Activation(cfg.activation, name=f"act_{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    # The head stays float32 under mixed precision.
    out = keras.layers.Dense(n_outputs, dtype="float32", name="head")(x)
    return keras.Model(inputs, out, name="mlp")
