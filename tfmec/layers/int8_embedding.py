"""Int8 (and int4) embedding table: post-training symmetric quantisation with a float32 scale per row.

A trained float table ``E [V, d]`` is stored as ``q = round(E / s)`` clipped to ``[-127, 127]``
(``int8[V, d]``) and a step ``s [V]`` (``float32``, one per row: ``s_i = max_j |E_ij| / 127``), or one
step for the whole table (``s [1]``, for narrow tables such as the ``d = 1`` first-order weights, where
a per-row step would cost more than the row itself). The lookup dequantises in the graph::

    e_i = float32(q[i]) * s[i]          (one gather on q, one on s, a cast and a multiply)

**int4** (``bits=4``): the same arithmetic with ``7`` for ``127`` (``q`` in ``[-7, 7]``, ``s_i = max_j
|E_ij| / 7``), two values per byte: row ``i`` is stored as ``uint8[ceil(d / 2)]`` whose byte ``k`` holds
``q[i, 2k] + 8`` in its low four bits and ``q[i, 2k + 1] + 8`` in its high four bits (a zero high nibble
pads an odd ``d``). The lookup gathers the packed rows of the batch only, then decodes each byte with
one more gather from a constant ``[256, 2]`` table of its two values (no bit operations, so tf2onnx
converts it as is) and multiplies by the step. Keras 3.15 has ``Embedding.quantize("int4")``; with
``Int4QuantizationConfig(block_size=-1)`` (one symmetric abs-max step per row) its integers equal these
(tested). Its default is another scheme (groups of 128 columns, asymmetric, an int8 zero point and a
float scale per row and group, plus a ``g_idx`` vector), and either way it unpacks the *whole* table on
every call before the gather (``O(V d)`` work per batch, prohibitive for large tables) and does not exist
in tf-keras; so tfmec uses this layer in both modes.

**Hashed rows** (``num_buckets=B``): ids are first hashed into ``B`` rows exactly as
:class:`~tfmec.layers.HashedEmbedding` does (same cubic hash, same ``salt``), and the ``B`` rows are
stored quantised: the hashing trick with int8/int4 rows, which is how
:func:`tfmec.baselines.quantize_embeddings` meets a byte budget that quantisation alone cannot.

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

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import (MAX_ROWS, array_initializer, as_shape, map_out_of_range_ids, renamed_kwargs,
                                 zero_mask)
from tfmec.layers.hashed_embedding import hash_buckets

INT8_MAX = 127
INT4_MAX = 7
INT4_OFFSET = 8  # a stored nibble is q + 8, in [1, 15]
BITS = (8, 4)


def quantized_max(bits: int) -> int:
    """The largest stored magnitude: 127 for int8, 7 for int4."""
    if bits not in BITS:
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    return INT8_MAX if bits == 8 else INT4_MAX


def packed_width(dim: int, bits: int) -> int:
    """Bytes per stored row: ``d`` for int8, ``ceil(d / 2)`` for int4."""
    quantized_max(bits)
    return int(dim) if bits == 8 else (int(dim) + 1) // 2


def pack_int4(q) -> np.ndarray:
    """``int[V, d]`` values in ``[-8, 7]`` -> ``uint8[V, ceil(d / 2)]``: byte ``k`` holds ``q[:, 2k] + 8``
    (low nibble) and ``q[:, 2k + 1] + 8`` (high nibble; zero past an odd ``d``)."""
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"pack_int4: expected [V, d] values, got shape {q.shape}")
    if q.size and (q.min() < -INT4_OFFSET or q.max() > INT4_MAX):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    v, d = q.shape
    u = np.zeros((v, 2 * packed_width(d, 4)), dtype=np.uint8)
    u[:, :d] = (q.astype(np.int16) + INT4_OFFSET).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, dim: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: ``uint8[V, ceil(d / 2)]`` -> ``int8[V, d]``."""
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] != packed_width(dim, 4):
        raise ValueError(f"unpack_int4: expected uint8[V, {packed_width(dim, 4)}], got {p.dtype}{list(p.shape)}")
    both = np.stack([p & 0x0F, p >> 4], axis=-1).reshape(p.shape[0], -1)[:, : int(dim)]
    return (both.astype(np.int16) - INT4_OFFSET).astype(np.int8)


def _int4_decode_table() -> np.ndarray:
    """``float32[256, 2]``: the two int4 values (low, high nibble, each minus 8) of every byte."""
    b = np.arange(256)
    return np.stack([b % 16, b // 16], axis=1).astype(np.float32) - INT4_OFFSET


@tfmec_export("tfmec.layers.quantize_int8")
def quantize_int8(table, per_row: bool = True, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (or int4) quantisation of a float table.

    Args:
        table: float ``[V, d]``.
        per_row: one step per row (``[V]``) or one for the whole table (``[1]``).
        bits: 8, or 4 (values in ``[-7, 7]``; :func:`pack_int4` stores them two per byte).

    Returns:
        ``(q int8[V, d], step float32[V] or [1])`` with ``q = clip(round(table / step), -m, m)`` and
        ``step = max|row| / m`` (``max|table| / m`` when not ``per_row``), ``m = 127`` (int8) or ``7``
        (int4); an all-zero row (or table) gets step 1 so that it decodes to exact zeros. ``q * step``
        reproduces the table to within ``step / 2`` per value.
    """
    top = quantized_max(bits)
    e = np.asarray(table, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"quantize_int8: expected a [V, d] table, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("quantize_int8: the table contains NaN or infinite values")
    if e.shape[0] == 0:
        peak = np.zeros((0,) if per_row else (1,))
    else:
        peak = np.abs(e).max(axis=1) if per_row else np.abs(e).max(keepdims=True).reshape(1)
    step = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
    scale = step.astype(np.float64)[:, None] if per_row else np.float64(step[0])
    q = np.clip(np.round(e / scale), -top, top).astype(np.int8)
    return q, step



@tfmec_export("tfmec.layers.Int8Embedding")
@register
@renamed_kwargs({"vocab_size": "input_dim"})
class Int8Embedding(keras.layers.Layer):
    """An embedding table stored as ``int8`` (or packed int4) values times a ``float32`` step per row (or
    per table), optionally over hashed rows.

    Example::

        table = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")   # a trained table
        values, steps = tfmec.layers.quantize_int8(table)
        layer = tfmec.layers.Int8Embedding(100, 8, embeddings=values, scales=steps)
        y = layer(tf.constant([[1, 2], [3, 99]]))   # shape (2, 2, 8), within half a step of table's rows

    Args:
        input_dim: ``V``, number of ids (``< 2**31``).
        output_dim: ``d``.
        per_row_scale: one step per stored row (``scales [rows]``, default) or one for the table
            (``scales [1]``).
        oov_id: the id used for ids ``< 0`` or ``>= V`` (mapped with ``tf.where``, never an error; the
            zoo's id 0 is the OOV bucket).
        embeddings: optional initial stored values (not part of the config): ``int8[rows, d]`` for
            ``bits=8``, the packed ``uint8[rows, ceil(d / 2)]`` of :func:`pack_int4` for ``bits=4``;
            default zeros (int4: the bytes of value 0).
        scales: optional initial ``float32[rows]`` (or ``[1]``) steps (not part of the config); default ones.
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream (pooling, attention,
            RNNs) skip id 0 as padding; the output is unchanged (id 0 still reads its row). Default False.
        bits: 8 (default: one ``int8`` per value) or 4 (two values per ``uint8``, module docstring).
        num_buckets: None (default: one stored row per id, ``rows = V``) or ``B``: ids are hashed into
            ``rows = B`` stored rows as :class:`~tfmec.layers.HashedEmbedding` hashes them (``salt``).
        salt: the hash of ``num_buckets`` (see :func:`~tfmec.layers.hashed_embedding.hash_coefficients`).

    Weights (created in ``build``, both non-trainable: this is post-training quantisation; the rest
    of a model that holds the layer still trains):
        ``embeddings``: ``int8[rows, d]`` (``bits=8``) or ``uint8[rows, ceil(d / 2)]`` (``bits=4``);
        ``scales``: ``float32[rows]`` or ``float32[1]``.

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``
        float (compute dtype), i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with
        ``mask_zero``) is bool ``[...]``, the ids' shape.

    Storage: ``rows * d`` bytes (int4: ``rows * ceil(d / 2)``) plus ``4 rows`` (or 4) bytes of steps:
    ``storage_bytes``, equal to the bytes of ``layer.weights``; about 4x (int4: about 8x) smaller than
    the float32 table when ``d`` is large against 4, and ``V / B`` times smaller again with hashed rows.

    From a trained ``keras.layers.Embedding``::

        layer = Int8Embedding.from_embedding(trained_embedding, bits=4)   # int4 rows, step per row

    Configs without ``bits`` / ``num_buckets`` (``.keras`` files written before they existed) load as
    int8 with one row per id. ``vocab_size`` (keyword or attribute) is a deprecated name of ``input_dim``,
    accepted for one release with a ``DeprecationWarning``.
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
        bits: int = 8,
        num_buckets: int | None = None,
        salt: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        name = type(self).__name__
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.output_dim < 1:
            raise ValueError(f"{name}: output_dim must be >= 1, got {output_dim}")
        if isinstance(bits, bool) or bits not in BITS:
            raise ValueError(f"{name}: bits must be 8 or 4, got {bits!r}")
        self.bits = int(bits)
        self.num_buckets = None if num_buckets is None else int(num_buckets)
        if self.num_buckets is not None and not 1 <= self.num_buckets <= MAX_ROWS:
            raise ValueError(f"{name}: num_buckets must be in [1, 2**31), got {num_buckets}")
        self.salt = int(salt)
        self.per_row_scale = bool(per_row_scale)
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self._initial_embeddings = None
        if embeddings is not None:
            arr = np.asarray(embeddings)
            if arr.shape != self.embeddings_shape:
                raise ValueError(f"{name}: embeddings must be {list(self.embeddings_shape)}, got {list(arr.shape)}")
            if self.bits == 4:
                if arr.dtype != np.uint8:
                    raise ValueError(f"{name}: int4 embeddings must be the packed uint8 bytes of pack_int4, "
                                     f"got dtype {arr.dtype}")
            elif arr.dtype != np.int8:
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
    def from_table(cls, table, per_row_scale: bool = True, bits: int = 8, input_dim: int | None = None,
                   **kwargs) -> "Int8Embedding":
        """An unbuilt layer holding :func:`quantize_int8` of a float ``[rows, d]`` table (packed with
        :func:`pack_int4` for ``bits=4``). ``input_dim`` defaults to the table's rows (give ``V`` with
        ``num_buckets=rows`` for hashed rows); ``kwargs`` are the other constructor arguments (``name``,
        ``oov_id``, ``mask_zero``, ``num_buckets``, ``salt``, ...)."""
        q, step = quantize_int8(table, per_row=per_row_scale, bits=bits)
        stored = pack_int4(q) if bits == 4 else q
        v = q.shape[0] if input_dim is None else int(input_dim)
        return cls(v, q.shape[1], per_row_scale=per_row_scale, embeddings=stored, scales=step, bits=bits, **kwargs)

    @classmethod
    def from_embedding(cls, embedding, per_row_scale: bool = True, bits: int = 8, **kwargs) -> "Int8Embedding":
        """The int8 (``bits=4``: int4) form of a built ``keras.layers.Embedding``, or of a built
        :class:`~tfmec.layers.HashedEmbedding` (its ``B`` rows quantised, its hash kept). ``name``,
        ``dtype`` and ``mask_zero`` (and a hashed table's ``oov_id``) default to the layer's; ``kwargs``
        override them."""
        from tfmec.layers.hashed_embedding import HashedEmbedding

        if not getattr(embedding, "built", False):
            raise ValueError(f"Int8Embedding.from_embedding: layer {embedding.name!r} is not built")
        params = dict(name=embedding.name, dtype=embedding.dtype_policy,
                      mask_zero=bool(getattr(embedding, "mask_zero", False)))
        if isinstance(embedding, HashedEmbedding):
            params.update(input_dim=embedding.input_dim, num_buckets=embedding.num_buckets, salt=embedding.salt,
                          oov_id=embedding.oov_id)
        params.update(kwargs)
        return cls.from_table(np.asarray(embedding.get_weights()[0]), per_row_scale=per_row_scale, bits=bits,
                              **params)

    @property
    def rows(self) -> int:
        """Stored rows: ``num_buckets`` when ids are hashed, else ``V``."""
        return self.input_dim if self.num_buckets is None else self.num_buckets

    @property
    def embeddings_shape(self) -> tuple:
        """``(rows, d)`` for int8, ``(rows, ceil(d / 2))`` for int4."""
        return (self.rows, packed_width(self.output_dim, self.bits))

    @property
    def scales_shape(self) -> tuple:
        """``(rows,)`` with per-row steps, else ``(1,)``."""
        return (self.rows,) if self.per_row_scale else (1,)

    @property
    def storage_bytes(self) -> int:
        """Bytes of the stored values (one per int8 value, one per two int4 values) plus the float32 steps."""
        return self.embeddings_shape[0] * self.embeddings_shape[1] + 4 * self.scales_shape[0]

    def build(self, input_shape=None):
        q, s = self._initial_embeddings, self._initial_scales
        if q is None and self.bits == 4:
            q = np.full(self.embeddings_shape, INT4_OFFSET * 17, dtype=np.uint8)  # both nibbles hold 0
        self.embeddings = self.add_weight(
            name="embeddings", shape=self.embeddings_shape, dtype="int8" if self.bits == 8 else "uint8",
            initializer=array_initializer(q) if q is not None else "zeros", trainable=False,
        )
        self.scales = self.add_weight(
            name="scales", shape=self.scales_shape, dtype="float32",
            initializer=array_initializer(s) if s is not None else "ones", trainable=False,
        )
        self._initial_embeddings = self._initial_scales = None  # the weights hold them now
        self.built = True

    # ------------------------------------------------------------------ computation
    def rows_of(self, inputs):
        """The int32 stored rows ``[...]`` that ids ``[...]`` read (out-of-range ids mapped to ``oov_id``
        first, then hashed with ``num_buckets``)."""
        ids = map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)
        return ids if self.num_buckets is None else hash_buckets(ids, self.num_buckets, self.salt)

    def call(self, inputs):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        ids = self.rows_of(inputs)
        flat = tf.reshape(ids, [-1])
        stored = tf.gather(self.embeddings, flat)  # [N, width]
        if self.bits == 8:
            rows = tf.cast(stored, tf.float32)  # [N, d]
        else:  # each byte -> its two values, from a constant [256, 2] table
            pairs = tf.gather(tf.constant(_int4_decode_table()), tf.cast(stored, tf.int32))  # [N, width, 2]
            rows = tf.reshape(pairs, [-1, 2 * self.embeddings_shape[1]])
            if self.output_dim % 2:
                rows = rows[:, : self.output_dim]
        if self.per_row_scale:
            step = tf.gather(self.scales, flat)[:, None]  # [N, 1]
        else:
            step = tf.reshape(self.scales, [1, 1])
        # under a mixed-precision policy Keras reads the float32 steps at the compute dtype
        out = tf.reshape(rows * tf.cast(step, tf.float32), tf.concat([tf.shape(ids), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def quantized_values(self) -> np.ndarray:
        """The stored integers as ``int8[rows, d]`` (int4 unpacked; for checks; NumPy)."""
        q = np.asarray(self.embeddings.numpy())
        return unpack_int4(q, self.output_dim) if self.bits == 4 else q.astype(np.int8)

    def dequantized_table(self) -> np.ndarray:
        """The float32 ``[rows, d]`` table the layer computes with (for checks; NumPy): one row per id,
        or per bucket with ``num_buckets``."""
        q = self.quantized_values().astype(np.float32)
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
                      oov_id=self.oov_id, mask_zero=self.mask_zero, bits=self.bits, num_buckets=self.num_buckets,
                      salt=self.salt)
        return config


__all__ = ["Int8Embedding", "quantize_int8", "pack_int4", "unpack_int4", "packed_width", "quantized_max", "INT8_MAX",
           "INT4_MAX", "BITS"]
