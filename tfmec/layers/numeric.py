"""Embedding of a numeric (float) field."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, make_initializer, renamed_kwargs, serialize_initializer


@tfmec_export("tfmec.layers.NumericEmbedding")
@register
@renamed_kwargs({"dim": "output_dim"})
class NumericEmbedding(keras.layers.Layer):
    """Maps a numeric field to a vector: ``x[:, None] * v``.

    Example::

        layer = tfmec.layers.NumericEmbedding(8)
        y = layer(tf.constant([0.5, 1.0, 2.0]))   # shape (3, 8)

    Args:
        output_dim: embedding dimension d (the width, as the tables' ``output_dim``; ``dim``, keyword or
            attribute, is its deprecated name, accepted for one release with a ``DeprecationWarning``;
            old configs load silently).
        embeddings_initializer: initializer of ``v`` (shape ``[d]``).
        seed: optional integer seed for the initializer.

    Weights: ``embeddings float32[d]``.

    Shapes:
        input ``[batch]`` (or ``[batch, 1]``) float -> output ``[batch, d]``.
    """

    def __init__(self, output_dim: int, embeddings_initializer="uniform", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(output_dim) < 1:
            raise ValueError(f"NumericEmbedding: output_dim must be >= 1, got {output_dim}")
        self.output_dim = int(output_dim)
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.seed = seed

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] not in (1, None)):
            raise ValueError(f"NumericEmbedding expects input [batch] or [batch, 1], got {shape}")
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.output_dim,),
            initializer=make_initializer(self.embeddings_initializer, self.seed, 0),
        )
        self.built = True

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        x = tf.reshape(x, [-1, 1])
        return x * tf.cast(self.embeddings, self.compute_dtype)[None, :]

    def compute_output_shape(self, input_shape):
        return (as_shape(input_shape)[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, embeddings_initializer=self.embeddings_initializer, seed=self.seed)
        return config
