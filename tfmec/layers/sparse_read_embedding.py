"""An embedding table whose lookup reads only the looked-up rows of its variable.

Keras 3's ``Embedding.call`` is ``ops.take(self.embeddings, ids)``: it converts the table variable to a
tensor (a full read of ``[V, d]``) and then gathers. Once an optimizer has applied a sparse update to
the variable (a scatter, as :class:`tfmec.optimizers.LazyAdam` does), TensorFlow keeps it in
copy-on-read mode and every full read copies the whole buffer: for a 10^7 x 40 table that is 1.6 GB per
training step, whatever the batch (``bench/scale_sweep.py`` measured it). :class:`SparseReadEmbedding`
gathers from the ``tf.Variable`` itself (``ResourceGather``), which reads the batch's rows only; the
gradient is the same ``tf.IndexedSlices``. tf-keras's ``Embedding`` already looks rows up that way.
"""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import IS_LEGACY_KERAS, keras, register, tf_variable


@tfmec_export("tfmec.layers.SparseReadEmbedding")
@register
class SparseReadEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` with a lookup that reads only the rows it returns (module docstring).

    Example::

        layer = tfmec.layers.SparseReadEmbedding(1000, 8)
        y = layer(tf.constant([[1, 2, 3]]))   # shape (1, 3, 8)

    Same arguments, weights, serialisation and outputs as ``keras.layers.Embedding``: ids ``[...]``
    (int; ``[batch]``, ``[batch, 1]``, ``[batch, length]``...) -> ``[..., output_dim]``, and Keras's own
    ``mask_zero`` / ``compute_mask`` (bool ``ids != 0``, the ids' shape) / ``supports_masking``. LoRA
    and Keras's quantised modes take Keras's own path; so does tf-keras, whose lookup already reads
    rows sparsely. tfmec's zoo models use it for every table
    (:func:`tfmec.models.embedding.default_embedding_factory`); every ``isinstance(layer,
    keras.layers.Embedding)`` check still holds.
    """

    def call(self, inputs):
        if IS_LEGACY_KERAS or getattr(self, "lora_enabled", False):
            return super().call(inputs)
        ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
        return tf.cast(tf.gather(tf_variable(self._embeddings), ids), self.compute_dtype)


__all__ = ["SparseReadEmbedding"]
