"""The hashing trick sized to a bytes budget (method ``hash``).

Each large table keeps ``B < V`` rows and its ids are hashed into them in the graph
(:class:`~tfmec.layers.HashedEmbedding`); the model is then trained from scratch, which is what the
hashing trick is.

**Allocation rule: one bucket cap for every table.** With tables ``t`` of ``V_t`` ids and width
``d_t`` (the zoo's ``embedding_<field>`` and ``linear_<field>``), a cap ``C`` gives table ``t``
``B_t = min(V_t, C)`` rows and the tables hold ``sum_t 4 d_t min(V_t, C)`` bytes (float32).
:func:`allocate_buckets` picks the largest ``C`` whose bytes fit the budget. A table with
``V_t <= C`` already fits under the cap and stays an ordinary, unhashed table; every larger table is
hashed into exactly ``C`` rows, so all hashed fields get the same number of buckets (the common
practice of one hash size per feature, e.g. ``hash_bucket_size`` of TensorFlow's feature columns).
A field's tables (its embedding and its first-order weight) have the same ``V`` and therefore the
same ``B``, and they use the same hash (salted by the field name), so the ids that collide in one
collide in the other, as when the raw value is hashed once.
"""
from __future__ import annotations

import dataclasses
import zlib

from tfmec.api_export import tfmec_export
from tfmec.validation import BudgetTooSmallError
from tfmec.layers._utils import derive_seed
from tfmec.layers.hashed_embedding import HashedEmbedding

FLOAT_BYTES = 4


@tfmec_export("tfmec.baselines.TableShape")
@dataclasses.dataclass(frozen=True)
class TableShape:
    """One embedding table of a model: layer ``name``, categorical ``field``, ``rows`` (``V``) and
    ``dim`` (``d``)."""

    name: str
    field: str
    rows: int
    dim: int

    @property
    def bytes(self) -> int:
        """``4 V d``: the float32 table."""
        return FLOAT_BYTES * self.rows * self.dim


@tfmec_export("tfmec.baselines.probe_tables")
def probe_tables(build) -> list:
    """The embedding tables a model builder makes, without allocating them.

    Args:
        build: ``build(embedding_factory) -> model`` (e.g. ``RunContext.build``); it is called once
            with a factory that records each ``(field, dim, name)`` and returns a one-row
            :class:`HashedEmbedding`, so even a 10^7-row table costs nothing here.

    Returns:
        ``[TableShape]`` in the order the factory was called.
    """
    seen = []

    def record(field, dim, name):
        seen.append(TableShape(name=str(name), field=field.name, rows=int(field.vocab_size), dim=int(dim)))
        return HashedEmbedding(int(field.vocab_size), 1, int(dim), name=name)

    build(record)
    return seen


@tfmec_export("tfmec.baselines.table_bytes")
def table_bytes(tables, buckets: dict | None = None) -> int:
    """Bytes of ``tables`` (``[TableShape]``) at float32, with ``buckets = {name: B}`` rows where given."""
    buckets = buckets or {}
    return sum(FLOAT_BYTES * min(t.rows, int(buckets.get(t.name, t.rows))) * t.dim for t in tables)


def largest_cap(total, budget: int, largest: int) -> int:
    """The largest row cap ``C`` in ``[1, largest]`` with ``total(C) <= budget``, by bisection
    (``total`` non-decreasing in the cap, ``total(1) <= budget``): the one-cap rule shared by the
    hashing trick, int8/int4 tables sized to a budget and quotient-remainder tables."""
    lo, hi = 1, int(largest)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if total(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@tfmec_export("tfmec.baselines.allocate_buckets")
def allocate_buckets(tables, budget_bytes: int) -> dict:
    """Rows per table under the one-cap rule (module docstring) so that the tables fit ``budget_bytes``.

    Args:
        tables: ``[TableShape]``.
        budget_bytes: the bytes the tables may hold (float32).

    Returns:
        ``{"cap": C, "buckets": {name: B_t}, "hashed": [names with B_t < V_t], "bytes": total}`` with
        ``total = sum_t 4 d_t B_t <= budget_bytes``; ``C`` is the largest cap that fits (when the full
        tables fit, ``C = max V_t`` and nothing is hashed).

    Raises:
        ValueError: when even one row per table exceeds the budget (the message gives the minimum).
    """
    tables = list(tables)
    if not tables:
        raise ValueError("allocate_buckets: the model has no embedding tables to hash")
    budget = int(budget_bytes)
    largest = max(t.rows for t in tables)

    def total(cap):
        return sum(FLOAT_BYTES * min(t.rows, cap) * t.dim for t in tables)

    if total(1) > budget:
        raise BudgetTooSmallError(f"a hashing budget of {budget:,} bytes cannot hold one row per table; "
                         f"it needs at least {total(1):,} bytes")
    lo = largest_cap(total, budget, largest)
    buckets = {t.name: min(t.rows, lo) for t in tables}
    return {"cap": lo, "buckets": buckets, "hashed": [t.name for t in tables if buckets[t.name] < t.rows],
            "bytes": total(lo)}


def field_salt(field_name: str) -> int:
    """The hash salt of a field: CRC-32 of its name (every table of the field hashes alike)."""
    return zlib.crc32(str(field_name).encode("utf-8"))


@tfmec_export("tfmec.baselines.hashed_embedding_factory")
def hashed_embedding_factory(buckets: dict, seed: int | None = None):
    """An embedding factory ``(field, dim, name) -> layer`` for :func:`tfmec.models.build_model`.

    Args:
        buckets: ``{layer name: B}``; a table gets a :class:`HashedEmbedding` of ``B`` rows when
            ``B < field.vocab_size``, else an ordinary ``keras.layers.Embedding``.
        seed: seed of the tables' initializers (uniform in [-0.05, 0.05], Keras's Embedding default),
            derived per table.

    Returns:
        the factory; each layer maps ids ``[batch]`` to ``[batch, dim]``.
    """
    from tfmec.models.embedding import default_embedding_factory

    counter = iter(range(10**6))

    def factory(field, dim, name):
        table_seed = derive_seed(seed, next(counter))
        b = buckets.get(name)
        if b is None or int(b) >= int(field.vocab_size):
            return default_embedding_factory(field, dim, name, seed=table_seed)
        return HashedEmbedding(int(field.vocab_size), int(b), int(dim), salt=field_salt(field.name),
                               embeddings_initializer="uniform", seed=table_seed, name=name)

    return factory


@tfmec_export("tfmec.baselines.hash_embeddings")
def hash_embeddings(model, budget_bytes: int | None = None, *, buckets: dict | None = None, seed: int | None = None,
                    inplace: bool = False):
    """A copy of ``model`` whose embedding tables use the hashing trick, sized to a byte budget.

    The user's own model, whatever its kind (:func:`tfmec.graph.swap.swap_layers`): every
    ``keras.layers.Embedding`` (found by structure, a shared table once) with more rows than its
    bucket count becomes a :class:`~tfmec.layers.HashedEmbedding` of ``B`` rows (salted by the table's
    key, ``mask_zero`` copied), freshly initialised: the hashing trick trains the model again.

    Args:
        model: any Keras model with ``keras.layers.Embedding`` tables.
        budget_bytes: bytes for all tables together (float32); the bucket cap from :func:`allocate_buckets`.
        buckets: ``{table key: B}`` instead of a budget (tables not named keep their rows).
        seed: seed of the new tables' initialisers.
        inplace: swap inside a subclassed ``model`` itself.
    Returns:
        ``(new_model, buckets)``: the copy (uncompiled) and ``{table key: B}`` of the hashed tables.
    Raises:
        ValueError: neither or both of ``budget_bytes`` and ``buckets``, or a budget no table fits.
    """
    from tfmec.backend import keras
    from tfmec.graph import find_tables, keyed_by_table
    from tfmec.graph.swap import swap_layers

    if (budget_bytes is None) == (buckets is None):
        raise ValueError("hash_embeddings: give exactly one of budget_bytes and buckets")
    refs = [r for r in find_tables(model) if isinstance(r.layer, keras.layers.Embedding)]
    if buckets is None:
        shapes = [TableShape(r.key, r.key, r.input_dim, r.output_dim) for r in refs]
        buckets = allocate_buckets(shapes, int(budget_bytes))["buckets"]
    else:
        buckets = keyed_by_table(refs, buckets, "buckets")
    by_layer = {id(r.layer): r for r in refs if r.key in buckets and int(buckets[r.key]) < r.input_dim}

    def replace(layer):
        ref = by_layer.get(id(layer))
        if ref is None:
            return None
        return HashedEmbedding(ref.input_dim, int(buckets[ref.key]), ref.output_dim, salt=field_salt(ref.key),
                               seed=derive_seed(seed, field_salt(ref.key) % 100_003), name=layer.name,
                               mask_zero=bool(getattr(layer, "mask_zero", False)))

    new, _ = swap_layers(model, replace, inplace=inplace)
    return new, {ref.key: int(buckets[ref.key]) for ref in by_layer.values()}


__all__ = ["TableShape", "probe_tables", "table_bytes", "allocate_buckets", "hashed_embedding_factory", "field_salt", "hash_embeddings"]
