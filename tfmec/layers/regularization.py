"""Activity regularisation of embeddings."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape


@tfmec_export("tfmec.layers.L2Penalty")
@register
class L2Penalty(keras.layers.Layer):
    """Identity that adds ``l2 * sum(x^2) / batch`` to the model's losses while training.

    Example::

        layer = tfmec.layers.L2Penalty(l2=1e-4)
        y = layer(tf.ones([2, 3, 4]), training=True)   # shape (2, 3, 4), the input itself
        penalty = layer.losses                         # [1e-4 * 24 / 2]

    Applied to the looked-up embeddings of a batch, this is the usual CTR embedding regulariser: it
    only touches the rows the batch uses (a weight regulariser on a whole table would produce a dense
    gradient over millions of rows), and it works for any embedding layer, including ones made by a
    custom embedding factory. The same number in Keras 3 and tf-keras.

    Args:
        l2: the coefficient (>= 0).

    Shapes:
        ``[batch, ...]`` -> the same tensor.
    """

    def __init__(self, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if float(l2) < 0:
            raise ValueError(f"L2Penalty: l2 must be >= 0, got {l2}")
        self.l2 = float(l2)

    def call(self, inputs, training=None):
        if training and self.l2 > 0:
            x = tf.cast(inputs, tf.float32)
            batch = tf.cast(tf.shape(x)[0], tf.float32)
            self.add_loss(self.l2 * tf.reduce_sum(tf.square(x)) / tf.maximum(batch, 1.0))
        return inputs

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(l2=self.l2)
        return config
