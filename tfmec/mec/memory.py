"""Memory accounting of embedding tables, in bytes at their stored width (not parameter counts)."""
from __future__ import annotations

import dataclasses

from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.evaluation import embedding_layers, model_bytes, variable_bytes
from tfmec.graph import table_dims


@dataclasses.dataclass
class TableBytes:
    """One embedding table: its bytes now and as an uncompressed float32 ``[V, d]`` table. A shared
    codebook layer is one entry (its codebooks counted once): ``V`` is the sum over its ``fields``."""

    layer: str
    kind: str  # "embedding", "quantized" or "shared_quantized"
    vocab_size: int
    dim: int
    bytes: int
    original_bytes: int
    fields: list | None = None


def _table_bytes(layer) -> TableBytes:
    if getattr(layer, "input_dims", None) is not None and hasattr(layer, "storage_bytes"):
        v, d = int(layer.input_dim), int(layer.output_dim)
        names = layer.field_names or [str(i) for i in range(len(layer.input_dims))]
        return TableBytes(layer.name, "shared_quantized", v, d, int(layer.storage_bytes), v * d * 4, list(names))
    if getattr(layer, "num_subspaces", None) is not None and hasattr(layer, "storage_bytes"):
        v, d = int(layer.input_dim), int(layer.output_dim)
        return TableBytes(layer.name, "quantized", v, d, int(layer.storage_bytes), v * d * 4)
    v, d = table_dims(layer)
    kind = "embedding" if isinstance(layer, keras.layers.Embedding) else type(layer).__name__
    return TableBytes(layer.name, kind, v, d, variable_bytes(layer.weights), v * d * 4)


@tfmec_export("tfmec.mec.memory_report")
def memory_report(model) -> dict:
    """Bytes of every embedding table of ``model`` and the compression ratios.

    Returns a dict with ``tables`` (a list of :class:`TableBytes` as dicts), ``embedding_bytes`` (as
    stored: codes at their width, codebooks float32, uncompressed tables), ``original_embedding_bytes``
    (every table as float32 ``[V, d]``), ``model_bytes`` / ``original_model_bytes`` (all weights) and
    the two ratios ``compression_ratio_embeddings`` and ``compression_ratio_model``.
    """
    tables = [_table_bytes(layer) for layer in embedding_layers(model)]  # by structure, shared tables once
    emb = sum(t.bytes for t in tables)
    orig = sum(t.original_bytes for t in tables)
    total = model_bytes(model)
    orig_total = total - emb + orig
    return {
        "tables": [dataclasses.asdict(t) for t in tables],
        "embedding_bytes": emb,
        "original_embedding_bytes": orig,
        "model_bytes": total,
        "original_model_bytes": orig_total,
        "compression_ratio_embeddings": orig / emb if emb else 1.0,
        "compression_ratio_model": orig_total / total if total else 1.0,
    }
