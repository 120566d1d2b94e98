"""Embedding of a numeric (float) field."""
from __future__ import annotations

import tensorflow as tf

from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, make_initializer, serialize_initializer


@register
class NumericEmbedding(keras.layers.Layer):
    """Maps a numeric field to a vector: ``x[:, None] * v``.

    Args:
        dim: embedding dimension d.
        embeddings_initializer: initializer of ``v`` (shape ``[d]``).
        seed: optional integer seed for the initializer.

    Shapes:
        input ``[batch]`` (or ``[batch, 1]``) float -> output ``[batch, d]``.
    """

    def __init__(self, dim: int, embeddings_initializer="uniform", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(dim) < 1:
            raise ValueError(f"NumericEmbedding: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.seed = seed

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] not in (1, None)):
            raise ValueError(f"NumericEmbedding expects input [batch] or [batch, 1], got {shape}")
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.dim,),
            initializer=make_initializer(self.embeddings_initializer, self.seed, 0),
        )
        self.built = True

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        x = tf.reshape(x, [-1, 1])
        return x * tf.cast(self.embeddings, self.compute_dtype)[None, :]

    def compute_output_shape(self, input_shape):
        return (as_shape(input_shape)[0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, embeddings_initializer=self.embeddings_initializer, seed=self.seed)
        return config
