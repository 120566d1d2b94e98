"""``count_ids``: how often each row of each embedding table is looked up, measured through the
model's own preprocessing.

A user's model may turn raw values into ids itself (``StringLookup``, ``IntegerLookup``, ``Hashing``,
arbitrary code in ``call``), so counting the raw values of a column would count the wrong thing.
:func:`count_ids` runs the model (``training=False``) over a dataset and records the ids each table
layer receives (:mod:`tfmec.graph.capture`), whatever produced them. The result is keyed like every
other table mapping of tfmec (:func:`tfmec.graph.find_tables`) and is what :func:`tfmec.mec.learn_codes`
takes as ``frequencies``.
"""
from __future__ import annotations

import warnings

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.graph import find_tables
from tfmec.graph.capture import run_capturing


@tfmec_export("tfmec.mec.count_ids")
def count_ids(model, dataset, *, max_batches: int | None = None, progress: bool = True) -> dict:
    """Per table, how many times each row is looked up when ``model`` runs on ``dataset``.

    Args:
        model: any Keras model (functional, subclassed, nested; tables found by structure).
        dataset: a ``tf.data.Dataset`` (or iterable) of ``(features, label)`` batches or bare features,
            in the form the model takes (raw strings when the model holds its own lookups).
        max_batches: count only this many batches.
        progress: show a progress bar.
    Returns:
        ``{table key: int64[input_dim]}``: row ``i`` looked up ``counts[i]`` times (every position of a
        ``[batch, length]`` id tensor counts; with ``mask_zero=True`` the padding id 0 is not counted).
        A table called from several places (a shared table) gets one array counting every call.
    Raises:
        ValueError: a model without embedding tables, a table the forward pass never reaches, ids
            outside ``[0, input_dim)`` (named with the table and the offending id), or empty data.
    """
    tables = find_tables(model)
    if not tables:
        raise ValueError(f"count_ids: model {getattr(model, 'name', model)!r} has no embedding tables "
                         f"(keras.layers.Embedding or tfmec table layers)")
    counts = [np.zeros(t.input_dim, np.int64) for t in tables]

    def reduce(i, arrays):
        ref = tables[i]
        for ids in arrays:
            ids = np.asarray(ids).reshape(-1).astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= ref.input_dim):
                bad = int(ids.min() if ids.min() < 0 else ids.max())
                raise ValueError(f"count_ids: table {ref.key!r} ({ref.path}) has {ref.input_dim} rows but receives "
                                 f"id {bad}; the model's preprocessing produces ids outside the table")
            counts[i] += np.bincount(ids, minlength=ref.input_dim)

    batches = run_capturing(model, [t.layer for t in tables], dataset, reduce, what="inputs",
                            max_batches=max_batches, progress="counting ids" if progress else None)
    if batches == 0:
        raise ValueError("count_ids: the dataset yielded no batches")
    out = {}
    for ref, c in zip(tables, counts):
        if getattr(ref.layer, "mask_zero", False):
            c[0] = 0
        if c.sum() == 0:
            warnings.warn(f"count_ids: table {ref.key!r} ({ref.path}) received no ids", stacklevel=2)
        out[ref.key] = c
    return out


__all__ = ["count_ids"]
