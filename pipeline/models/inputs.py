"""Shared model inputs: named Keras inputs from an InputSpec, and their encoding into one tensor.

Every model family composes these two, so CV, tuning and export build the same inputs.
"""
from __future__ import annotations

import tf_keras as keras

from ..preprocessing.table import NUMERIC_INPUT, InputSpec

IMAGE_INPUT = "image"  # float32 pixels in 0-255, (height, width, channels); models rescale inside


def make_inputs(spec: InputSpec) -> dict[str, keras.Input]:
    inputs = {}
    if spec.numeric_dim:
        inputs[NUMERIC_INPUT] = keras.Input((spec.numeric_dim,), name=NUMERIC_INPUT, dtype="float32")
    for name, _, _ in spec.embeddings:
        inputs[name] = keras.Input((1,), name=name, dtype="int32")
    if spec.image is not None:
        inputs[IMAGE_INPUT] = keras.Input(spec.image, name=IMAGE_INPUT, dtype="float32")
    return inputs


def encode_inputs(inputs: dict, spec: InputSpec, cfg=None):
    """Numeric block and one entity embedding per embedded categorical, concatenated; with
    ``model.mlp.numeric_embedding: plr`` (``cfg``), the periodic embeddings of the scaled numerics too."""
    parts = [inputs[NUMERIC_INPUT]] if spec.numeric_dim else []
    if cfg is not None and cfg.numeric_embedding == "plr" and spec.continuous:
        from .layers import PeriodicEmbedding, SelectColumns

        x = inputs[NUMERIC_INPUT]
        if len(spec.continuous) < spec.numeric_dim:
            x = SelectColumns(spec.continuous, name="continuous")(x)
        parts.append(PeriodicEmbedding(cfg.plr_frequencies, cfg.plr_dim, cfg.plr_sigma, name="plr")(x))
    dropout = cfg.embedding_dropout if cfg is not None else 0.0
    for name, vocab, dim in spec.embeddings:
        emb = keras.layers.Embedding(vocab, dim, name=f"emb_{name}")(inputs[name])
        flat = keras.layers.Flatten(name=f"flat_{name}")(emb)
        if dropout:  # a rare level's vector cannot carry its few rows alone
            flat = keras.layers.Dropout(dropout, name=f"emb_dropout_{name}")(flat)
        parts.append(flat)
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(name="features")(parts)
