"""MEC stage 2: swap a model's embedding layers for :class:`~tfmec.layers.QuantizedEmbedding`.

Works on any functional Keras model that uses ``Embedding`` layers (every zoo model, and a user's
own): the model is cloned, each compressed field's ``Embedding`` becomes a ``QuantizedEmbedding``
initialised from stage 1 (codes frozen, codebooks trainable), and every other layer keeps its
weights. Training is plain ``model.fit``; each quantised layer adds ``beta`` times the contrastive
loss on the batch's looked-up ids through ``add_loss``.
"""
from __future__ import annotations

from typing import Mapping

from tfmec.backend import keras
from tfmec.layers import QuantizedEmbedding
from tfmec.mec.codes import CodeSet
from tfmec.mec.model import MECModel


def _field_of(layer_name: str, codes: Mapping, mapping: Mapping | None) -> str | None:
    if mapping and layer_name in mapping:
        return mapping[layer_name]
    if layer_name in codes:
        return layer_name
    if layer_name.startswith("embedding_") and layer_name[len("embedding_"):] in codes:
        return layer_name[len("embedding_"):]
    return None


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
):
    """A copy of ``model`` whose compressed fields use quantised embeddings.

    Args:
        model: a functional Keras model with ``Embedding`` layers (``embedding_<field>`` in the zoo).
        codes: stage 1's :class:`CodeSet` ``{field: FieldCodes}``.
        contrastive_weight: beta of the stage-2 contrastive term (default: ``codes.config["beta"]``).
        num_negatives, temperature: contrastive settings (default: stage 1's).
        trainable_codebooks: train the codebooks in stage 2 (codes stay frozen).
        bits: store codes bit-packed at this width (e.g. 4 for K = 16).
        mapping: ``{layer name: field}`` for layers not named ``embedding_<field>``.
        seed: seed of the negatives' sampling.
    Returns:
        a new functional :class:`MECModel` (same inputs and outputs; ``fit`` logs ``contrastive_loss``);
        the original is untouched.
    Raises:
        ValueError: a code set that matches no layer, or a table whose shape differs from its codes.
    """
    cfg = getattr(codes, "config", {}) or {}
    beta = cfg.get("beta", 0.0) if contrastive_weight is None else contrastive_weight
    negatives = cfg.get("num_negatives", 4) if num_negatives is None else num_negatives
    tau = cfg.get("contrastive_temperature", 0.5) if temperature is None else temperature
    replaced = {}

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
        return QuantizedEmbedding.from_codes(
            fc, name=layer.name, contrastive_weight=beta if fc.dim > 1 else 0.0, num_negatives=negatives, temperature=tau,
            trainable_codebooks=trainable_codebooks, bits=bits, seed=seed,
        )

    new = keras.models.clone_model(model, clone_function=clone)
    missing = [f for f in codes if f not in replaced.values()]
    if missing:
        raise ValueError(f"no Embedding layer found for field(s) {missing}; pass mapping={{layer_name: field}}")
    for layer in model.layers:
        if layer.name in replaced or not layer.weights:
            continue
        new.get_layer(layer.name).set_weights(layer.get_weights())
    return MECModel(inputs=new.inputs, outputs=new.outputs, name=new.name)
