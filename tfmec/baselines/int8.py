"""Post-training int8 quantisation of a trained model's embedding tables (method ``int8``).

Every ``keras.layers.Embedding`` of a model (any kind; :func:`tfmec.graph.swap.swap_layers`) becomes an :class:`~tfmec.layers.Int8Embedding`
holding the same table as ``int8`` values times a ``float32`` step (symmetric, abs-max), chosen per
table:

* ``d >= ROW_SCALE_MIN_DIM`` (8): one step per row, as Keras 3's ``Embedding.quantize("int8")`` does;
  the step costs 4 bytes against the row's ``d`` bytes (``d = 16``: 64 -> 20 bytes a row, 3.2x);
* narrower tables (the ``d = 1`` first-order weights): one step for the whole table, because a
  per-row step would cost more than the row (``d = 1``: 4 -> 1 byte a row, 4x).

Only the tables change; every other layer (the MLP included) keeps its float32 weights, so a
comparison with MEC is a comparison of tables. Nothing is trained afterwards.
"""
from __future__ import annotations

import numpy as np

from tfmec.backend import keras
from tfmec.layers.int8_embedding import Int8Embedding
from tfmec.graph import find_tables, resolve_table
from tfmec.graph.swap import swap_layers

ROW_SCALE_MIN_DIM = 8
"""Tables at least this wide get one step per row; narrower ones one step per table."""


def quantize_embeddings(model, *, row_scale_min_dim: int = ROW_SCALE_MIN_DIM, layers=None, inplace: bool = False):
    """A copy of ``model`` whose embedding tables are int8.

    Args:
        model: any Keras model with ``keras.layers.Embedding`` tables (``[V, d]`` each), built and
            trained; tables found by structure (:func:`tfmec.graph.find_tables`), shared ones once.
        row_scale_min_dim: tables with ``d >=`` this get a step per row, the others one per table.
        layers: the tables to quantise, by key, layer name or path (default: every Embedding).
        inplace: swap inside a subclassed ``model`` itself (see :func:`tfmec.graph.swap.swap_layers`).

    Returns:
        ``(new_model, report)``: a copy of ``model`` (not compiled; the input model is untouched) and
        ``report = {layer name: {"rows", "dim", "path",
        "per_row_scale", "bytes_before", "bytes_after", "max_abs_error"}}`` where ``max_abs_error`` is
        the largest ``|E - q * step|`` over the table (at most half a step).

    Raises:
        ValueError: when ``layers`` names a layer that is not an Embedding of the model.
    """
    tables = [ref for ref in find_tables(model) if isinstance(ref.layer, keras.layers.Embedding)]
    chosen = tables if layers is None else [resolve_table(tables, str(name), "layers") for name in layers]
    chosen_ids = {id(ref.layer): ref for ref in chosen}
    report = {}

    def replace(layer):
        ref = chosen_ids.get(id(layer))
        if ref is None:
            return None
        table = np.asarray(layer.get_weights()[0], dtype=np.float32)
        v, d = table.shape
        new = Int8Embedding.from_embedding(layer, per_row_scale=d >= int(row_scale_min_dim))
        new.build(None)
        err = float(np.abs(new.dequantized_table() - table).max()) if table.size else 0.0
        report[layer.name] = {"rows": int(v), "dim": int(d), "per_row_scale": bool(new.per_row_scale),
                           "bytes_before": int(table.nbytes), "bytes_after": new.storage_bytes,
                           "max_abs_error": err, "path": ref.path}
        return new

    new_model, _ = swap_layers(model, replace, inplace=inplace)
    return new_model, report


__all__ = ["quantize_embeddings", "ROW_SCALE_MIN_DIM"]
