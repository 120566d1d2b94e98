"""Pooling of multi-valued fields: padded id rows and their embeddings to one vector per row.

A multi-valued field arrives as ids ``int32[batch, L]`` padded with 0 (most recent value first, see
:mod:`tfmec.data.lists`); its table turns them into ``[batch, L, d]``. The mask is ``ids != 0``, taken
from the ids themselves (not from Keras's implicit mask propagation), so it is the same under Keras 3,
tf-keras, a SavedModel and ONNX, whatever table layer the user's model has.

* :class:`MaskedMeanPooling`: the mean of the unmasked rows (zeros for an empty list);
* :class:`TargetAttentionInputs` and :class:`MaskedWeightedSum`: the two ends of DIN's activation
  unit (Zhou et al. 2018), with the attention MLP as plain ``Dense`` layers in between (so that AFM
  can factor them like any MLP): ``w_i = MLP([h_i, c, h_i - c, h_i * c])`` and
  ``sum_i mask_i * w_i * h_i`` (no softmax, as in the paper).

With these, a padded row's output does not depend on the amount of padding (tested).
"""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape


def id_mask(ids, dtype):
    """``[batch, L, 1]`` of ``dtype``: 1 where ``ids != 0``."""
    return tf.cast(tf.not_equal(tf.cast(ids, tf.int32), 0), dtype)[..., None]


@tfmec_export("tfmec.layers.MaskedMeanPooling")
@register
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of a padded sequence's rows over its non-padding positions.

    Example::

        ids = tf.constant([[3, 5, 0]])                                   # id 0 is padding
        rows = tf.constant([[[1.0, 1.0], [3.0, 5.0], [9.0, 9.0]]])
        y = tfmec.layers.MaskedMeanPooling()([ids, rows])                # shape (1, 2), values [[2.0, 3.0]]

    Shapes: ``[ids int[batch, L], rows [batch, L, d]]`` -> ``[batch, d]`` (zeros where every id is 0).
    No weights.
    """

    def call(self, inputs):
        ids, rows = inputs
        rows = tf.cast(rows, self.compute_dtype)
        mask = id_mask(ids, rows.dtype)
        total = tf.reduce_sum(rows * mask, axis=1)
        count = tf.reduce_sum(mask, axis=1)
        return total / tf.maximum(count, tf.ones_like(count))

    def compute_output_shape(self, input_shape):
        rows = as_shape(input_shape[1])
        return (rows[0], rows[2])


@tfmec_export("tfmec.layers.TargetAttentionInputs")
@register
class TargetAttentionInputs(keras.layers.Layer):
    """DIN's attention features of each history position against the candidate.

    Example::

        history, candidate = tf.ones([2, 5, 8]), tf.ones([2, 8])             # L = 5 positions, d = 8
        y = tfmec.layers.TargetAttentionInputs()([history, candidate])       # shape (2, 5, 32)

    Shapes: ``[history [batch, L, d], candidate [batch, d]]`` -> ``[batch, L, 4 d]``: per position
    ``[h, c, h - c, h * c]``. No weights.
    """

    def call(self, inputs):
        history, candidate = inputs
        history = tf.cast(history, self.compute_dtype)
        c = tf.broadcast_to(tf.cast(candidate, self.compute_dtype)[:, None, :], tf.shape(history))
        return tf.concat([history, c, history - c, history * c], axis=-1)

    def compute_output_shape(self, input_shape):
        history = as_shape(input_shape[0])
        return history[:2] + (None if history[2] is None else 4 * history[2],)


@tfmec_export("tfmec.layers.MaskedWeightedSum")
@register
class MaskedWeightedSum(keras.layers.Layer):
    """Sum of a padded sequence's rows weighted by per-position scores, padding excluded.

    Example::

        ids = tf.constant([[1, 0]])                                      # id 0 is padding
        scores = tf.constant([[[2.0], [7.0]]])
        rows = tf.constant([[[1.0, 2.0], [5.0, 5.0]]])
        y = tfmec.layers.MaskedWeightedSum()([ids, scores, rows])        # shape (1, 2), values [[2.0, 4.0]]

    Shapes: ``[ids int[batch, L], weights [batch, L, 1], rows [batch, L, d]]`` -> ``[batch, d]``.
    No weights.
    """

    def call(self, inputs):
        ids, weights, rows = inputs
        rows = tf.cast(rows, self.compute_dtype)
        return tf.reduce_sum(rows * tf.cast(weights, rows.dtype) * id_mask(ids, rows.dtype), axis=1)

    def compute_output_shape(self, input_shape):
        rows = as_shape(input_shape[2])
        return (rows[0], rows[2])


__all__ = ["MaskedMeanPooling", "TargetAttentionInputs", "MaskedWeightedSum", "id_mask"]
