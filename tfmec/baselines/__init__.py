"""Competing methods that ``tfmec run`` measures MEC and AFM against.

* :mod:`tfmec.baselines.int8`: post-training int8 / int4 quantisation of a trained model's embedding
  tables (:func:`quantize_embeddings`, ``bits=8|4``, :class:`~tfmec.layers.Int8Embedding`), sized to a
  byte budget by hashing ids into fewer quantised rows when quantisation alone does not fit
  (``budget_bytes=``, :func:`allocate_quantized`, :func:`quantized_buckets`).
* :mod:`tfmec.baselines.hashing`: the hashing trick sized to a bytes budget (:func:`allocate_buckets`,
  :func:`hashed_embedding_factory`, and :func:`hash_embeddings` for a user's own model,
  :class:`~tfmec.layers.HashedEmbedding`).
* :mod:`tfmec.baselines.qr`: quotient-remainder embeddings sized to a bytes budget (:func:`allocate_qr`,
  :func:`qr_embedding_factory`, and :func:`qr_embeddings` for a user's own model,
  :class:`~tfmec.layers.qr_embedding.QREmbedding`).
"""
from tfmec.api_export import public_names
from tfmec.baselines import hashing, int8, qr

# every name exported as tfmec.baselines.* by the modules above (@tfmec_export, export_value)
__all__ = public_names(globals(), hashing, int8, qr)
