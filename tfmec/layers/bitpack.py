"""Bit-packing of product-quantisation codes.

A row of ``M`` codes of ``K`` codewords needs only ``ceil(log2 K)`` bits per code, so with ``K = 16``
two codes fit in one byte. :func:`pack_codes` stores each row of codes as a little-endian bit
stream in ``uint8[ceil(M * bits / 8)]``:

* code ``j`` of a row occupies stream bits ``[j * bits, (j + 1) * bits)``;
* stream bit ``p`` is bit ``p % 8`` (``0`` = least significant) of byte ``p // 8``;
* hence for ``bits`` in ``{1, 2, 4, 8}`` code ``j`` sits in byte ``j // (8 // bits)`` at shift
  ``(j % (8 // bits)) * bits`` (the first code in the low bits: "little end first"); other widths
  (3, 5, ..., 16) may straddle bytes, least significant part in the lower byte;
* unused trailing bits of the last byte are zero.

Example, ``bits = 4``, codes ``[3, 10, 7]`` -> bytes ``[0xA3, 0x07]``.

:func:`pack_codes` / :func:`unpack_codes` are NumPy; :func:`unpack_codes_tf` is the in-graph
unpacking that :class:`tfmec.layers.QuantizedEmbedding` applies to the gathered rows only
(``tf.bitwise`` shifts, a ``floormod`` mask, plus one small constant-index gather for widths that
straddle bytes), so it exports to TF Serving and converts with tf2onnx as is.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export

MAX_BITS = 16


def bits_needed(num_codewords: int) -> int:
    """``ceil(log2 K)``: the fewest bits that hold a code of ``K`` codewords (``K >= 2``)."""
    k = int(num_codewords)
    if k < 2:
        raise ValueError(f"num_codewords must be >= 2, got {num_codewords}")
    return int(math.ceil(math.log2(k)))


def packed_width(num_subspaces: int, bits: int) -> int:
    """Bytes per packed row: ``ceil(M * bits / 8)``."""
    return (int(num_subspaces) * int(bits) + 7) // 8


def check_bits(bits: int, num_codewords: int | None = None) -> int:
    """Validates a code width (1..16, and ``>= ceil(log2 K)`` when ``K`` is given); returns it as int."""
    if isinstance(bits, bool) or int(bits) != bits:
        raise ValueError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
    bits = int(bits)
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [1, {MAX_BITS}], got {bits}")
    if num_codewords is not None and bits < bits_needed(num_codewords):
        raise ValueError(
            f"bits={bits} cannot hold codes of K={num_codewords} codewords: needs at least "
            f"ceil(log2 K) = {bits_needed(num_codewords)} bits"
        )
    return bits


def _layout(num_subspaces: int, bits: int):
    """Per code ``j``: first byte ``p // 8`` and bit shift ``p % 8`` with ``p = j * bits``."""
    starts = np.arange(int(num_subspaces), dtype=np.int64) * int(bits)
    return starts // 8, starts % 8


@tfmec_export("tfmec.layers.pack_codes")
def pack_codes(codes, bits: int) -> np.ndarray:
    """Packs ``codes[V, M]`` (integers in ``[0, 2**bits)``) into ``uint8[V, ceil(M * bits / 8)]``.

    Layout in the module docstring. Raises ``ValueError`` for codes that do not fit in ``bits``.
    """
    bits = check_bits(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [V, M], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) to be packed at {bits} bits")
    v, m = codes.shape
    width = packed_width(m, bits)
    out = np.zeros((v, width + 2), dtype=np.uint8)  # two spare bytes: a code spans <= 3 bytes
    first, shift = _layout(m, bits)
    values = codes.astype(np.uint32)
    for j in range(m):
        window = values[:, j] << np.uint32(shift[j])
        for t in range(3):
            out[:, first[j] + t] |= ((window >> np.uint32(8 * t)) & np.uint32(0xFF)).astype(np.uint8)
    return np.ascontiguousarray(out[:, :width])


@tfmec_export("tfmec.layers.unpack_codes")
def unpack_codes(packed, bits: int, num_subspaces: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``uint8[V, ceil(M * bits / 8)]`` -> codes ``[V, M]``
    (``uint8`` when ``bits <= 8``, else ``uint16``)."""
    bits = check_bits(bits)
    packed = np.asarray(packed)
    m = int(num_subspaces)
    width = packed_width(m, bits)
    if packed.ndim != 2 or packed.shape[1] != width:
        raise ValueError(f"packed codes must be [V, {width}] for M={m}, bits={bits}; got shape {packed.shape}")
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8, got {packed.dtype}")
    padded = np.zeros((packed.shape[0], width + 2), dtype=np.uint32)
    padded[:, :width] = packed
    first, shift = _layout(m, bits)
    mask = np.uint32((1 << bits) - 1)
    out = np.empty((packed.shape[0], m), dtype=np.uint8 if bits <= 8 else np.uint16)
    for j in range(m):
        b = first[j]
        window = padded[:, b] | (padded[:, b + 1] << np.uint32(8)) | (padded[:, b + 2] << np.uint32(16))
        out[:, j] = (window >> np.uint32(shift[j])) & mask
    return out


def unpack_codes_tf(packed_rows: tf.Tensor, bits: int, num_subspaces: int) -> tf.Tensor:
    """In-graph unpacking of gathered rows: ``uint8[N, ceil(M * bits / 8)]`` -> ``int32[N, M]``.

    For ``bits`` in ``{1, 2, 4, 8}`` it is a ``tf.bitwise.right_shift``, a mask and a reshape; other
    widths gather, per code, the bytes it spans (2 for ``bits <= 9``, else 3: one column gather per
    byte position, from constant indices), join them as ``lo + 256 * hi (+ 65536 * top)`` and take
    ``floormod(floordiv(window, 2**shift), 2**bits)``. Arithmetic instead of ``bitwise_and`` /
    ``bitwise_or`` (which tf2onnx cannot convert; ``RightShift`` converts to ONNX ``BitShift``,
    opset >= 11). The byte-window form costs about half the ops of a shift per byte (bench note in
    bench/BENCHMARKS.md, "The 8x target").
    """
    bits = check_bits(bits)
    m = int(num_subspaces)
    width = packed_width(m, bits)
    x = tf.cast(packed_rows, tf.int32)
    modulus = tf.constant(1 << bits, tf.int32)
    if bits == 8 or (m == 1 and bits < 8):  # one code per byte, stored as the byte's value
        return x[:, :m]
    if 8 % bits == 0:
        per_byte = 8 // bits
        shifts = tf.constant(np.arange(per_byte, dtype=np.int32) * bits)
        parts = tf.math.floormod(tf.bitwise.right_shift(x[:, :, None], shifts[None, None, :]), modulus)
        return tf.reshape(parts, [-1, width * per_byte])[:, :m]
    first, shift = _layout(m, bits)
    spans = 2 if bits <= 9 else 3  # a code starts at bit shift <= 7 of its first byte
    x = tf.pad(x, [[0, 0], [0, spans - 1]])
    window = tf.gather(x, tf.constant(first, tf.int32), axis=1)  # [N, M]: each code's first byte
    for j in range(1, spans):
        window = window + tf.gather(x, tf.constant(first + j, tf.int32), axis=1) * (256**j)
    divisor = tf.constant((1 << shift).astype(np.int32))[None, :]
    return tf.math.floormod(tf.math.floordiv(window, divisor), modulus)


def decode_packed_tf(packed_rows: tf.Tensor, codebooks: tf.Tensor, bits: int) -> tf.Tensor:
    """Embeddings of gathered bit-packed rows without unpacking them code by code.

    For ``bits`` in ``{1, 2, 4}`` one byte holds ``p = 8 / bits`` codes of consecutive sub-spaces.
    A byte table ``[width * 256, p * d/M]`` (for byte column ``j`` and byte value ``b``: the
    concatenated codewords of the ``p`` codes in ``b``) is gathered from the codebooks on every
    call (``width * 256 * p`` small rows, independent of the batch), and each packed row then needs
    ``width`` gathers of ``p * d/M`` floats instead of ``M`` gathers of ``d/M`` floats plus the
    shifts and masks of :func:`unpack_codes_tf`. The values are exactly those of
    ``decode_codes(unpack_codes_tf(...))``; the table is built from ``tf.range`` (nothing stored).

    Args:
        packed_rows: ``uint8[N, width]`` gathered rows of the packed codes.
        codebooks: float ``[M, K, d/M]``.
        bits: the code width, one of 1, 2, 4.

    Returns:
        float ``[N, M * d/M]``.
    """
    bits = check_bits(bits)
    if 8 % bits or bits == 8:
        raise ValueError(f"decode_packed_tf handles bits in (1, 2, 4), got {bits}")
    codebooks = tf.convert_to_tensor(codebooks)
    m, k, sub = (int(s) for s in codebooks.shape)
    per_byte = 8 // bits
    width = packed_width(m, bits)
    # codes held by each byte value: [256, p]; codes >= K never occur in real rows (clamped for safety)
    values = tf.range(256, dtype=tf.int32)[:, None]
    shifts = tf.constant(np.arange(per_byte, dtype=np.int32) * bits)[None, :]
    codes = tf.minimum(tf.math.floormod(tf.bitwise.right_shift(values, shifts), 1 << bits), k - 1)
    # flat codeword row of sub-space s = j * p + i; slots past the last sub-space read row 0 (cut below)
    subspace = np.arange(width * per_byte, dtype=np.int32).reshape(width, 1, per_byte)
    offsets = tf.constant(np.where(subspace < m, subspace * k, 0))
    live = tf.constant((subspace < m).astype(np.int32))
    index = tf.reshape(codes[None, :, :] * live + offsets, [width * 256, per_byte])
    table = tf.reshape(tf.gather(tf.reshape(codebooks, [m * k, sub]), index), [width * 256, per_byte * sub])
    rows = tf.cast(packed_rows, tf.int32) + tf.constant(np.arange(width, dtype=np.int32) * 256)[None, :]
    out = tf.reshape(tf.gather(table, rows), [-1, width * per_byte * sub])
    return out if width * per_byte == m else out[:, : m * sub]


__all__ = ["bits_needed", "packed_width", "check_bits", "pack_codes", "unpack_codes", "unpack_codes_tf",
           "decode_packed_tf"]
