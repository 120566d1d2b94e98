"""Pairwise inner products of field embeddings (the product layer of IPNN)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape


@tfmec_export("tfmec.layers.pair_indices")
def pair_indices(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices ``(i, j)``, ``i < j``, of all F(F-1)/2 field pairs in row-major
    order: (0,1), (0,2), ..., (0,F-1), (1,2), ...

    Shapes:
        two int32 arrays ``[F(F-1)/2]``.
    """
    rows, cols = np.triu_indices(int(num_fields), k=1)
    return rows.astype(np.int32), cols.astype(np.int32)


@tfmec_export("tfmec.layers.InnerProduct")
@register
class InnerProduct(keras.layers.Layer):
    """All pairwise inner products ``<e_i, e_j>``, ``i < j``, in the order of :func:`pair_indices`.

    Example::

        fields = tf.random.normal([2, 4, 8])            # batch 2, F = 4 fields, d = 8
        y = tfmec.layers.InnerProduct()(fields)         # shape (2, 6): the 4 * 3 / 2 pairs

    Shapes:
        ``[batch, F, d]`` -> ``[batch, F(F-1)/2]``.
    """

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) != 3 or shape[1] is None:
            raise ValueError(f"InnerProduct expects [batch, F, d] with known F, got {shape}")
        self.num_fields = shape[1]
        rows, cols = pair_indices(self.num_fields)
        self._flat_index = (rows * self.num_fields + cols).astype(np.int32)
        self.built = True

    def call(self, inputs):
        e = tf.cast(inputs, self.compute_dtype)
        gram = tf.matmul(e, e, transpose_b=True)  # [batch, F, F]
        flat = tf.reshape(gram, [-1, self.num_fields * self.num_fields])
        return tf.gather(flat, tf.constant(self._flat_index), axis=1)

    def compute_output_shape(self, input_shape):
        shape = as_shape(input_shape)
        f = shape[1]
        return (shape[0], None if f is None else f * (f - 1) // 2)
