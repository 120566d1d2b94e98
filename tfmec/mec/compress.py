"""MEC stage 2: swap a model's embedding layers for :class:`~tfmec.layers.QuantizedEmbedding`.

Works on any Keras model that uses ``Embedding`` tables (every zoo model, and a user's
own, functional or subclassed; tables found by structure): the model is copied through
:func:`tfmec.graph.swap.swap_layers`, each compressed table becomes a ``QuantizedEmbedding``
initialised from stage 1 (codes frozen, codebooks trainable), and every other layer keeps its
weights. Training is plain ``model.fit``; each quantised layer adds ``beta`` times the contrastive
loss on the batch's looked-up ids through ``add_loss``.

Shared codebooks (codes learned with ``learn_codes(..., share_codebooks=True)``): the fields of one
sharing group become ONE :class:`~tfmec.layers.SharedQuantizedEmbedding` named after the group (for
example ``shared_d16``), called once per field with ``field=i`` where the field's ``Embedding`` was
called; the graph is rewired with :func:`tfmec.graph.functional.rebuild_functional` (both Keras modes).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.distribute import local_integer_variables
from tfmec.layers import QuantizedEmbedding, SharedQuantizedEmbedding
from tfmec.layers._utils import renamed_kwargs
from tfmec.mec.codes import CodeSet
from tfmec.graph import find_tables, iter_layers, resolve_table, table_aliases, table_dims
from tfmec.graph.swap import is_functional, swap_layers
from tfmec.mec.model import MECModel
from tfmec.towers import is_tower_model


class _FieldCall:
    """What the clone of a grouped field's ``Embedding`` is: a call of the group's shared layer with
    ``field=index``."""

    def __init__(self, layer, index: int):
        self.layer, self.index = layer, index

    def __call__(self, *args, **kwargs):
        return self.layer(*args, field=self.index, **kwargs)


def head_row_count(head_rows, field: str, vocab_size: int) -> int:
    """Exact head rows of one table from ``compress_embeddings``'s ``head_rows`` argument: a float
    in (0, 1) is a share of ``vocab_size`` (rounded down), a mapping gives per-field counts, anything
    else is a count; capped at ``vocab_size``."""
    if isinstance(head_rows, Mapping):
        count = int(head_rows.get(field, 0))
    elif isinstance(head_rows, float) and 0 < head_rows < 1:
        count = int(head_rows * vocab_size)
    else:
        count = int(head_rows)
    if count < 0:
        raise ValueError(f"head_rows must be >= 0, got {head_rows!r}")
    return min(count, vocab_size)


@tfmec_export("tfmec.mec.compress_embeddings")
@renamed_kwargs({"temperature": "contrastive_temperature"})
def compress_embeddings(
    model,
    codes: CodeSet,
    *,
    contrastive_weight: float | None = None,
    num_negatives: int | None = None,
    contrastive_temperature: float | None = None,
    trainable_codebooks: bool = True,
    bits: int | None = None,
    mapping: Mapping[str, str] | None = None,
    seed: int | None = None,
    head_rows: int | float | Mapping[str, int] = 0,
    inplace: bool = False,
):
    """A copy of ``model`` whose compressed fields use quantised embeddings.

    Args:
        model: any Keras model with ``keras.layers.Embedding`` tables, wherever they sit (functional,
            ``Sequential``, nested, subclassed, custom layers; :func:`tfmec.graph.find_tables`), or a
            model following the tower protocol of :mod:`tfmec.towers` (its tower is compressed and
            ``model.with_tower(compressed tower)`` returned). Lookup layers inside the model keep their
            vocabularies; a table shared by several inputs is replaced once and stays shared;
            ``mask_zero`` is copied.
        codes: stage 1's :class:`CodeSet`, keyed by table key, layer name or path (as ``learn_codes``
            names them).
        contrastive_weight: beta of the stage-2 contrastive term (default: ``codes.config["beta"]``).
        num_negatives, contrastive_temperature: contrastive settings (default: stage 1's;
            ``temperature`` is the deprecated name of ``contrastive_temperature``, one release).
        trainable_codebooks: train the codebooks in stage 2 (codes stay frozen).
        bits: store codes bit-packed at this width (e.g. 4 for K = 16).
        mapping: ``{table (key, layer name or path): code key}`` where the codes were learned under other
            names (e.g. on another model); a key the code set lacks raises ``ValueError``.
        seed: seed of the negatives' sampling.
        head_rows: rows kept exact per table (beyond the paper; see ``QuantizedEmbedding(head_rows=)``),
            copied from ``model``'s table: an int count, a float in (0, 1) as a share of each table's
            rows (rounded down), or ``{field: count}``. Tables in codebook-sharing groups keep no head
            rows (an int or share applies to the private tables; a mapping naming a shared field raises).
    The fields of a codebook-sharing group (``codes.groups``) become one
    :class:`~tfmec.layers.SharedQuantizedEmbedding` per group.

        inplace: for a subclassed model: swap the tables inside ``model`` itself (as keras's
            ``Model.quantize`` does) instead of a copy; needed when the class cannot be copied (the
            error says so).
    Returns:
        for a functional model a new functional :class:`MECModel` (same inputs and outputs; ``fit`` logs
        ``contrastive_loss``, the unweighted term: ``beta`` times it is in ``loss``); for a subclassed
        model a copy of its class (or ``model`` itself with ``inplace``) whose tables add the contrastive
        term through ``add_loss``; for a tower model ``model.with_tower(<that MECModel>)`` (uncompiled);
        the original is untouched unless ``inplace``.
    Raises:
        ValueError: codes that name no table (the error lists the model's tables), a table whose
            shape differs from its codes, a ``mapping`` naming unknown tables or codes, or a model that
            cannot be copied (:class:`tfmec.graph.swap.CopyError`, naming the change to make).
    """
    if is_tower_model(model):
        tower = compress_embeddings(model.tower, codes, contrastive_weight=contrastive_weight,
                                    num_negatives=num_negatives, contrastive_temperature=contrastive_temperature,
                                    trainable_codebooks=trainable_codebooks, bits=bits, mapping=mapping, seed=seed,
                                    head_rows=head_rows, inplace=inplace)
        return model.with_tower(tower)
    # stage 1's settings, saved with the codes (CodeSet.setting: one they lack is learn_codes' default; a
    # set made without stage 1 has no contrastive term)
    beta = codes.setting("beta", 0.0) if contrastive_weight is None else contrastive_weight
    negatives = codes.setting("num_negatives") if num_negatives is None else num_negatives
    tau = codes.setting("contrastive_temperature") if contrastive_temperature is None else contrastive_temperature
    group_of = {f: (g, i) for g, fields in codes.groups.items() for i, f in enumerate(fields)}
    if isinstance(head_rows, Mapping):
        in_groups = sorted(f for f in head_rows if f in group_of and int(head_rows[f]) > 0)
        if in_groups:
            raise ValueError(f"head_rows: field(s) {in_groups} share codebooks; exact head rows need a private table")
    tables = find_tables(model)
    if not tables:
        raise ValueError(f"compress_embeddings: model {model.name!r} has no embedding tables (searched every nested "
                         f"model and layer)")
    field_of_layer = _assign_codes(tables, codes, mapping)
    taken = {ref.layer.name for ref in iter_layers(model)} & set(codes.groups)
    if taken:
        raise ValueError(f"the model already has layers named {sorted(taken)}, the names of the shared tables")
    if codes.groups and not is_functional(model):
        raise ValueError("compress_embeddings: codes with shared codebooks (share_codebooks=True) call one layer with "
                         "field=i, which needs a functional model; learn the codes of a subclassed model without "
                         "share_codebooks")
    shared = {}

    def shared_layer(group, mask_zero):
        if group not in shared:
            fields = codes.groups[group]
            shared[group] = SharedQuantizedEmbedding.from_codes(
                [codes[f] for f in fields], name=group, contrastive_weight=beta if codes[fields[0]].dim > 1 else 0.0,
                num_negatives=negatives, contrastive_temperature=tau, trainable_codebooks=trainable_codebooks,
                bits=bits, seed=seed, mask_zero=mask_zero)
        elif bool(getattr(shared[group], "mask_zero", False)) != mask_zero:
            raise ValueError(f"the tables of codebook group {group!r} disagree on mask_zero")
        return shared[group]

    def replace(layer):
        field = field_of_layer.get(id(layer))
        if field is None:
            return None
        fc = codes[field]
        v, d = table_dims(layer)
        if (v, d) != (fc.vocab_size, fc.dim):
            raise ValueError(f"layer {layer.name!r} is a [{v}, {d}] table but the codes of {field!r} describe "
                             f"[{fc.vocab_size}, {fc.dim}]")
        mask_zero = bool(getattr(layer, "mask_zero", False))
        if field in group_of:
            group, index = group_of[field]
            return _FieldCall(shared_layer(group, mask_zero), index)
        head = head_row_count(head_rows, field, fc.vocab_size)
        return QuantizedEmbedding.from_codes(
            fc, name=layer.name, contrastive_weight=beta if fc.dim > 1 else 0.0, num_negatives=negatives,
            contrastive_temperature=tau, trainable_codebooks=trainable_codebooks, bits=bits, seed=seed, head_rows=head,
            head=np.asarray(layer.get_weights()[0][:head], dtype=np.float32) if head else None, mask_zero=mask_zero,
        )

    with local_integer_variables():  # uint8/uint16 codes under MultiWorkerMirroredStrategy (tfmec.distribute)
        new, _ = swap_layers(model, replace, inplace=inplace)
    if is_functional(new) and not isinstance(new, MECModel):
        new = MECModel(inputs=new.input, outputs=new.output, name=new.name)
    return new


def _assign_codes(tables, codes, mapping) -> dict:
    """``{id(table layer): code key}``: each code key goes to the table whose key, layer name or path it
    is (or the one ``mapping`` names for it). Raises ``ValueError`` naming the tables and the codes
    for a code set that names no table, or a ``mapping`` naming a table or a code key that does not exist."""
    out = {}
    if mapping:
        for table_name, key in mapping.items():
            ref = resolve_table(tables, str(table_name), "mapping")
            if key not in codes:
                raise ValueError(f"mapping: {table_name!r} -> {key!r}, but the code set has no codes named {key!r} "
                                 f"(stage 1 skipped that table or learned it under another name); codes: {sorted(codes)}")
            out[id(ref.layer)] = key
    mapped = set(out.values())
    for key in codes:
        if key in mapped:
            continue
        matches = [ref for ref in tables if key in table_aliases(ref)]
        if len(matches) != 1:
            listing = ", ".join(f"{r.key!r} ({r.path})" for r in tables)
            raise ValueError(f"the codes {key!r} name {'no' if not matches else 'several'} embedding table(s) of the "
                             f"model; its tables are: {listing}. Pass mapping={{table: {key!r}}}")
        if id(matches[0].layer) in out:
            raise ValueError(f"table {matches[0].path!r} is named by the codes {key!r} and "
                             f"{out[id(matches[0].layer)]!r}")
        out[id(matches[0].layer)] = key
    return out
