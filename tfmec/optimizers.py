"""Sparse-aware Adam: an embedding update costs what the batch touches, not the table size.

Keras's own ``Adam`` densifies the ``tf.IndexedSlices`` gradient of an embedding table: Keras 3
computes ``m += (g - m)(1 - beta_1)`` on the whole ``[V, d]`` table, and tf-keras decays all of ``m``
and ``v`` and updates every row of the table, on every step. For a 10^7-row table that is several
gigabytes of memory traffic per step, whatever the batch. :class:`LazyAdam` applies Adam only to
the rows in the batch ("lazy" Adam, as in TensorFlow Addons): for a sparse gradient with unique rows
``r`` and summed row gradients ``g_r``::

    m[r] = beta_1 m[r] + (1 - beta_1) g_r
    v[r] = beta_2 v[r] + (1 - beta_2) g_r^2
    w[r] -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m[r] / (sqrt(v[r]) + epsilon)

Rows not in the batch keep their moments (they are not decayed), so it differs from dense Adam only
in rows the step does not touch. Dense gradients (MLP kernels) get the ordinary Adam update.
"""
from __future__ import annotations

import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras, register, tf_variable


def _sparse_rows(gradient: tf.IndexedSlices):
    """``(unique row ids int[U], summed row gradients [U, d])`` of an ``IndexedSlices`` gradient."""
    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    return rows, values


def _lazy_update(optimizer, variable, m, v, gradient, lr):
    """The lazy Adam step of ``optimizer`` on the rows of ``gradient`` (``tf.IndexedSlices`` of
    ``variable [V, d]``), with moments ``m``, ``v`` of the same shape."""
    dtype = variable.dtype
    rows, g = _sparse_rows(gradient)
    g = tf.cast(g, dtype)
    t = tf.cast(optimizer.iterations + 1, dtype)
    b1, b2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    alpha = tf.cast(lr, dtype) * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
    # gather from the tf.Variable itself (a sparse read of U rows): converting a Keras 3 variable to a
    # tensor first reads the whole [V, d] moment, which after a scatter update is a full copy per step
    m_rows = b1 * tf.gather(tf_variable(m), rows) + (1.0 - b1) * g
    v_rows = b2 * tf.gather(tf_variable(v), rows) + (1.0 - b2) * tf.square(g)
    step = alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(optimizer.epsilon, dtype))
    if IS_LEGACY_KERAS:
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(step, rows))
    else:  # Keras 3's TF optimizer turns an IndexedSlices value of assign / assign_sub into a scatter
        optimizer.assign(m, tf.IndexedSlices(m_rows, rows))
        optimizer.assign(v, tf.IndexedSlices(v_rows, rows))
        optimizer.assign_sub(variable, tf.IndexedSlices(step, rows))


@register
class LazyAdam(keras.optimizers.Adam):
    """Adam that updates only the embedding rows a batch touches (see the module docstring).

    Same arguments as ``keras.optimizers.Adam`` (``amsgrad`` is not supported for sparse gradients:
    with it every gradient gets the dense update). Serialisable; both Keras modes (tf-keras calls
    ``update_step(gradient, variable)``, Keras 3 adds the learning rate).
    """

    def update_step(self, gradient, variable, learning_rate=None):
        dense_args = (gradient, variable) if IS_LEGACY_KERAS else (gradient, variable, learning_rate)
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(*dense_args)
        if IS_LEGACY_KERAS:
            index = self._index_dict[self._var_key(variable)]
            learning_rate = self.learning_rate
        else:
            index = self._get_variable_index(variable)
        _lazy_update(self, variable, self._momentums[index], self._velocities[index], gradient, learning_rate)
