"""Custom layers shared by the model families."""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable("pipeline")
class Recompute(keras.layers.Layer):
    """Runs a sequence of layers under ``tf.recompute_grad`` (gradient checkpointing): their
    activations are not kept for the backward pass but computed again, trading compute for memory.

    Only deterministic layers belong inside (Dense, normalization, activations): dropout inside
    would draw a different mask when recomputed, so builders apply it outside.
    """

    def __init__(self, block: list, **kwargs):
        super().__init__(**kwargs)
        self.block = list(block)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.block:  # create every variable now, never inside the recomputed function
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        super().build(input_shape)

    def call(self, x, training=None):
        def forward(h):
            for layer in self.block:
                h = layer(h, training=training)
            return h

        return tf.recompute_grad(forward)(x)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.block:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "block": [keras.layers.serialize(l) for l in self.block]}

    @classmethod
    def from_config(cls, config):
        block = [keras.layers.deserialize(c) for c in config.pop("block")]
        return cls(block, **config)
