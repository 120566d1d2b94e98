"""First-order (linear) term of a CTR model."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, is_shape_list, serialize_initializer


@tfmec_export("tfmec.layers.LinearTerms")
@register
class LinearTerms(keras.layers.Layer):
    """Sums per-field first-order weights and adds a global bias.

    Example::

        weights = [tf.ones([2, 1]), tf.fill([2, 1], 2.0)]   # two fields' [batch, 1] weights
        y = tfmec.layers.LinearTerms()(weights)             # shape (2, 1): 3.0 + bias (0 at first)

    Typical inputs are the ``[batch, 1]`` outputs of the per-field ``Embedding(V, 1)`` layers plus a
    ``Dense(1)`` over the numeric fields.

    Args:
        bias_initializer: initializer of the scalar bias.

    Shapes:
        a tensor ``[batch, ...]`` or a list of them -> ``[batch, 1]`` (the sum of every element of
        every input in a row, plus the bias).
    """

    def __init__(self, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.bias_initializer = serialize_initializer(bias_initializer)

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(1,), initializer=keras.initializers.get(self.bias_initializer)
        )
        self.built = True

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        total = None
        for x in inputs:
            x = tf.cast(x, self.compute_dtype)
            flat = tf.reshape(x, [tf.shape(x)[0], -1])
            s = tf.reduce_sum(flat, axis=1, keepdims=True)
            total = s if total is None else total + s
        return total + tf.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        first = input_shape[0] if is_shape_list(input_shape) else input_shape
        return (as_shape(first)[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(bias_initializer=self.bias_initializer)
        return config
