"""In-graph preprocessing: raw request values -> the model's inputs, exactly as
:meth:`tfmec.data.FeatureEncoder.encode` computes them in NumPy.

Per field of the schema (inputs are named by ``field.name``):

* categorical (``kind="categorical"``): ``tf.string[batch]`` -> vocabulary lookup -> ``int32[batch]``
  (unknown values -> OOV id 0);
* numeric with a bucketising transform (Criteo's ``log_square``): ``tf.float32[batch]`` -> bucket token
  (``x > 2 -> floor(log(x)^2)``, else ``floor(x)``, as a decimal string; NaN/inf -> ``""``) ->
  vocabulary lookup -> ``int32[batch]``;
* other numeric fields: ``tf.float32[batch]`` -> transform (``identity`` or signed ``log1p``) ->
  ``(x - mean) / std`` with the training statistics, in float64 -> NaN/inf -> 0 -> ``float32[batch]``;
* multi-valued fields (``max_length = L``): ``tf.string[batch, n]``, each row's values oldest first and
  padded at the end with ``""`` (any ``n``, shorter or longer than ``L``) -> lookup in the shared
  vocabulary -> unknown values and ``""`` dropped -> the ``L`` most recent kept, most recent first,
  0-padded: ``int32[batch, L]`` (:func:`most_recent_first`, the rule of :mod:`tfmec.data.lists`).
"""
from __future__ import annotations

import os

import tensorflow as tf

from tfmec.data.transforms import BUCKET_LIMIT, ZSCORE_LIMIT
from tfmec.export.vocab_assets import VocabularyTable, write_vocabulary_asset


def log_square_tokens(values: tf.Tensor) -> tf.Tensor:
    """In-graph :func:`tfmec.data.transforms.criteo_log_square`: ``float[batch]`` -> ``tf.string[batch]``."""
    v = tf.cast(values, tf.float64)
    missing = tf.logical_not(tf.math.is_finite(v))
    safe = tf.where(missing, tf.zeros_like(v), v)
    logs = tf.math.log(tf.maximum(safe, tf.constant(1e-12, tf.float64)))
    bucket = tf.where(safe > 2, tf.floor(logs * logs), tf.floor(safe))
    bucket = tf.clip_by_value(bucket, -BUCKET_LIMIT, BUCKET_LIMIT)  # as NumPy: no int64 overflow
    tokens = tf.strings.as_string(tf.cast(bucket, tf.int64))
    return tf.where(missing, tf.fill(tf.shape(tokens), ""), tokens)


def numeric_transform(transform: str | None, values: tf.Tensor) -> tf.Tensor:
    """In-graph :func:`tfmec.data.transforms.apply_numeric_transform` for the non-bucketising
    transforms: ``float[batch]`` -> ``float64[batch]``."""
    v = tf.cast(values, tf.float64)
    if transform in (None, "identity"):
        return v
    if transform == "log1p":
        return tf.sign(v) * tf.math.log1p(tf.abs(v))
    raise ValueError(f"unknown numeric transform {transform!r}")


def standardise(values64: tf.Tensor, mean: float, std: float) -> tf.Tensor:
    """``(x - mean) / std`` in float64, NaN/inf -> 0, clipped to ``±ZSCORE_LIMIT``, as ``float32[batch]``."""
    z = (values64 - tf.constant(float(mean), tf.float64)) / tf.constant(float(std), tf.float64)
    z = tf.where(tf.math.is_finite(z), z, tf.zeros_like(z))
    return tf.cast(tf.clip_by_value(z, -ZSCORE_LIMIT, ZSCORE_LIMIT), tf.float32)


def most_recent_first(ids: tf.Tensor, max_length: int) -> tf.Tensor:
    """In-graph list encoding: ids ``int32[batch, n]`` oldest first, 0 for dropped values ->
    ``int32[batch, max_length]``: the non-zero ids, most recent first, 0-padded (truncated to the
    ``max_length`` most recent)."""
    rev = tf.reverse(ids, axis=[1])
    kept = tf.not_equal(rev, 0)
    pos = tf.cumsum(tf.cast(kept, tf.int32), axis=1) - 1
    where = tf.where(tf.logical_and(kept, pos < max_length))  # [k, 2]: (row, column of rev)
    target = tf.stack([tf.cast(where[:, 0], tf.int32), tf.gather_nd(pos, where)], axis=1)
    shape = tf.stack([tf.shape(ids)[0], tf.constant(int(max_length), tf.int32)])
    return tf.scatter_nd(target, tf.gather_nd(rev, where), shape)


def raw_dtype(field) -> tf.DType:
    """The serving input dtype of a field: ``tf.string`` for categorical, ``tf.float32`` for numeric."""
    return tf.string if field.kind == "categorical" else tf.float32


def uses_vocabulary(field) -> bool:
    """True when the field's raw value goes through a vocabulary (categorical or bucketised)."""
    return field.is_categorical


class RawPreprocessor(tf.Module):
    """Raw feature values -> model inputs, in-graph, from a fitted :class:`~tfmec.data.FeatureEncoder`.

    Args:
        encoder: the encoder the model was trained with (schema, vocabularies, numeric statistics).
        asset_dir: an existing folder where the vocabulary files are written (``vocab_<field>.txt``);
            the tables track them as assets, so a SavedModel of this module carries copies.
    Call: ``{field.name: raw [batch] (or [batch, n] strings)}`` -> ``{field.name: int32[batch] | float32[batch]
    | int32[batch, L]}``.
    """

    def __init__(self, encoder, asset_dir: str):
        super().__init__(name="preprocessing")
        self.schema = encoder.schema
        self.tables = {}
        self._by_table = {}
        self._numeric = {}
        for field in self.schema:
            if uses_vocabulary(field):
                if field.kind != "categorical" and field.transform != "log_square":
                    raise ValueError(f"field {field.name!r}: no in-graph form of the bucketising transform "
                                     f"{field.transform!r}")
                if field.table in self._by_table:  # a shared vocabulary: one table
                    self.tables[field.name] = self._by_table[field.table]
                    continue
                vocab = encoder.vocabularies.get(field.table)
                if vocab is None:
                    raise ValueError(f"the encoder has no vocabulary for field {field.table!r}")
                path = os.path.join(asset_dir, f"vocab_{field.table}.txt")
                write_vocabulary_asset(path, vocab.tokens)
                self.tables[field.name] = self._by_table[field.table] = VocabularyTable(
                    path, name=f"vocab_{field.table}")
            else:
                stats = encoder.numeric_stats.get(field.name)
                if stats is None:
                    raise ValueError(f"the encoder has no numeric statistics for field {field.name!r}")
                self._numeric[field.name] = (field.transform, float(stats.mean), float(stats.std))

    def input_specs(self) -> dict:
        """``{field.name: tf.TensorSpec([None], raw dtype, name=field.name)}`` in schema order
        (``[None, None]`` strings for a multi-valued field)."""
        return {f.name: tf.TensorSpec([None, None] if f.is_list else [None], raw_dtype(f), name=f.name)
                for f in self.schema}

    def __call__(self, raw: dict) -> dict:
        out = {}
        for field in self.schema:
            x = raw[field.name]
            if field.is_list:
                ids = tf.where(tf.equal(x, ""), tf.zeros(tf.shape(x), tf.int32), self.tables[field.name](x))
                out[field.name] = most_recent_first(ids, field.max_length)
            elif field.name in self.tables:
                tokens = x if field.kind == "categorical" else log_square_tokens(x)
                out[field.name] = self.tables[field.name](tokens)
            else:
                transform, mean, std = self._numeric[field.name]
                out[field.name] = standardise(numeric_transform(transform, x), mean, std)
        return out


__all__ = ["most_recent_first", "log_square_tokens", "numeric_transform", "standardise", "raw_dtype", "RawPreprocessor"]
