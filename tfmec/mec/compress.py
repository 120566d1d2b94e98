"""MEC stage 2: swap a model's embedding layers for :class:`~tfmec.layers.QuantizedEmbedding`.

Works on any functional Keras model that uses ``Embedding`` layers (every zoo model, and a user's
own): the model is cloned, each compressed field's ``Embedding`` becomes a ``QuantizedEmbedding``
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

from tfmec.backend import keras
from tfmec.distribute import local_integer_variables
from tfmec.layers import QuantizedEmbedding, SharedQuantizedEmbedding
from tfmec.mec.codes import CodeSet
from tfmec.graph.functional import rebuild_functional
from tfmec.mec.model import MECModel
from tfmec.towers import is_tower_model, require_functional


def _field_of(layer_name: str, codes: Mapping, mapping: Mapping | None) -> str | None:
    if mapping and layer_name in mapping:
        return mapping[layer_name]
    if layer_name in codes:
        return layer_name
    if layer_name.startswith("embedding_") and layer_name[len("embedding_"):] in codes:
        return layer_name[len("embedding_"):]
    return None


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


def compress_embeddings(
    model,
    codes: CodeSet,
    *,
    contrastive_weight: float | None = None,
    num_negatives: int | None = None,
    temperature: float | None = None,
    trainable_codebooks: bool = True,
    bits: int | None = None,
    mapping: Mapping[str, str] | None = None,
    seed: int | None = None,
    head_rows: int | float | Mapping[str, int] = 0,
):
    """A copy of ``model`` whose compressed fields use quantised embeddings.

    Args:
        model: a functional Keras model with ``Embedding`` layers (``embedding_<field>`` in the zoo), or
            a model following the tower protocol of :mod:`tfmec.towers` (``model.tower`` functional,
            ``model.with_tower(new)``; e.g. :class:`tfmec.integrations.tfrs.TowerRankingModel`): its
            tower is compressed and ``model.with_tower(compressed tower)`` is returned.
        codes: stage 1's :class:`CodeSet` ``{field: FieldCodes}``.
        contrastive_weight: beta of the stage-2 contrastive term (default: ``codes.config["beta"]``).
        num_negatives, temperature: contrastive settings (default: stage 1's).
        trainable_codebooks: train the codebooks in stage 2 (codes stay frozen).
        bits: store codes bit-packed at this width (e.g. 4 for K = 16).
        mapping: ``{layer name: field}`` for layers not named ``embedding_<field>``.
        seed: seed of the negatives' sampling.
        head_rows: rows kept exact per table (beyond the paper; see ``QuantizedEmbedding(head_rows=)``),
            copied from ``model``'s table: an int count, a float in (0, 1) as a share of each table's
            rows (rounded down), or ``{field: count}``. Tables in codebook-sharing groups keep no head
            rows (an int or share applies to the private tables; a mapping naming a shared field raises).
    The fields of a codebook-sharing group (``codes.groups``) become one
    :class:`~tfmec.layers.SharedQuantizedEmbedding` per group.

    Returns:
        a new functional :class:`MECModel` (same inputs and outputs; ``fit`` logs ``contrastive_loss``),
        or for a tower model ``model.with_tower(<that MECModel>)`` (uncompiled); the original is untouched.
    Raises:
        ValueError: a code set that matches no layer, a table whose shape differs from its codes, or a
            subclassed model that does not follow the tower protocol.
    """
    if is_tower_model(model):
        tower = compress_embeddings(model.tower, codes, contrastive_weight=contrastive_weight,
                                    num_negatives=num_negatives, temperature=temperature,
                                    trainable_codebooks=trainable_codebooks, bits=bits, mapping=mapping, seed=seed,
                                    head_rows=head_rows)
        return model.with_tower(tower)
    require_functional(model, "compress_embeddings")
    cfg = getattr(codes, "config", {}) or {}
    beta = cfg.get("beta", 0.0) if contrastive_weight is None else contrastive_weight
    negatives = cfg.get("num_negatives", 4) if num_negatives is None else num_negatives
    tau = cfg.get("contrastive_temperature", 0.5) if temperature is None else temperature
    replaced = {}
    group_of = {f: (g, i) for g, fields in codes.groups.items() for i, f in enumerate(fields)}
    shared = {
        g: SharedQuantizedEmbedding.from_codes(
            [codes[f] for f in fields], name=g, contrastive_weight=beta if codes[fields[0]].dim > 1 else 0.0,
            num_negatives=negatives, temperature=tau, trainable_codebooks=trainable_codebooks, bits=bits, seed=seed)
        for g, fields in codes.groups.items()
    }
    if isinstance(head_rows, Mapping):
        in_groups = sorted(f for f in head_rows if f in group_of and int(head_rows[f]) > 0)
        if in_groups:
            raise ValueError(f"head_rows: field(s) {in_groups} share codebooks; exact head rows need a private table")
    taken = {layer.name for layer in model.layers} & set(shared)
    if taken:
        raise ValueError(f"the model already has layers named {sorted(taken)}, the names of the shared tables")

    def clone(layer):
        field = _field_of(layer.name, codes, mapping) if isinstance(layer, keras.layers.Embedding) else None
        if field is None:
            return layer.__class__.from_config(layer.get_config())
        fc = codes[field]
        if (int(layer.input_dim), int(layer.output_dim)) != (fc.vocab_size, fc.dim):
            raise ValueError(
                f"layer {layer.name!r} is a [{layer.input_dim}, {layer.output_dim}] table but the codes of "
                f"field {field!r} describe [{fc.vocab_size}, {fc.dim}]"
            )
        replaced[layer.name] = field
        if field in group_of:
            group, index = group_of[field]
            return _FieldCall(shared[group], index)
        head = head_row_count(head_rows, field, fc.vocab_size)
        return QuantizedEmbedding.from_codes(
            fc, name=layer.name, contrastive_weight=beta if fc.dim > 1 else 0.0, num_negatives=negatives, temperature=tau,
            trainable_codebooks=trainable_codebooks, bits=bits, seed=seed, head_rows=head,
            head=np.asarray(layer.get_weights()[0][:head], dtype=np.float32) if head else None,
        )

    with local_integer_variables():  # uint8/uint16 codes under MultiWorkerMirroredStrategy (tfmec.distribute)
        new = rebuild_functional(model, clone)
    missing = [f for f in codes if f not in replaced.values()]
    if missing:
        raise ValueError(f"no Embedding layer found for field(s) {missing}; pass mapping={{layer_name: field}}")
    for layer in model.layers:
        if layer.name in replaced or not layer.weights:
            continue
        new.get_layer(layer.name).set_weights(layer.get_weights())
    return MECModel(inputs=new.inputs, outputs=new.outputs, name=new.name)
