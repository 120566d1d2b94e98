"""Post-training int8 / int4 quantisation of a trained model's embedding tables (methods ``int8``, ``int4``).

Every ``keras.layers.Embedding`` of a model (any kind; :func:`tfmec.graph.swap.swap_layers`), and every
:class:`~tfmec.layers.HashedEmbedding` (its rows quantised, its hash kept), becomes an
:class:`~tfmec.layers.Int8Embedding` holding the same table as ``int8`` values (``bits=4``: int4 values,
two per byte) times a ``float32`` step (symmetric, abs-max), chosen per table:

* ``d >= ROW_SCALE_MIN_DIM`` (8): one step per row, as Keras 3's ``Embedding.quantize("int8")`` and
  ``quantize("int4")`` do; the step costs 4 bytes against the row's ``d`` bytes (int8, ``d = 16``:
  64 -> 20 bytes a row, 3.2x; int4: 64 -> 12 bytes, 5.3x);
* narrower tables (the ``d = 1`` first-order weights): one step for the whole table, because a
  per-row step would cost more than the row (``d = 1``: 4 -> 1 byte a row, 4x, for int4 too: a row
  is at least one byte).

Only the tables change; every other layer (the MLP included) keeps its float32 weights, so a
comparison with MEC is a comparison of tables. Nothing is trained afterwards.

**A byte budget** (``budget_bytes=``). Quantisation alone has a fixed ratio (about 4x for int8, 8x
for int4 at large ``d``). When the quantised tables do not fit the budget, ids are hashed into fewer
rows (the hashing trick with int8 / int4 rows, :class:`~tfmec.layers.Int8Embedding` with
``num_buckets``), one row cap ``C`` for every table as :func:`tfmec.baselines.allocate_buckets` does for
float rows: a table of ``V`` rows keeps ``min(V, C)`` quantised rows, ``C`` the largest cap whose bytes
(:func:`quantized_row_bytes` per row, plus a per-table step) fit the budget
(:func:`allocate_quantized`). A table that must shrink is either

* a :class:`~tfmec.layers.HashedEmbedding` already trained with at most ``C`` buckets: its rows are
  quantised as they are (the better route, and what ``tfmec run --method int8|int4`` does: it trains
  the hashing trick at these buckets with the baseline's settings, then quantises it;
  :func:`quantized_buckets` gives the buckets to train with), or
* an ordinary trained ``Embedding``: each bucket's row becomes the mean of the rows of the ids hashed
  into it (weighted by ``counts``, e.g. :func:`tfmec.mec.count_ids`, when given), then quantised: no
  training, so collisions cost accuracy. A ``HashedEmbedding`` with more than ``C`` buckets raises.
"""
from __future__ import annotations

import numpy as np

from tfmec.api_export import export_value, tfmec_export
from tfmec.validation import BudgetTooSmallError
from tfmec.backend import keras
from tfmec.baselines.hashing import TableShape, field_salt, largest_cap
from tfmec.graph import find_tables, keyed_by_table, resolve_table
from tfmec.graph.swap import swap_layers
from tfmec.layers.hashed_embedding import HashedEmbedding, hash_buckets_numpy
from tfmec.layers.int8_embedding import BITS, Int8Embedding, packed_width

ROW_SCALE_MIN_DIM = 8
"""Tables at least this wide get one step per row; narrower ones one step per table."""
export_value("tfmec.baselines.ROW_SCALE_MIN_DIM", ROW_SCALE_MIN_DIM,
             doc="tables at least this wide get one quantisation step per row; narrower ones one per table")


@tfmec_export("tfmec.baselines.quantized_row_bytes")
def quantized_row_bytes(dim: int, bits: int = 8, row_scale_min_dim: int = ROW_SCALE_MIN_DIM) -> tuple[int, int]:
    """``(bytes per row, bytes per table)`` of a quantised table of width ``dim``: ``d`` (int8) or
    ``ceil(d / 2)`` (int4) value bytes plus a 4-byte step per row when ``d >= row_scale_min_dim``, else
    one 4-byte step for the table."""
    per_row = int(dim) >= int(row_scale_min_dim)
    return packed_width(dim, bits) + (4 if per_row else 0), (0 if per_row else 4)


@tfmec_export("tfmec.baselines.allocate_quantized")
def allocate_quantized(tables, budget_bytes: int, bits: int = 8, *, row_scale_min_dim: int = ROW_SCALE_MIN_DIM,
                       fixed_bytes: int = 0) -> dict:
    """Quantised rows per table under the one-cap rule (module docstring) within ``budget_bytes``.

    Args:
        tables: ``[TableShape]`` (``rows`` = the rows a table can keep at most: ``V``, or a hashed
            table's buckets).
        budget_bytes: the bytes the tables may hold.
        bits: 8 or 4.
        row_scale_min_dim: as in :func:`quantize_embeddings`.
        fixed_bytes: bytes of other tables that stay as they are (counted in the budget).

    Returns:
        ``{"cap": C, "buckets": {name: min(rows, C)}, "hashed": [names with fewer rows than they have],
        "bytes": total}``, ``total <= budget_bytes`` (when nothing needs hashing, ``C`` is the largest
        ``rows``).

    Raises:
        ValueError: when even one quantised row per table exceeds the budget (the message gives the
        minimum bytes).
    """
    tables = list(tables)
    if not tables:
        raise ValueError("allocate_quantized: the model has no embedding tables to quantise")
    if bits not in BITS:
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    budget = int(budget_bytes)
    cost = {t.name: quantized_row_bytes(t.dim, bits, row_scale_min_dim) for t in tables}

    def total(cap):
        return int(fixed_bytes) + sum(min(t.rows, cap) * cost[t.name][0] + cost[t.name][1] for t in tables)

    if total(1) > budget:
        raise BudgetTooSmallError(f"an int{bits} budget of {budget:,} bytes cannot hold one quantised row per table; "
                         f"it needs at least {total(1):,} bytes")
    lo = largest_cap(total, budget, max(t.rows for t in tables))
    buckets = {t.name: min(t.rows, lo) for t in tables}
    return {"cap": lo, "buckets": buckets, "hashed": [t.name for t in tables if buckets[t.name] < t.rows],
            "bytes": total(lo)}


def _quantizable(model):
    return [ref for ref in find_tables(model) if isinstance(ref.layer, (keras.layers.Embedding, HashedEmbedding))]


def _fixed_bytes(model, chosen) -> int:
    from tfmec.evaluation import variable_bytes

    ids = {id(ref.layer) for ref in chosen}
    return sum(variable_bytes(ref.layer.weights) for ref in find_tables(model) if id(ref.layer) not in ids)


def _rows_held(ref) -> int:
    return int(ref.layer.num_buckets) if isinstance(ref.layer, HashedEmbedding) else int(ref.input_dim)


@tfmec_export("tfmec.baselines.quantized_buckets")
def quantized_buckets(model, budget_bytes: int, bits: int = 8, *, row_scale_min_dim: int = ROW_SCALE_MIN_DIM,
                      layers=None) -> dict:
    """The plan :func:`quantize_embeddings` follows for ``budget_bytes`` (:func:`allocate_quantized` over
    the model's tables, keyed by table key, other tables' bytes counted as fixed). Its ``buckets`` for
    the ``hashed`` tables are what to give :func:`tfmec.baselines.hash_embeddings` (``buckets=``) to
    train the hashing trick before quantising."""
    tables = _quantizable(model)
    chosen = tables if layers is None else [resolve_table(tables, str(name), "layers") for name in layers]
    shapes = [TableShape(r.key, r.key, _rows_held(r), r.output_dim) for r in chosen]
    plan = allocate_quantized(shapes, budget_bytes, bits, row_scale_min_dim=row_scale_min_dim,
                              fixed_bytes=_fixed_bytes(model, chosen))
    plan.update(budget_bytes=int(budget_bytes), bits=int(bits))
    return plan


def fold_rows(table, num_buckets: int, salt: int = 0, weights=None) -> np.ndarray:
    """``float32[B, d]``: row ``b`` is the (``weights``-weighted) mean of the rows of ``table [V, d]``
    whose ids hash to ``b`` (:func:`~tfmec.layers.hashed_embedding.hash_buckets_numpy`); a bucket whose
    ids all weigh 0 takes their plain mean, a bucket no id reaches is zero."""
    e = np.asarray(table, dtype=np.float32)
    v, d = e.shape
    b = int(num_buckets)
    bucket = hash_buckets_numpy(np.arange(v), b, salt)
    ones = np.bincount(bucket, minlength=b).astype(np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w is not None and w.shape != (v,):
        raise ValueError(f"fold_rows: weights must have {v} entries, got {w.shape}")
    weight = ones if w is None else np.bincount(bucket, weights=w, minlength=b)
    use_w = weight > 0
    out = np.zeros((b, d), dtype=np.float32)
    for j in range(d):
        plain = np.bincount(bucket, weights=e[:, j], minlength=b)
        col = np.divide(plain, ones, out=np.zeros(b), where=ones > 0)
        if w is not None:
            weighted = np.bincount(bucket, weights=e[:, j] * w, minlength=b)
            col = np.where(use_w, np.divide(weighted, weight, out=np.zeros(b), where=use_w), col)
        out[:, j] = col
    return out


@tfmec_export("tfmec.baselines.quantize_embeddings")
def quantize_embeddings(model, *, bits: int = 8, budget_bytes: int | None = None, counts=None,
                        row_scale_min_dim: int = ROW_SCALE_MIN_DIM, layers=None, inplace: bool = False):
    """A copy of ``model`` whose embedding tables are int8 (``bits=4``: int4), within ``budget_bytes``
    when one is given.

    Args:
        model: any Keras model with ``keras.layers.Embedding`` (or ``HashedEmbedding``) tables, built
            and trained; tables found by structure (:func:`tfmec.graph.find_tables`), shared ones once.
        bits: 8 (default) or 4.
        budget_bytes: None (default: every table quantised with all its rows), or the bytes all
            embedding tables may hold; tables are then hashed into fewer quantised rows as needed
            (module docstring). The new model's embedding bytes are at most ``budget_bytes``.
        counts: optional id frequencies ``{table key / layer name: int[V]}`` weighting the rows folded
            into a bucket when a trained ``Embedding`` must be hashed (default: plain means).
        row_scale_min_dim: tables with ``d >=`` this get a step per row, the others one per table.
        layers: the tables to quantise, by key, layer name or path (default: every Embedding and
            HashedEmbedding).
        inplace: swap inside a subclassed ``model`` itself (see :func:`tfmec.graph.swap.swap_layers`).

    Returns:
        ``(new_model, report)``: a copy of ``model`` (not compiled; the input model is untouched) and
        ``report = {layer name: {"rows", "dim", "path", "bits", "per_row_scale", "num_buckets",
        "bytes_before", "bytes_after", "max_abs_error"}}`` where ``num_buckets`` is the hashed rows
        (None: one row per id) and ``max_abs_error`` the largest ``|E - q * step|`` over the stored rows
        (at most half a step; for folded rows, against the folded float rows).

    Raises:
        ValueError: when ``layers`` names a layer that is not a table of the model, for a budget below
        one quantised row per table (the message gives the minimum), or when a ``HashedEmbedding``
        holds more rows than the budget allows.
    """
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"quantize_embeddings: bits must be 8 or 4, got {bits!r}")
    tables = _quantizable(model)
    chosen = tables if layers is None else [resolve_table(tables, str(name), "layers") for name in layers]
    chosen_ids = {id(ref.layer): ref for ref in chosen}
    target = {}  # key -> stored rows under the budget
    if budget_bytes is not None:
        plan = quantized_buckets(model, budget_bytes, bits, row_scale_min_dim=row_scale_min_dim, layers=layers)
        target = {ref.key: plan["buckets"][ref.key] for ref in chosen if plan["buckets"][ref.key] < ref.input_dim}
        for ref in chosen:
            if isinstance(ref.layer, HashedEmbedding) and ref.layer.num_buckets > plan["buckets"][ref.key]:
                raise ValueError(f"table {ref.key!r} is a HashedEmbedding of {ref.layer.num_buckets:,} rows; the "
                                 f"budget of {int(budget_bytes):,} bytes allows {plan['buckets'][ref.key]:,} int{bits} "
                                 f"rows. Train it with at most that many buckets (quantized_buckets gives them)")
    counts = keyed_by_table(chosen, counts, "counts") if counts else {}
    report = {}

    def replace(layer):
        ref = chosen_ids.get(id(layer))
        if ref is None:
            return None
        table = np.asarray(layer.get_weights()[0], dtype=np.float32)
        rows, d = table.shape
        per_row = d >= int(row_scale_min_dim)
        if isinstance(layer, keras.layers.Embedding) and ref.key in target:  # hash a trained table: fold rows
            b, salt = int(target[ref.key]), field_salt(ref.key)
            table = fold_rows(table, b, salt, counts.get(ref.key))
            new = Int8Embedding.from_table(table, per_row_scale=per_row, bits=bits, input_dim=ref.input_dim,
                                           num_buckets=b, salt=salt, name=layer.name, dtype=layer.dtype_policy,
                                           mask_zero=bool(getattr(layer, "mask_zero", False)))
        else:
            new = Int8Embedding.from_embedding(layer, per_row_scale=per_row, bits=bits)
        new.build(None)
        err = float(np.abs(new.dequantized_table() - table).max()) if table.size else 0.0
        report[layer.name] = {"rows": int(ref.input_dim), "dim": int(d), "bits": int(bits), "per_row_scale": per_row,
                              "num_buckets": new.num_buckets, "bytes_before": int(rows * d * 4),
                              "bytes_after": new.storage_bytes, "max_abs_error": err, "path": ref.path}
        return new

    new_model, _ = swap_layers(model, replace, inplace=inplace)
    return new_model, report


__all__ = ["quantize_embeddings", "ROW_SCALE_MIN_DIM", "quantized_row_bytes", "allocate_quantized",
           "quantized_buckets", "fold_rows"]
