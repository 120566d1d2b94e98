"""Layers that arrange per-field tensors."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, is_shape_list


@tfmec_export("tfmec.layers.StackFields")
@register
class StackFields(keras.layers.Layer):
    """Stacks F per-field tensors along a new axis 1.

    Example::

        rows = [tf.ones([2, 4]), tf.zeros([2, 4]), tf.ones([2, 4])]   # 3 fields, d = 4
        y = tfmec.layers.StackFields()(rows)                           # shape (2, 3, 4)

    Shapes:
        list of F tensors ``[batch, d]`` -> ``[batch, F, d]``;
        list of F tensors ``[batch]`` -> ``[batch, F]`` (e.g. the raw numeric fields).
    """

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        dtype = self.compute_dtype
        return tf.stack([tf.cast(x, dtype) for x in inputs], axis=1)

    def compute_output_shape(self, input_shape):
        shapes = list(input_shape) if is_shape_list(input_shape) else [input_shape]
        first = as_shape(shapes[0])
        return (first[0], len(shapes)) + first[1:]


@tfmec_export("tfmec.layers.FlattenFields")
@register
class FlattenFields(keras.layers.Layer):
    """Concatenates the field embeddings of each row.

    Example::

        y = tfmec.layers.FlattenFields()(tf.ones([2, 3, 4]))   # shape (2, 12)

    Shapes:
        ``[batch, F, d]`` -> ``[batch, F * d]``.
    """

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) != 3 or shape[1] is None or shape[2] is None:
            raise ValueError(f"FlattenFields expects [batch, F, d] with known F and d, got {shape}")
        self._flat_dim = shape[1] * shape[2]
        self.built = True

    def call(self, inputs):
        return tf.reshape(inputs, [-1, self._flat_dim])

    def compute_output_shape(self, input_shape):
        shape = as_shape(input_shape)
        return (shape[0], shape[1] * shape[2])
