"""Parity of exported models with the Keras model they came from.

:func:`raw_from_ids` turns encoded rows back into raw request values (so ``serving_default``, which
takes raw values, can be checked on any encoded data set); :func:`keras_probabilities`,
:func:`max_abs_diff` and :func:`check_parity` compare the SavedModel signatures and the ONNX model
with ``model(x, training=False)``.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.export.batching import predict_in_batches
from tfmec.export.module import OUTPUT_KEY

OOV_STRING = "\x00tfmec-oov"


@tfmec_export("tfmec.export.keras_probabilities")
def keras_probabilities(model, inputs: dict, batch_size: int = 8192) -> np.ndarray:
    """``model(x, training=False)`` as ``float32[n]`` on ``{name: array[n, ...]}`` (named as the model's
    inputs, see :func:`~tfmec.export.signature.input_specs`), in batches; the model is called with
    the structure it was built with (a dict, a list or one tensor)."""
    from tfmec.export.signature import model_caller

    call = model_caller(model)

    def batch(start, stop):
        return call({k: tf.constant(np.asarray(v[start:stop])) for k, v in inputs.items()})

    return predict_in_batches(batch, inputs, batch_size)


@tfmec_export("tfmec.export.max_abs_diff")
def max_abs_diff(a, b) -> float:
    """``max |a - b|`` over rows (float64), 0 for empty inputs; NaN anywhere gives ``inf``."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare {a.shape[0]} predictions with {b.shape[0]}")
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    return float("inf") if np.isnan(d).any() else float(d.max())


def _bucket_value(token: str) -> float:
    """A raw float whose Criteo ``log_square`` token is ``token`` (``""`` -> NaN)."""
    if token == "":
        return float("nan")
    t = int(token)
    if t <= 2:
        return float(t)  # floor(x) = t for x = t <= 2
    return float(np.float32(math.exp(math.sqrt(t + 0.5))))  # floor(log(x)^2) = t


def _unused_bucket(tokens: set) -> float:
    if "" not in tokens:
        return float("nan")
    t = 3
    while str(t) in tokens:
        t += 1
    return _bucket_value(str(t))


@tfmec_export("tfmec.export.raw_from_ids")
def raw_from_ids(encoder, inputs: dict) -> dict:
    """Raw request values that encode to ``inputs``.

    Args:
        encoder: the fitted :class:`~tfmec.data.FeatureEncoder`.
        inputs: ``{field.name: array[n]}`` encoded rows (int ids / standardised floats).
    Returns:
        ``{field.name: array[n]}``: ``str`` objects for categorical fields (the OOV id becomes a string
        no vocabulary holds), ``float32`` for numeric ones (a bucket's representative value, NaN for
        the missing bucket; for plain numeric fields the inverse of the standardisation and
        transform, exact up to float rounding).
    """
    raw = {}
    for field in encoder.schema:
        x = np.asarray(inputs[field.name])
        if field.is_categorical:
            vocab = encoder.vocabularies[field.table]
            if field.kind == "categorical":
                oov = OOV_STRING
                while vocab.lookup(np.asarray([oov], dtype=object))[0] != 0:
                    oov += "~"
                table = np.asarray([oov] + list(vocab.tokens), dtype=object)
            else:
                table = np.asarray([_unused_bucket(set(vocab.tokens))] + [_bucket_value(t) for t in vocab.tokens],
                                   dtype=np.float32)
            raw[field.name] = table[x.astype(np.int64)]
        else:
            stats = encoder.numeric_stats[field.name]
            y = x.astype(np.float64) * stats.std + stats.mean
            if field.transform == "log1p":
                y = np.sign(y) * np.expm1(np.abs(y))
            raw[field.name] = y.astype(np.float32)
    return raw


@tfmec_export("tfmec.export.encode_raw")
def encode_raw(encoder, raw: dict) -> dict:
    """``encoder.encode`` of raw request values keyed by ``field.name`` (as the signatures take them)."""
    by_source = {}
    for field in encoder.schema:
        value = raw[field.name]
        by_source[field.source] = value.astype(np.float64) if field.kind != "categorical" else value
    return encoder.encode(by_source)


def take_rows(dataset, max_rows: int) -> dict:
    """The first ``max_rows`` rows of a ``tf.data`` split of ``(features, label)`` batches, as
    ``{field: np.ndarray[n]}``."""
    parts, n = [], 0
    for batch in dataset:
        features = batch[0] if isinstance(batch, tuple) else batch
        parts.append({k: np.asarray(v) for k, v in features.items()})
        n += len(next(iter(parts[-1].values())))
        if n >= max_rows:
            break
    if not parts:
        raise ValueError("no rows to check parity on")
    return {k: np.concatenate([p[k] for p in parts])[:max_rows] for k in parts[0]}


@tfmec_export("tfmec.export.check_parity")
def check_parity(model, ids: dict, *, saved_model_path: str | None = None, onnx_path: str | None = None,
                 encoder=None, raw: dict | None = None) -> dict:
    """Max absolute probability differences of the exports against ``model``.

    Args:
        model: the Keras model.
        ids: ``{field: array[n]}`` encoded rows.
        saved_model_path: a version folder written by :func:`tfmec.export.saved_model`.
        onnx_path: a file written by :func:`tfmec.export.onnx`.
        encoder: the model's encoder; with it, ``serving_default`` is checked on raw values
            (``raw``, or :func:`raw_from_ids` of ``ids``) against the model on ``encoder``'s encoding
            of those raw values.
        raw: raw request values ``{field.name: array[n]}`` (default: derived from ``ids``).
    Returns:
        ``{"saved_model_max_abs_diff": ..., "saved_model_ids_max_abs_diff": ...,
        "onnx_max_abs_diff": ..., "parity_rows": n}`` for the exports given; the first is the
        larger of the two SavedModel signatures' differences.
    """
    from tfmec.export.onnx_export import predict_onnx
    from tfmec.export.savedmodel import predict_saved_model

    p_keras = keras_probabilities(model, ids)
    out = {"parity_rows": int(p_keras.size)}
    if saved_model_path is not None:
        signatures = tf.saved_model.load(saved_model_path).signatures
        d_ids = max_abs_diff(predict_saved_model(signatures["ids"], ids), p_keras)
        out["saved_model_ids_max_abs_diff"] = d_ids
        d_raw = 0.0
        if encoder is not None:
            raw = raw if raw is not None else raw_from_ids(encoder, ids)
            p_raw_keras = keras_probabilities(model, encode_raw(encoder, raw))
            d_raw = max_abs_diff(predict_saved_model(signatures["serving_default"], raw), p_raw_keras)
            out["saved_model_serving_default_max_abs_diff"] = d_raw
        out["saved_model_max_abs_diff"] = max(d_ids, d_raw)
    if onnx_path is not None:
        out["onnx_max_abs_diff"] = max_abs_diff(predict_onnx(onnx_path, ids), p_keras)
    return out


__all__ = ["keras_probabilities", "max_abs_diff", "raw_from_ids", "encode_raw", "take_rows", "check_parity",
           "OUTPUT_KEY"]
