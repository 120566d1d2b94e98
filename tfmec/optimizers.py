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

from tfmec.backend import IS_LEGACY_KERAS, keras, register


def _sparse_rows(gradient: tf.IndexedSlices):
    """``(unique row ids int[U], summed row gradients [U, d])`` of an ``IndexedSlices`` gradient."""
    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    return rows, values


def _scatter_update(variable, slices):
    variable.scatter_update(slices)


def _scatter_sub(variable, slices):
    variable.scatter_sub(slices)


def _lazy_update(variable, m, v, gradient, lr, beta_1, beta_2, epsilon, iterations,
                 assign=_scatter_update, assign_sub=_scatter_sub):
    """The lazy Adam step on the rows of ``gradient`` (``tf.IndexedSlices`` of ``variable [V, d]``);
    ``assign(var, IndexedSlices)`` / ``assign_sub(var, IndexedSlices)`` write the rows."""
    dtype = variable.dtype
    rows, g = _sparse_rows(gradient)
    g = tf.cast(g, dtype)
    t = tf.cast(iterations + 1, dtype)
    b1, b2 = tf.cast(beta_1, dtype), tf.cast(beta_2, dtype)
    alpha = tf.cast(lr, dtype) * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
    m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * g
    v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(g)
    assign(m, tf.IndexedSlices(m_rows, rows))
    assign(v, tf.IndexedSlices(v_rows, rows))
    assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(epsilon, dtype)), rows))


if IS_LEGACY_KERAS:

    @register
    class LazyAdam(keras.optimizers.Adam):
        """Adam that updates only the embedding rows a batch touches (see the module docstring).

        Same arguments as ``keras.optimizers.Adam`` (``amsgrad`` is not supported for sparse
        gradients). Serialisable; works under ``tf.distribute``.
        """

        def update_step(self, gradient, variable):
            if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
                return super().update_step(gradient, variable)
            key = self._var_key(variable)
            m = self._momentums[self._index_dict[key]]
            v = self._velocities[self._index_dict[key]]
            _lazy_update(variable, m, v, gradient, self.learning_rate, self.beta_1, self.beta_2, self.epsilon,
                         self.iterations)

else:

    @register
    class LazyAdam(keras.optimizers.Adam):
        """Adam that updates only the embedding rows a batch touches (see the module docstring).

        Same arguments as ``keras.optimizers.Adam`` (``amsgrad`` is not supported for sparse
        gradients). Serialisable; works under ``tf.distribute``.
        """

        def update_step(self, gradient, variable, learning_rate):
            if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
                return super().update_step(gradient, variable, learning_rate)
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            # Keras 3's TF optimizer turns an IndexedSlices value of assign / assign_sub into a scatter
            _lazy_update(variable, m, v, gradient, learning_rate, self.beta_1, self.beta_2, self.epsilon,
                         self.iterations, assign=self.assign, assign_sub=self.assign_sub)
