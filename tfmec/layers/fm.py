"""Factorization-machine second-order interaction."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape


@tfmec_export("tfmec.layers.FMInteraction")
@register
class FMInteraction(keras.layers.Layer):
    """Sum of all pairwise inner products of the field embeddings, in O(F d).

    Example::

        fields = tf.random.normal([2, 3, 4])              # batch 2, F = 3 fields, d = 4
        y = tfmec.layers.FMInteraction()(fields)          # shape (2, 1)

    ``y = 0.5 * sum_k ((sum_f e_fk)^2 - sum_f e_fk^2)  =  sum_{i<j} <e_i, e_j>``

    Shapes:
        ``[batch, F, d]`` -> ``[batch, 1]``.
    """

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) != 3:
            raise ValueError(f"FMInteraction expects [batch, F, d], got {shape}")
        self.built = True

    def call(self, inputs):
        e = tf.cast(inputs, self.compute_dtype)
        square_of_sum = tf.square(tf.reduce_sum(e, axis=1))
        sum_of_square = tf.reduce_sum(tf.square(e), axis=1)
        return 0.5 * tf.reduce_sum(square_of_sum - sum_of_square, axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (as_shape(input_shape)[0], 1)
