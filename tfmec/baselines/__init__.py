"""Competing methods that ``tfmec run`` measures MEC and AFM against.

* :mod:`tfmec.baselines.int8`: post-training int8 quantisation of a trained model's embedding tables
  (:func:`quantize_embeddings`, :class:`~tfmec.layers.Int8Embedding`).
* :mod:`tfmec.baselines.hashing`: the hashing trick sized to a bytes budget (:func:`allocate_buckets`,
  :func:`hashed_embedding_factory`, and :func:`hash_embeddings` for a user's own model,
  :class:`~tfmec.layers.HashedEmbedding`).
"""
from tfmec.baselines.hashing import (
    TableShape,
    allocate_buckets,
    hash_embeddings,
    hashed_embedding_factory,
    probe_tables,
    table_bytes,
)
from tfmec.baselines.int8 import ROW_SCALE_MIN_DIM, quantize_embeddings

__all__ = ["quantize_embeddings", "ROW_SCALE_MIN_DIM", "TableShape", "probe_tables", "table_bytes",
           "allocate_buckets", "hashed_embedding_factory", "hash_embeddings"]
