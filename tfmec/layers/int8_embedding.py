"""Int8 embedding table: post-training symmetric int8 quantisation with a float32 scale per row.

A trained float table ``E [V, d]`` is stored as ``q = round(E / s)`` clipped to ``[-127, 127]``
(``int8[V, d]``) and a step ``s [V]`` (``float32``, one per row: ``s_i = max_j |E_ij| / 127``), or one
step for the whole table (``s [1]``, for narrow tables such as the ``d = 1`` first-order weights, where
a per-row step would cost more than the row itself). The lookup dequantises in the graph::

    e_i = float32(q[i]) * s[i]          (one gather on q, one on s, a cast and a multiply)

**Why not Keras's own ``Embedding.quantize("int8")``.** Keras 3 (3.15) quantises an ``Embedding``
the same way (per-row abs-max, ``int8`` table plus a float scale per row, dequantised after the
gather), but tf-keras (``TF_USE_LEGACY_KERAS=1``) has no ``quantize`` at all, and Keras's quantised
layer stores its rows as ``int8`` under the private attribute ``_embeddings`` of a layer whose config
then carries ``quantization_config``. tfmec keeps one implementation that behaves the same in both
modes: this layer, built with plain TensorFlow ops (``Gather``, ``Cast``, ``Mul``: SavedModel- and
tf2onnx-friendly). Its integers equal Keras 3's for the same table (tested), and its outputs agree
with Keras's to float rounding (Keras divides by ``127 / max|row|``; this layer multiplies by its
reciprocal, which is the form a serving graph wants).

Registered (package ``tfmec``), serialisable, variables created in ``build``; counted as an
embedding table by :func:`tfmec.evaluation.embedding_bytes` at its stored widths (``int8`` table,
``float32`` steps).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.backend import keras, register
from tfmec.layers._utils import array_initializer, as_shape, map_out_of_range_ids, zero_mask

_MAX_VOCAB = 2**31 - 1
INT8_MAX = 127


def quantize_int8(table, per_row: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation of a float table.

    Args:
        table: float ``[V, d]``.
        per_row: one step per row (``[V]``) or one for the whole table (``[1]``).

    Returns:
        ``(q int8[V, d], step float32[V] or [1])`` with ``q = clip(round(table / step), -127, 127)`` and
        ``step = max|row| / 127`` (``max|table| / 127`` when not ``per_row``); an all-zero row (or table)
        gets step 1 so that it decodes to exact zeros. ``q * step`` reproduces the table to within
        ``step / 2`` per value.
    """
    e = np.asarray(table, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"quantize_int8: expected a [V, d] table, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("quantize_int8: the table contains NaN or infinite values")
    peak = np.abs(e).max(axis=1) if per_row else np.abs(e).max(keepdims=True).reshape(1)
    step = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    scale = step.astype(np.float64)[:, None] if per_row else np.float64(step[0])
    q = np.clip(np.round(e / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, step



@register
class Int8Embedding(keras.layers.Layer):
    """An embedding table stored as ``int8`` values times a ``float32`` step per row (or per table).

    Args:
        input_dim: ``V``, number of ids (``< 2**31``).
        output_dim: ``d``.
        per_row_scale: one step per row (``scales [V]``, default) or one for the table (``scales [1]``).
        oov_id: the row used for ids ``< 0`` or ``>= V`` (mapped with ``tf.where``, never an error; the
            zoo's id 0 is the OOV bucket).
        embeddings: optional initial ``int8[V, d]`` values (not part of the config); default zeros.
        scales: optional initial ``float32[V]`` (or ``[1]``) steps (not part of the config); default ones.
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream (pooling, attention,
            RNNs) skip id 0 as padding; the output is unchanged (id 0 still reads its row). Default False.

    Weights (created in ``build``, both non-trainable: this is post-training quantisation; the rest
    of a model that holds the layer still trains):
        ``embeddings``: ``int8[V, d]``; ``scales``: ``float32[V]`` or ``float32[1]``.

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``
        float (compute dtype), i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with
        ``mask_zero``) is bool ``[...]``, the ids' shape.

    Storage: ``V d`` bytes plus ``4 V`` (or 4) bytes of steps: ``storage_bytes``, equal to the bytes of
    ``layer.weights``; about 4x smaller than the float32 table when ``d`` is large against 4.
    """

    is_embedding_table = True

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        per_row_scale: bool = True,
        oov_id: int = 0,
        embeddings=None,
        scales=None,
        mask_zero: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        name = type(self).__name__
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        if not 1 <= self.input_dim <= _MAX_VOCAB:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.output_dim < 1:
            raise ValueError(f"{name}: output_dim must be >= 1, got {output_dim}")
        self.per_row_scale = bool(per_row_scale)
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self._initial_embeddings = None
        if embeddings is not None:
            arr = np.asarray(embeddings)
            if arr.shape != (self.input_dim, self.output_dim):
                raise ValueError(f"{name}: embeddings must be [{self.input_dim}, {self.output_dim}], got {arr.shape}")
            if arr.dtype != np.int8:
                if not np.issubdtype(arr.dtype, np.integer) or arr.min() < -INT8_MAX - 1 or arr.max() > INT8_MAX:
                    raise ValueError(f"{name}: embeddings must be int8 values, got dtype {arr.dtype}")
                arr = arr.astype(np.int8)
            self._initial_embeddings = arr
        self._initial_scales = None
        if scales is not None:
            arr = np.asarray(scales, dtype=np.float32).reshape(-1)
            if arr.shape != self.scales_shape:
                raise ValueError(f"{name}: scales must have shape {self.scales_shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: scales contain NaN or infinite values")
            self._initial_scales = arr

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_table(cls, table, per_row_scale: bool = True, **kwargs) -> "Int8Embedding":
        """An unbuilt layer holding :func:`quantize_int8` of a float ``[V, d]`` table; ``kwargs`` are the
        other constructor arguments (``name``, ``oov_id``, ``mask_zero``, ...)."""
        q, step = quantize_int8(table, per_row=per_row_scale)
        return cls(q.shape[0], q.shape[1], per_row_scale=per_row_scale, embeddings=q, scales=step, **kwargs)

    @classmethod
    def from_embedding(cls, embedding, per_row_scale: bool = True, **kwargs) -> "Int8Embedding":
        """The int8 form of a built ``keras.layers.Embedding`` (``name``, ``dtype`` and ``mask_zero``
        default to its; ``kwargs`` override them)."""
        if not getattr(embedding, "built", False):
            raise ValueError(f"Int8Embedding.from_embedding: layer {embedding.name!r} is not built")
        params = dict(name=embedding.name, dtype=embedding.dtype_policy,
                      mask_zero=bool(getattr(embedding, "mask_zero", False)))
        params.update(kwargs)
        return cls.from_table(np.asarray(embedding.get_weights()[0]), per_row_scale=per_row_scale, **params)

    @property
    def scales_shape(self) -> tuple:
        """``(V,)`` with per-row steps, else ``(1,)``."""
        return (self.input_dim,) if self.per_row_scale else (1,)

    @property
    def storage_bytes(self) -> int:
        """``V d`` bytes of int8 values plus the float32 steps."""
        return self.input_dim * self.output_dim + 4 * self.scales_shape[0]

    def build(self, input_shape=None):
        q, s = self._initial_embeddings, self._initial_scales
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim), dtype="int8",
            initializer=array_initializer(q) if q is not None else "zeros", trainable=False,
        )
        self.scales = self.add_weight(
            name="scales", shape=self.scales_shape, dtype="float32",
            initializer=array_initializer(s) if s is not None else "ones", trainable=False,
        )
        self._initial_embeddings = self._initial_scales = None  # the weights hold them now
        self.built = True

    # ------------------------------------------------------------------ computation
    def call(self, inputs):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        ids = map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)
        flat = tf.reshape(ids, [-1])
        rows = tf.cast(tf.gather(self.embeddings, flat), tf.float32)  # [N, d]
        if self.per_row_scale:
            step = tf.gather(self.scales, flat)[:, None]  # [N, 1]
        else:
            step = tf.reshape(self.scales, [1, 1])
        out = tf.reshape(rows * step, tf.concat([tf.shape(ids), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def dequantized_table(self) -> np.ndarray:
        """The float32 ``[V, d]`` table the layer computes with (for checks; NumPy)."""
        q = np.asarray(self.embeddings.numpy(), dtype=np.float32)
        s = np.asarray(self.scales.numpy(), dtype=np.float32)
        return q * (s[:, None] if self.per_row_scale else s[0])

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (``[...]``, the ids' shape), as
        ``keras.layers.Embedding``. An incoming ``mask`` is ignored, as there."""
        return zero_mask(inputs, self.mask_zero)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim, per_row_scale=self.per_row_scale,
                      oov_id=self.oov_id, mask_zero=self.mask_zero)
        return config


__all__ = ["Int8Embedding", "quantize_int8", "INT8_MAX"]
