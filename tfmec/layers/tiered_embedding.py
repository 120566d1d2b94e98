"""Embedding table stored in popularity tiers (beyond the MEC paper; issue 19).

tfmec numbers a table's ids by descending training frequency (id 0 is the OOV bucket), so a *tier*
is a range of ids: tier ``t`` holds ids ``start_t .. start_t + rows_t - 1`` and the tiers cover
``0 .. V - 1`` in order. Each tier has its own storage:

- ``exact``: float32 rows ``[rows_t, d]`` (the head: the most used ids cost ``4 d`` bytes each);
- ``pq``: product-quantisation codes ``[rows_t, M_t]`` bit-packed at ``bits_t`` bits per code (stored
  ``uint8[rows_t, ceil(M_t * bits_t / 8)]``) plus codebooks ``float32[M_t, K_t, d / M_t]``;
- ``hashed``: zero bytes per id: the code of id ``i`` in sub-space ``m`` is a multiplicative hash of
  ``i`` (:func:`hashed_codes`, one multiplier per sub-space), read from the tier's codebooks ``float32[M_t, K_t, d / M_t]``. ``K_t^M_t`` distinct rows for ``K_t * d * 4`` bytes: the far
  tail, ids seen rarely or never in training, costs nothing per id.

The lookup is plain gathers and ``tf.where`` (each tier decodes the batch's ids clipped into its range;
the tier an id falls in is selected), so the layer runs in TF Serving and converts with tf2onnx.

The contrastive term of MEC applies to the ``pq`` and ``hashed`` tiers as in
:class:`~tfmec.layers.QuantizedEmbedding` (semi-synthetic negatives of each id's own codes, from its own
tier's codebooks), averaged over the batch's ids of those tiers; the negatives are drawn from the
stateless seed ``(seed, negatives_step)`` so that resumed training draws the same ones.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import (MAX_ROWS, array_initializer, as_shape, map_out_of_range_ids, renamed_kwargs,
                                 zero_mask)
from tfmec.layers.bitpack import bits_needed, check_bits, pack_codes, packed_width, unpack_codes_tf
from tfmec.layers.hashed_embedding import hash_coefficients
from tfmec.layers.quantized_embedding import ContrastiveSteps, contrastive_loss

TIER_KINDS = ("exact", "pq", "hashed")


@tfmec_export("tfmec.layers.Tier")
@dataclasses.dataclass(frozen=True)
class Tier:
    """One id range of a :class:`TieredEmbedding` and how it is stored.

    Attributes:
        kind: ``"exact"``, ``"pq"`` or ``"hashed"`` (see the module docstring).
        rows: number of ids in the tier (>= 1).
        num_subspaces: ``M`` (pq and hashed; must divide ``d``).
        num_codewords: ``K`` (pq and hashed; 2..65536).
        bits: pq only: stored width of a code, ``ceil(log2 K)`` .. 16 (default ``ceil(log2 K)``).
    """

    kind: str
    rows: int
    num_subspaces: int = 0
    num_codewords: int = 0
    bits: int | None = None

    def __post_init__(self):
        if self.kind not in TIER_KINDS:
            raise ValueError(f"tier kind must be one of {TIER_KINDS}, got {self.kind!r}")
        if int(self.rows) < 1:
            raise ValueError(f"a {self.kind} tier needs at least 1 row, got {self.rows}")
        if self.kind != "exact":
            if int(self.num_subspaces) < 1:
                raise ValueError(f"a {self.kind} tier needs num_subspaces >= 1, got {self.num_subspaces}")
            if not 2 <= int(self.num_codewords) <= 65536:
                raise ValueError(f"a {self.kind} tier needs num_codewords in [2, 65536], got {self.num_codewords}")
        if self.kind == "pq":
            object.__setattr__(self, "bits", check_bits(self.bits or bits_needed(self.num_codewords),
                                                        self.num_codewords))
        elif self.bits is not None:
            raise ValueError(f"bits applies to pq tiers only, not {self.kind}")

    @classmethod
    def from_config(cls, config) -> "Tier":
        """A tier from a dict (``to_config``'s) or a Tier."""
        if isinstance(config, Tier):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(f"a tier is a dict with kind and rows, got {config!r}")
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown tier key(s) {sorted(unknown)}; a tier has kind, rows, num_subspaces, "
                             "num_codewords, bits")
        return cls(**dict(config))

    def to_config(self) -> dict:
        """The JSON-serialisable dict of the tier (the layer's config holds a list of them)."""
        out = {"kind": self.kind, "rows": int(self.rows)}
        if self.kind != "exact":
            out.update(num_subspaces=int(self.num_subspaces), num_codewords=int(self.num_codewords))
        if self.kind == "pq":
            out["bits"] = int(self.bits)
        return out

    def id_bytes(self, dim: int) -> float:
        """Bytes per id: ``4 d`` (exact), ``ceil(M bits / 8)`` (pq), 0 (hashed)."""
        if self.kind == "exact":
            return 4.0 * dim
        if self.kind == "pq":
            return float(packed_width(self.num_subspaces, self.bits))
        return 0.0

    def fixed_bytes(self, dim: int) -> int:
        """Bytes independent of the number of ids: the codebooks ``K d * 4`` (pq, hashed), else 0."""
        return 0 if self.kind == "exact" else int(self.num_codewords) * int(dim) * 4

    def storage_bytes(self, dim: int) -> int:
        """Bytes of the tier's weights: ``rows * id_bytes + fixed_bytes``."""
        return int(round(self.rows * self.id_bytes(dim))) + self.fixed_bytes(dim)


@tfmec_export("tfmec.layers.tiers_storage_bytes")
def tiers_storage_bytes(tiers: Sequence, dim: int, contrastive: bool = False) -> int:
    """Bytes of a :class:`TieredEmbedding` with these tiers and width ``dim`` (weights as stored, plus
    the 8-byte ``negatives_step`` counter when the layer has a contrastive term)."""
    tiers = [Tier.from_config(t) for t in tiers]
    has_codes = any(t.kind != "exact" for t in tiers)
    return sum(t.storage_bytes(dim) for t in tiers) + (8 if contrastive and has_codes else 0)


def _hash_multipliers(num_subspaces: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` ``int32[M]``: odd multipliers and offsets of the hashed codes (the bits of the
    splitmix coefficients of :func:`tfmec.layers.hashed_embedding.hash_coefficients`, as int32)."""
    coefs = np.array([hash_coefficients(int(salt) * 1024 + j) for j in range(int(num_subspaces))], dtype=np.uint64)
    a = ((coefs[:, 0] * np.uint64(2) + np.uint64(1)) % np.uint64(2**32)).astype(np.uint32)  # odd
    b = (coefs[:, 1] % np.uint64(2**32)).astype(np.uint32)
    return a.view(np.int32), b.view(np.int32)


def hashed_codes(ids, num_subspaces: int, num_codewords: int, salt: int = 0):
    """In-graph codes of a hashed tier: ``int32[N, M]`` for integer ids ``[N]`` (``0 <= id < 2**31``).

    Multiplicative hashing, one odd multiplier per sub-space: ``h_m = a_m * id + b_m`` in int32
    arithmetic, which wraps modulo 2**32 (as NumPy's, XLA's and ONNX Runtime's), read as uint32; the
    code is the top ``log2 K`` bits of ``h_m`` (a right shift, for ``K`` a power of two) or ``h_m mod K``
    (in int64). No signed division: ONNX's integer ``Div`` truncates where TensorFlow's floors."""
    a, b = _hash_multipliers(num_subspaces, salt)
    k = int(num_codewords)
    h = tf.cast(tf.cast(ids, tf.int32)[:, None] * tf.constant(a)[None, :] + tf.constant(b)[None, :], tf.uint32)
    if k & (k - 1) == 0:
        shift = 32 - (k.bit_length() - 1)
        if shift == 32:  # K = 1: every id reads codeword 0
            return tf.zeros_like(h, tf.int32)
        return tf.cast(tf.bitwise.right_shift(h, tf.constant(shift, tf.uint32)), tf.int32)
    return tf.cast(tf.math.floormod(tf.cast(h, tf.int64), tf.constant(k, tf.int64)), tf.int32)


def hashed_codes_numpy(ids, num_subspaces: int, num_codewords: int, salt: int = 0) -> np.ndarray:
    """NumPy reference of :func:`hashed_codes`: ``int64[N, M]`` (the wrap computed in uint32)."""
    a, b = _hash_multipliers(num_subspaces, salt)
    k = int(num_codewords)
    x = np.asarray(ids, dtype=np.int64).astype(np.uint32)[:, None]
    h = (x * a.view(np.uint32)[None, :] + b.view(np.uint32)[None, :]).astype(np.int64)  # in [0, 2**32)
    if k & (k - 1) == 0:
        return h >> (32 - (k.bit_length() - 1)) if k > 1 else np.zeros_like(h)
    return h % k


@tfmec_export("tfmec.layers.TieredEmbedding")
@register
@renamed_kwargs({"vocab_size": "input_dim", "temperature": "contrastive_temperature"})
class TieredEmbedding(ContrastiveSteps, keras.layers.Layer):
    """Embedding table whose ids fall into popularity tiers, each with its own storage (issue 19).

    Example::

        layer = tfmec.layers.TieredEmbedding(1000, 16, tiers=[
            {"kind": "exact", "rows": 50},
            {"kind": "pq", "rows": 450, "num_subspaces": 4, "num_codewords": 16},
            {"kind": "hashed", "rows": 500, "num_subspaces": 4, "num_codewords": 16}])
        y = layer(tf.constant([0, 7, 999]))   # shape (3, 16)
        layer.storage_bytes                   # 6148 = 50*64 + 450*2 + 16*16*4 + 16*16*4

    Args:
        input_dim: ``V``, number of ids (``< 2**31``); the tiers' rows must sum to it.
        output_dim: ``d``; every ``num_subspaces`` must divide it.
        tiers: the tiers in id order, as :class:`Tier` or dicts (``{"kind": "pq", "rows": 900,
            "num_subspaces": 4, "num_codewords": 16, "bits": 4}``).
        arrays: optional initial values, one dict per tier (never part of the config: the weights
            carry them): ``{"rows": float[rows, d]}`` (exact), ``{"codes": int[rows, M], "codebooks":
            float[M, K, d/M]}`` (pq), ``{"codebooks": float[M, K, d/M]}`` (hashed). Default: rows and
            codebooks normal(0, 0.05), codes uniform, drawn with ``seed``.
        trainable_codebooks: whether exact rows and codebooks train (codes never do).
        oov_id: the row used for ids ``< 0`` or ``>= V``.
        contrastive_weight, num_negatives, contrastive_temperature: MEC's contrastive term (see
            :class:`~tfmec.layers.QuantizedEmbedding`); 0 turns it off.
        hash_salt: salt of the hashed tiers' codes (tier ``t`` uses ``hash_salt + t``).
        seed: seed of the default initial values and of the negatives.
        mask_zero: as ``keras.layers.Embedding``: ``compute_mask`` returns ``ids != 0``.

    Deprecated keywords and attributes (accepted for one release with a ``DeprecationWarning``; old
    configs load silently): ``vocab_size`` (now ``input_dim``), ``temperature`` (now
    ``contrastive_temperature``).

    Weights: ``table float32[R, G]``: every exact row and every codebook in one weight, ``G`` the gcd
    of the coded tiers' ``d / M`` (:attr:`slot_width`; ``d`` when there is none), tier after tier
    (:meth:`tier_rows` and :meth:`tier_codebooks` are views of it), so that a lookup is integer index
    arithmetic and ONE gather of ``d / G`` rows per id; ``codes_t uint8[rows, ceil(M bits / 8)]``
    (non-trainable) per pq tier ``t``; ``negatives_step`` (int64 scalar) with a contrastive term.

    Shapes: integer ids ``[...]`` -> ``[..., d]`` (compute dtype); the mask is bool ``[...]``.

    Storage: ``storage_bytes`` equals the bytes of ``layer.weights`` and
    :func:`tiers_storage_bytes` of the config.
    """

    is_embedding_table = True

    def __init__(self, input_dim: int, output_dim: int, tiers: Sequence, arrays: Sequence | None = None,
                 trainable_codebooks: bool = True, oov_id: int = 0, contrastive_weight: float = 0.0,
                 num_negatives: int = 4, contrastive_temperature: float = 0.5, hash_salt: int = 0,
                 seed: int | None = None, mask_zero: bool = False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.output_dim < 1:
            raise ValueError(f"{name}: output_dim must be >= 1, got {output_dim}")
        self.tiers = [Tier.from_config(t) for t in tiers]
        if not self.tiers:
            raise ValueError(f"{name}: give at least one tier")
        total = sum(t.rows for t in self.tiers)
        if total != self.input_dim:
            raise ValueError(f"{name}: the tiers' rows sum to {total}, not input_dim {self.input_dim}")
        for t, tier in enumerate(self.tiers):
            if tier.kind != "exact" and self.output_dim % tier.num_subspaces:
                raise ValueError(f"{name}: tier {t} ({tier.kind}): num_subspaces {tier.num_subspaces} does not "
                                 f"divide output_dim {self.output_dim}")
        self.starts = [0]
        for tier in self.tiers[:-1]:
            self.starts.append(self.starts[-1] + tier.rows)
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self._set_contrastive(contrastive_weight, num_negatives, contrastive_temperature, seed)
        self.trainable_codebooks = bool(trainable_codebooks)
        self.hash_salt = int(hash_salt)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self._initial = self._check_arrays(arrays)
        self.tier_codes_weights = {}
        self.negatives_step = None
        self._last_contrastive_loss = None

    def _check_arrays(self, arrays):
        name = type(self).__name__
        if arrays is None:
            return [None] * len(self.tiers)
        if len(arrays) != len(self.tiers):
            raise ValueError(f"{name}: arrays has {len(arrays)} entries for {len(self.tiers)} tiers")
        out = []
        d = self.output_dim
        for t, (tier, given) in enumerate(zip(self.tiers, arrays)):
            if given is None:
                out.append(None)
                continue
            given = dict(given)
            if tier.kind == "exact":
                rows = np.asarray(given["rows"], np.float32)
                if rows.shape != (tier.rows, d):
                    raise ValueError(f"{name}: tier {t} rows must be [{tier.rows}, {d}], got {rows.shape}")
                out.append({"rows": rows})
                continue
            m, k = tier.num_subspaces, tier.num_codewords
            books = np.asarray(given["codebooks"], np.float32)
            if books.shape != (m, k, d // m):
                raise ValueError(f"{name}: tier {t} codebooks must be [{m}, {k}, {d // m}], got {books.shape}")
            entry = {"codebooks": books}
            if tier.kind == "pq":
                codes = np.asarray(given["codes"])
                if codes.shape != (tier.rows, m) or not np.issubdtype(codes.dtype, np.integer):
                    raise ValueError(f"{name}: tier {t} codes must be integers [{tier.rows}, {m}], got "
                                     f"{codes.dtype} {codes.shape}")
                if codes.size and (codes.min() < 0 or codes.max() >= k):
                    raise ValueError(f"{name}: tier {t} codes must lie in [0, {k})")
                entry["codes"] = codes
            out.append(entry)
        return out

    # ------------------------------------------------------------------ properties
    @property
    def storage_bytes(self) -> int:
        """Bytes of the weights as stored (:func:`tiers_storage_bytes`)."""
        return tiers_storage_bytes(self.tiers, self.output_dim, self.contrastive_weight > 0)

    @property
    def last_contrastive_loss(self):
        """The unweighted contrastive loss of the last training call (None before any)."""
        return self._last_contrastive_loss

    # ------------------------------------------------------------------ construction
    # ------------------------------------------------------------------ layout
    @property
    def slot_width(self) -> int:
        """``G``: floats per row of the ``table`` weight, the gcd of ``d / M_t`` over the coded tiers
        (``d`` without any): each id reads ``S = d / G`` rows of it."""
        g = self.output_dim
        for t in self.tiers:
            if t.kind != "exact":
                g = math.gcd(g, self.output_dim // t.num_subspaces)
        return g

    def _layout(self) -> list[int]:
        """Row offset of each tier's block in ``table``: exact rows take ``rows * S`` rows, a coded
        tier's codebooks ``M * K * r`` (``r = d / M / G`` rows per codeword)."""
        g = self.slot_width
        slots = self.output_dim // g
        bases, base = [], 0
        for t in self.tiers:
            bases.append(base)
            base += t.rows * slots if t.kind == "exact" else t.num_subspaces * t.num_codewords * (
                self.output_dim // t.num_subspaces // g)
        bases.append(base)
        return bases

    def tier_rows(self, t: int):
        """The exact rows of exact tier ``t``: a ``float32[rows, d]`` view of ``table``."""
        a, b = self._layout()[t:t + 2]
        return tf.reshape(self.table[a:b], [self.tiers[t].rows, self.output_dim])

    def tier_codebooks(self, t: int):
        """The codebooks of coded tier ``t``: a ``float32[M, K, d / M]`` view of ``table``."""
        tier = self.tiers[t]
        a, b = self._layout()[t:t + 2]
        return tf.reshape(self.table[a:b], [tier.num_subspaces, tier.num_codewords,
                                            self.output_dim // tier.num_subspaces])

    # ------------------------------------------------------------------ construction
    def _table_initial_value(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        g, d = self.slot_width, self.output_dim
        blocks = []
        for tier, given in zip(self.tiers, self._initial):
            given = given or {}
            if tier.kind == "exact":
                rows = given.get("rows")
                if rows is None:
                    rows = rng.normal(0, 0.05, size=(tier.rows, d)).astype(np.float32)
                blocks.append(np.asarray(rows, np.float32).reshape(-1, g))
            else:
                books = given.get("codebooks")
                if books is None:
                    books = rng.normal(0, 0.05, size=(tier.num_subspaces, tier.num_codewords,
                                                      d // tier.num_subspaces)).astype(np.float32)
                blocks.append(np.asarray(books, np.float32).reshape(-1, g))  # codeword (m, k): r rows of G
        return np.concatenate(blocks, axis=0)

    def build(self, input_shape=None):
        rng = np.random.default_rng(None if self.seed is None else self.seed + 1)
        self.table = self.add_weight(name="table", shape=(self._layout()[-1], self.slot_width), dtype="float32",
                                     initializer=array_initializer(self._table_initial_value()),
                                     trainable=self.trainable_codebooks)
        self.tier_codes_weights = {}
        for t, (tier, given) in enumerate(zip(self.tiers, self._initial)):
            if tier.kind != "pq":
                continue
            codes = (given or {}).get("codes")
            if codes is None:
                codes = rng.integers(0, tier.num_codewords, size=(tier.rows, tier.num_subspaces))
            packed = pack_codes(codes, tier.bits)
            self.tier_codes_weights[t] = self.add_weight(name=f"codes_{t}", shape=packed.shape, dtype="uint8",
                                                         initializer=array_initializer(packed), trainable=False)
        if self.contrastive_weight > 0 and any(t.kind != "exact" for t in self.tiers):
            self.negatives_step = self._add_step_counter()
        self._initial = [None] * len(self.tiers)  # the weights hold the arrays now
        self.built = True

    # ------------------------------------------------------------------ computation
    def tier_codes(self, t: int, local, ids):
        """Int32 codes ``[N, M_t]`` of coded tier ``t`` for ``local`` rows of the tier and table ``ids``
        ``[N]`` (int32)."""
        tier = self.tiers[t]
        if tier.kind == "hashed":
            return hashed_codes(ids, tier.num_subspaces, tier.num_codewords, self.hash_salt + t)
        packed = tf.gather(self.tier_codes_weights[t], local)  # uint8 [N, ceil(M bits / 8)]
        if tier.bits in (1, 2, 4):  # several codes per byte: one gather from a [256, 8 / bits] table of them
            per_byte = 8 // tier.bits
            table = tf.constant(((np.arange(256)[:, None] >> (np.arange(per_byte) * tier.bits)[None, :])
                                 % (1 << tier.bits)).astype(np.int32))
            codes = tf.reshape(tf.gather(table, tf.cast(packed, tf.int32)), [-1, packed.shape[1] * per_byte])
            return codes if packed.shape[1] * per_byte == tier.num_subspaces else codes[:, :tier.num_subspaces]
        return unpack_codes_tf(packed, tier.bits, tier.num_subspaces)

    def _local(self, t: int, ids):
        """Rows of tier ``t`` for table ids ``[N]``, clipped into the tier (ids of other tiers read a
        row that the selection then drops)."""
        start, rows = self.starts[t], self.tiers[t].rows
        if len(self.tiers) == 1:
            return ids
        if start == 0:
            return tf.minimum(ids, rows - 1)
        if start + rows == self.input_dim:
            return tf.maximum(ids - start, 0)
        return tf.clip_by_value(ids - start, 0, rows - 1)

    def _in_tier(self, t: int, ids):
        """Bool ``[N]``: the ids of ``[N]`` that fall in tier ``t``."""
        start, stop = self.starts[t], self.starts[t] + self.tiers[t].rows
        if start == 0:
            return ids < stop
        if stop == self.input_dim:
            return ids >= start
        return tf.logical_and(ids >= start, ids < stop)

    def _slots(self, t: int, ids, base: int, slots: int, g: int):
        """``(int32 [N, S] rows of table, codes [N, M] or None)`` that tier ``t`` reads for ``ids``."""
        tier = self.tiers[t]
        local = self._local(t, ids)
        if tier.kind == "exact":
            if slots == 1:
                return (local if base == 0 else local + base)[:, None], None
            return local[:, None] * slots + tf.constant(base + np.arange(slots, dtype=np.int32))[None, :], None
        codes = self.tier_codes(t, local, ids)
        m, k = tier.num_subspaces, tier.num_codewords
        r = self.output_dim // m // g
        offsets = (np.arange(m, dtype=np.int32) * k) * r + base  # row of codeword 0 of each sub-space
        if r == 1:  # [N, M]: one add
            return codes + tf.constant(offsets)[None, :], codes
        first = codes * r + tf.constant(offsets)[None, :]
        return tf.reshape(first[:, :, None] + tf.constant(np.arange(r, dtype=np.int32))[None, None, :],
                          [-1, slots]), codes

    def call(self, inputs, training=None):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring): every tier gives the rows of
        ``table`` its ids read, one ``tf.where`` per tier boundary picks them on integers, and one
        gather reads them all."""
        if not self.built:
            self.build(None)
        ids = map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)
        flat = ids.shape.rank == 1
        flat_ids = ids if flat else tf.reshape(ids, [-1])
        g = self.slot_width
        slots = self.output_dim // g
        bases = self._layout()
        index, codes = None, {}
        for t in range(len(self.tiers)):
            idx, codes[t] = self._slots(t, flat_ids, bases[t], slots, g)
            # in id order, each tier takes the ids from its start on (later tiers take theirs in turn)
            index = idx if index is None else tf.where((flat_ids >= self.starts[t])[:, None], idx, index)
        out = tf.reshape(tf.gather(tf.cast(self.table, tf.float32), index), [-1, self.output_dim])
        if bool(training) and self.negatives_step is not None:
            self._add_contrastive(flat_ids, out, codes, inputs)
        if not flat:
            out = tf.reshape(out, tf.concat([tf.shape(ids), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def _add_contrastive(self, ids, rows, codes: dict, inputs):
        """Adds ``beta`` times the contrastive loss of the coded tiers' ids (each against negatives from
        its own tier's codebooks), averaged over those ids."""
        counted = None
        if self.mask_zero:
            counted = tf.cast(tf.reshape(tf.not_equal(tf.convert_to_tensor(inputs), 0), [-1]), tf.float32)
        seed = self._next_negatives_seed()
        losses, weights = [], []
        for t, tier_codes in codes.items():
            if tier_codes is None:
                continue
            w = tf.cast(self._in_tier(t, ids), tf.float32) if len(self.tiers) > 1 else tf.ones_like(ids, tf.float32)
            if counted is not None:
                w = w * counted
            tier_seed = seed + tf.constant([t * 7919, 0], tf.int64)  # other negatives per tier
            loss = contrastive_loss(rows, tier_codes, self.tier_codebooks(t), self.num_negatives,
                                    self.contrastive_temperature, seed=tier_seed, row_weights=w)
            losses.append(loss * tf.reduce_sum(w))
            weights.append(tf.reduce_sum(w))
        loss = tf.math.divide_no_nan(tf.add_n(losses), tf.add_n(weights))
        self._last_contrastive_loss = loss
        self.add_loss(self.contrastive_weight * loss)

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (the ids' shape)."""
        return zero_mask(inputs, self.mask_zero)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def decoded_table(self, ids=None) -> np.ndarray:
        """NumPy ``float32[N, d]`` rows of ``ids`` (default: every id) as the layer reads them."""
        ids = np.arange(self.input_dim) if ids is None else np.asarray(ids)
        return np.asarray(self(tf.constant(ids.astype(np.int64)), training=False), np.float32)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim,
                      tiers=[t.to_config() for t in self.tiers], trainable_codebooks=self.trainable_codebooks,
                      oov_id=self.oov_id, contrastive_weight=self.contrastive_weight,
                      num_negatives=self.num_negatives, contrastive_temperature=self.contrastive_temperature,
                      hash_salt=self.hash_salt, seed=self.seed, mask_zero=self.mask_zero)
        return config


__all__ = ["Tier", "TieredEmbedding", "TIER_KINDS", "tiers_storage_bytes", "hashed_codes", "hashed_codes_numpy"]
