"""Embedding bytes of a MEC configuration, computed from table shapes alone (before any training).

The numbers follow the pipeline exactly: stage 1 (:func:`tfmec.mec.learn_codes`) picks the tables PQ
makes smaller (:func:`tfmec.mec.stage1.select_fields`) and, with shared codebooks, the sharing groups
(:func:`tfmec.mec.stage1.share_groups`); stage 2 (:func:`tfmec.mec.compress_embeddings`) stores each
chosen table as codes at their width (uint8/uint16, or bit-packed ``uint8[V, ceil(M * bits / 8)]``)
plus float32 codebooks; every other embedding table stays float32. So a tuner can reject a
configuration that would exceed a memory budget without learning its codes.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.layers.bitpack import check_bits, packed_width
from tfmec.mec.codes import code_dtype
from tfmec.mec.compress import head_row_count
from tfmec.mec.stage1 import select_fields, share_groups, subspaces_for


@dataclasses.dataclass(frozen=True)
class TableShape:
    """The shape ``(V, d)`` of one embedding table, standing in for the table in stage 1's field
    selection (which reads only ``.shape``)."""

    shape: tuple


@dataclasses.dataclass
@tfmec_export("tfmec.tuning.EmbeddingTables")
class EmbeddingTables:
    """The embedding tables of a model, as stage 1 sees them.

    ``tables``: ``{key: (V, d)}`` of the tables stage 1 may compress (every ``keras.layers.Embedding``
    found by structure, keyed as :func:`tfmec.mec.tables_from` keys them);
    ``other_bytes``: bytes of every other embedding-table weight (kept as it is).
    """

    tables: dict
    other_bytes: int = 0

    @classmethod
    def of_model(cls, model) -> "EmbeddingTables":
        """The tables of a built Keras model (trained or not: only the shapes are read)."""
        from tfmec.backend import keras
        from tfmec.evaluation import variable_bytes
        from tfmec.graph import find_tables

        tables, other = {}, 0
        for ref in find_tables(model):  # keyed as tfmec.mec.tables_from keys them, shared tables once
            if isinstance(ref.layer, keras.layers.Embedding):
                tables[ref.key] = (ref.input_dim, ref.output_dim)
            else:
                other += variable_bytes(ref.layer.weights)
        return cls(tables, int(other))

    @property
    def original_bytes(self) -> int:
        """Bytes of all tables uncompressed (float32)."""
        return sum(v * d * 4 for v, d in self.tables.values()) + self.other_bytes


def _codes_bytes(vocab_size: int, num_subspaces: int, num_codewords: int, bits: int | None) -> int:
    if bits is None:
        return vocab_size * num_subspaces * np.dtype(code_dtype(num_codewords)).itemsize
    return vocab_size * packed_width(num_subspaces, bits)


@tfmec_export("tfmec.tuning.compressed_embedding_bytes")
def compressed_embedding_bytes(
    tables: EmbeddingTables | Mapping,
    *,
    num_subspaces: int,
    num_codewords: int,
    bits: int | None = None,
    share_codebooks: bool = False,
    rotation: bool = False,
    head_rows: float = 0.0,
    contrastive: bool = True,
) -> int:
    """Bytes of every embedding table after MEC with these settings (what
    :func:`tfmec.evaluation.embedding_bytes` reports for the stage-2 model).

    Args:
        tables: an :class:`EmbeddingTables` or ``{name: (V, d)}``.
        num_subspaces, num_codewords: M and K.
        bits: bit-packed code width (``--bits``), None for uint8/uint16 codes.
        share_codebooks, rotation: as in :func:`tfmec.mec.learn_codes`.
        head_rows: exact head rows per private table (``RunConfig.head_rows``: a share below 1, else
            a count), ``H * d * 4`` bytes each.
        contrastive: the stage-2 layers train with a contrastive term (``beta > 0``): each layer of
            width ``d > 1`` then holds an 8-byte step counter for its negatives.
    """
    if not isinstance(tables, EmbeddingTables):
        tables = EmbeddingTables(dict(tables))
    if bits is not None:
        check_bits(bits, num_codewords)
    code_dtype(num_codewords)
    shapes = {name: TableShape(tuple(shape)) for name, shape in tables.tables.items()}
    chosen = select_fields(shapes, num_subspaces, num_codewords, rotation)
    groups = {}
    if share_codebooks:
        groups = share_groups(shapes, list(shapes), set(chosen), num_subspaces, num_codewords, rotation)
        grouped = {n for names in groups.values() for n in names}
        chosen = [n for n in shapes if n in grouped or n in chosen]
    grouped = {n for names in groups.values() for n in names}
    total = tables.other_bytes
    for name, (v, d) in tables.tables.items():
        if name not in chosen:
            total += v * d * 4
        elif name not in grouped:
            m = subspaces_for(d, num_subspaces)
            total += _codes_bytes(v, m, num_codewords, bits) + num_codewords * d * 4
            total += d * d * 4 if rotation and d > 1 else 0
            total += head_row_count(head_rows, name, v) * d * 4
            total += 8 if contrastive and d > 1 else 0
    for names in groups.values():
        v = sum(tables.tables[n][0] for n in names)
        d = tables.tables[names[0]][1]
        m = subspaces_for(d, num_subspaces)
        total += _codes_bytes(v, m, num_codewords, bits) + num_codewords * d * 4
        total += d * d * 4 if rotation and d > 1 else 0
        total += 8 if contrastive and d > 1 else 0
    return int(total)


__all__ = ["EmbeddingTables", "TableShape", "compressed_embedding_bytes"]
