"""What every image model shares after its image features: the optional tabular branch (the MLP's
inputs, entity embeddings and dense blocks) joined with them, dense blocks, and the linear head."""
from __future__ import annotations

import tf_keras as keras

from .inputs import encode_inputs
from .mlp import dense_blocks, linear_head


def image_model(inputs: dict, image_features, spec, cfg, n_outputs: int, name: str) -> keras.Model:
    x = image_features
    if spec.tabular:
        tab = dense_blocks(encode_inputs(inputs, spec), cfg.tabular_hidden, cfg, prefix="tab_")
        x = keras.layers.Concatenate(name="image_tabular")([x, tab])
    x = dense_blocks(x, cfg.hidden, cfg, prefix="head_")
    return keras.Model(inputs, linear_head(x, n_outputs), name=name)
