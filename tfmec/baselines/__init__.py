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
from tfmec.baselines.hashing import (
    TableShape,
    allocate_buckets,
    hash_embeddings,
    hashed_embedding_factory,
    probe_tables,
    table_bytes,
)
from tfmec.baselines.int8 import (
    ROW_SCALE_MIN_DIM,
    allocate_quantized,
    quantize_embeddings,
    quantized_buckets,
    quantized_row_bytes,
)
from tfmec.baselines.qr import allocate_qr, qr_embedding_factory, qr_embeddings

__all__ = ["quantize_embeddings", "ROW_SCALE_MIN_DIM", "quantized_row_bytes", "allocate_quantized", "quantized_buckets",
           "TableShape", "probe_tables", "table_bytes", "allocate_buckets", "hashed_embedding_factory",
           "hash_embeddings", "allocate_qr", "qr_embedding_factory", "qr_embeddings"]
