"""Quotient-remainder embeddings sized to a bytes budget (method ``qr``).

Each large table of ``V`` ids becomes a :class:`~tfmec.layers.qr_embedding.QREmbedding`: a quotient
table of ``ceil(V / B)`` rows and a remainder table of ``B`` rows whose rows are multiplied
element-wise; the model is then trained from scratch, as the hashing trick is.

**Allocation rule: one row cap for every table,** as :func:`tfmec.baselines.allocate_buckets` does for
the hashing trick. A cap ``C`` gives table ``t`` (``V_t`` ids, width ``d_t``):

* ``V_t`` rows (an ordinary table, unchanged) when ``V_t <= C``, or when two QR tables cannot hold
  fewer rows than ``V_t`` (tiny tables: ``min_B ceil(V/B) + B >= V``);
* else the QR tables with the most rows ``ceil(V_t / B) + B <= C``, i.e. the largest such ``B``
  (``B >= ceil(sqrt(V_t))``, the remainder table the larger of the two); when even the fewest rows,
  ``ceil(V_t / B) + B`` at ``B = ceil(sqrt(V_t))`` (about ``2 sqrt(V_t)``), exceed ``C``, the table
  takes those fewest rows.

The tables hold ``sum_t 4 d_t rows_t(C)`` bytes (float32), nondecreasing in ``C``;
:func:`allocate_qr` takes the largest ``C`` that fits the budget. A budget below the fewest rows of
every table (``C = 1``) raises ``ValueError`` naming that minimum. A field's tables (its embedding and
first-order weight, same ``V``) get the same ``B``.
"""
from __future__ import annotations

import math

from tfmec.api_export import tfmec_export
from tfmec.validation import BudgetTooSmallError
from tfmec.baselines.hashing import FLOAT_BYTES, TableShape, field_salt, largest_cap
from tfmec.layers._utils import derive_seed
from tfmec.layers.qr_embedding import QREmbedding, quotient_rows


def _qr_rows(v: int, b: int) -> int:
    return quotient_rows(v, b) + b


def fewest_qr_rows(v: int) -> tuple[int, int]:
    """``(rows, B)``: the fewest rows ``ceil(V / B) + B`` two QR tables of ``V`` ids can hold, at
    ``B = ceil(sqrt(V))``."""
    v = int(v)
    b = math.isqrt(max(v, 1) - 1) + 1  # ceil(sqrt(V))
    return _qr_rows(v, b), b


def qr_buckets_for(v: int, cap: int) -> int | None:
    """The remainder rows ``B`` of a table of ``V`` ids under row cap ``cap`` (module docstring), or None
    when the table stays an ordinary one (``V <= cap``, or QR cannot save rows)."""
    v, cap = int(v), int(cap)
    least, b0 = fewest_qr_rows(v)
    if v <= cap or least >= v:
        return None
    if least >= cap:
        return b0
    # for B >= ceil(sqrt V), ceil(V / B) + B is nondecreasing in B: the largest B within the cap
    lo, hi = b0, v - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _qr_rows(v, mid) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _rows(t: TableShape, cap: int) -> int:
    b = qr_buckets_for(t.rows, cap)
    return t.rows if b is None else _qr_rows(t.rows, b)


@tfmec_export("tfmec.baselines.allocate_qr")
def allocate_qr(tables, budget_bytes: int, fixed_bytes: int = 0) -> dict:
    """QR tables under the one-cap rule (module docstring) so that ``tables`` fit ``budget_bytes``.

    Args:
        tables: ``[TableShape]`` (``name``, ``rows`` = ``V``, ``dim`` = ``d``).
        budget_bytes: the bytes all tables may hold (float32).
        fixed_bytes: bytes of other tables of the model that stay as they are (counted in the budget).

    Returns:
        ``{"cap": C, "buckets": {name: B}, "qr": [names made QR], "rows": {name: rows held},
        "bytes": total}`` with ``total = fixed_bytes + sum_t 4 d_t rows_t <= budget_bytes``; ``buckets``
        names the QR tables only.

    Raises:
        ValueError: when the budget is below the fewest rows of every table (the message gives the
        minimum bytes).
    """
    tables = list(tables)
    if not tables:
        raise ValueError("allocate_qr: the model has no embedding tables")
    budget = int(budget_bytes)

    def total(cap):
        return int(fixed_bytes) + sum(FLOAT_BYTES * t.dim * _rows(t, cap) for t in tables)

    if total(1) > budget:
        raise BudgetTooSmallError(f"a quotient-remainder budget of {budget:,} bytes is below what the smallest QR tables "
                         f"take; it needs at least {total(1):,} bytes")
    lo = largest_cap(total, budget, max(t.rows for t in tables))
    buckets = {t.name: qr_buckets_for(t.rows, lo) for t in tables}
    buckets = {name: b for name, b in buckets.items() if b is not None}
    return {"cap": lo, "buckets": buckets, "qr": [t.name for t in tables if t.name in buckets],
            "rows": {t.name: _rows(t, lo) for t in tables}, "bytes": total(lo)}


@tfmec_export("tfmec.baselines.qr_embedding_factory")
def qr_embedding_factory(buckets: dict, seed: int | None = None):
    """An embedding factory ``(field, dim, name) -> layer`` for :func:`tfmec.models.build_model`.

    Args:
        buckets: ``{layer name: B}`` (``allocate_qr(...)["buckets"]``); a table named there gets a
            :class:`QREmbedding` with ``B`` remainder rows, the others an ordinary Embedding.
        seed: seed of the tables' initializers, derived per table.
    """
    from tfmec.models.embedding import default_embedding_factory

    counter = iter(range(10**6))

    def factory(field, dim, name):
        table_seed = derive_seed(seed, next(counter))
        b = buckets.get(name)
        if b is None:
            return default_embedding_factory(field, dim, name, seed=table_seed)
        return QREmbedding(int(field.vocab_size), int(dim), int(b), seed=table_seed, name=name)

    return factory


@tfmec_export("tfmec.baselines.qr_embeddings")
def qr_embeddings(model, budget_bytes: int, *, seed: int | None = None, inplace: bool = False):
    """A copy of ``model`` whose embedding tables are quotient-remainder tables, within a byte budget.

    The user's own model, whatever its kind (:func:`tfmec.graph.swap.swap_layers`): every
    ``keras.layers.Embedding`` (found by structure, a shared table once and still shared) that the
    allocation (:func:`allocate_qr`, module docstring) makes QR becomes a
    :class:`~tfmec.layers.qr_embedding.QREmbedding` (``mask_zero`` copied), freshly initialised: the model
    is to be trained again. Other tables keep their rows; tfmec table layers that are not
    ``Embedding`` (already compressed ones) are left as they are and their bytes count in the budget.

    Args:
        model: any Keras model with ``keras.layers.Embedding`` tables.
        budget_bytes: bytes for all embedding tables together.
        seed: seed of the new tables' initialisers.
        inplace: swap inside a subclassed ``model`` itself.

    Returns:
        ``(new_model, plan)``: the copy (uncompiled) and ``allocate_qr``'s plan keyed by table key
        (``cap``, ``buckets``, ``qr``, ``rows``, ``bytes``) plus ``budget_bytes``; the new model's
        embedding bytes equal ``plan["bytes"] <= budget_bytes``.

    Raises:
        ValueError: a budget below the smallest QR tables (the message names the minimum bytes).
    """
    from tfmec.backend import keras
    from tfmec.evaluation import variable_bytes
    from tfmec.graph import find_tables
    from tfmec.graph.swap import swap_layers

    refs = find_tables(model)
    embeddings = [r for r in refs if isinstance(r.layer, keras.layers.Embedding)]
    fixed = sum(variable_bytes(r.layer.weights) for r in refs if not isinstance(r.layer, keras.layers.Embedding))
    shapes = [TableShape(r.key, r.key, r.input_dim, r.output_dim) for r in embeddings]
    plan = allocate_qr(shapes, int(budget_bytes), fixed_bytes=fixed)
    plan["budget_bytes"] = int(budget_bytes)
    by_layer = {id(r.layer): r for r in embeddings if r.key in plan["buckets"]}

    def replace(layer):
        ref = by_layer.get(id(layer))
        if ref is None:
            return None
        return QREmbedding(ref.input_dim, ref.output_dim, int(plan["buckets"][ref.key]),
                           mask_zero=bool(getattr(layer, "mask_zero", False)),
                           seed=derive_seed(seed, field_salt(ref.key) % 100_003), name=layer.name)

    new, _ = swap_layers(model, replace, inplace=inplace)
    return new, plan


__all__ = ["allocate_qr", "qr_buckets_for", "fewest_qr_rows", "qr_embedding_factory", "qr_embeddings"]
