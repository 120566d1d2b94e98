"""Hashed embedding table: the hashing trick, ``V`` ids sharing ``B < V`` rows of a float table.

Id ``i`` (after the usual mapping of ids outside ``[0, V)`` to the OOV id) reads row ``h(i)`` of a
``float32[B, d]`` table, with a cubic polynomial hash modulo a prime (a 4-wise independent family,
Carter and Wegman)::

    h(i) = (((c3 * i + c2) * i + c1) * i + c0  mod P)  mod B,      P = 2**31 - 1 (prime)

``c0..c3`` (``1 <= c3 < P``) are fixed by ``salt`` (an integer; default 0). The arithmetic runs in
``int64`` with plain TensorFlow ops (``Cast``, ``Mul``, ``Add``, ``FloorMod``, ``Gather``):
deterministic, in-graph, no lookup table, so SavedModel and tf2onnx carry it as it is. Every
intermediate value is below ``2**31`` before a multiplication, so no product reaches ``2**62``.

Why a polynomial hash rather than ``i mod B`` or an affine ``(a i + c) mod P``: tfmec's
vocabularies number ids by descending frequency, so ``i mod B`` would give the ``B`` most frequent ids
rows of their own, an advantage the hashing trick on raw values (strings hashed before any
vocabulary exists) does not have; an affine hash maps the run of consecutive frequent ids to an
arithmetic progression and collides more or less than chance depending on ``B``. The cubic hash
spreads consecutive ids like a random function (occupancy within chance, checked in the tests), so
collisions do not depend on frequency, as when raw values are hashed.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import (
    MAX_ROWS,
    as_shape,
    make_initializer,
    map_out_of_range_ids,
    renamed_kwargs,
    serialize_initializer,
    zero_mask,
)

HASH_PRIME = 2**31 - 1


def _splitmix(x: int) -> int:
    """splitmix64 finaliser on a Python int (wrapping at 64 bits)."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def hash_coefficients(salt: int = 0) -> tuple[int, int, int, int]:
    """``(c3, c2, c1, c0)`` of the polynomial hash for ``salt``: ``1 <= c3 < P``, ``0 <= c2, c1, c0 < P``."""
    base = 4 * int(salt)
    c3 = 1 + _splitmix(base) % (HASH_PRIME - 1)
    return (c3,) + tuple(_splitmix(base + j) % HASH_PRIME for j in (1, 2, 3))


@tfmec_export("tfmec.layers.hash_buckets")
def hash_buckets(ids, num_buckets: int, salt: int = 0):
    """Buckets of non-negative integer ids ``[...]`` (each ``< 2**31``), in-graph.

    Returns:
        ``int32[...]`` in ``[0, num_buckets)``: the cubic hash of the module docstring, Horner's rule
        in ``int64``.
    """
    p = tf.constant(HASH_PRIME, tf.int64)
    x = tf.math.floormod(tf.cast(ids, tf.int64), p)
    coefs = hash_coefficients(salt)
    h = tf.constant(coefs[0], tf.int64)  # broadcasts to x's shape at the first step
    for c in coefs[1:]:
        h = tf.math.floormod(h * x + tf.constant(c, tf.int64), p)
    return tf.cast(tf.math.floormod(h, tf.constant(int(num_buckets), tf.int64)), tf.int32)


def hash_buckets_numpy(ids, num_buckets: int, salt: int = 0) -> np.ndarray:
    """NumPy reference of :func:`hash_buckets` (``int64[...]``)."""
    x = np.asarray(ids, dtype=np.int64) % HASH_PRIME
    coefs = hash_coefficients(salt)
    h = np.int64(coefs[0])
    for c in coefs[1:]:
        h = (h * x + c) % HASH_PRIME
    return h % int(num_buckets)


@tfmec_export("tfmec.layers.HashedEmbedding")
@register
@renamed_kwargs({"vocab_size": "input_dim"})
class HashedEmbedding(keras.layers.Layer):
    """An embedding of ``V`` ids held in ``B`` hashed rows (the hashing trick).

    Example::

        layer = tfmec.layers.HashedEmbedding(10_000, num_buckets=64, output_dim=8)   # 64 rows, not 10,000
        y = layer(tf.constant([[1, 7], [42, 9_999]]))                                # shape (2, 2, 8)

    Args:
        input_dim: ``V``, number of ids (``< 2**31``); ids outside ``[0, V)`` become ``oov_id`` first
            (mapped with ``tf.where``, never an error), then are hashed like any other id.
        num_buckets: ``B`` rows (``1 <= B``; ``B >= V`` is allowed but saves nothing).
        output_dim: ``d``.
        salt: picks the hash function (see :func:`hash_coefficients`).
        oov_id: the id that out-of-range ids become.
        embeddings_initializer: initializer of the table (Keras's Embedding default: ``"uniform"``).
        seed: optional integer seed of the initializer.
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream (pooling, attention,
            RNNs) skip id 0 as padding (the raw id, before hashing); the output is unchanged (id 0
            still reads its row). Default False.

    The positional order is ``(input_dim, num_buckets, output_dim)``. The deprecated keyword
    ``vocab_size`` (now ``input_dim``) is accepted for one release with a ``DeprecationWarning``; old
    configs load silently.

    Weights (created in ``build``): ``embeddings float32[B, d]`` (trainable: the hashing trick trains
    the model from scratch).

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``,
        i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with ``mask_zero``) is bool
        ``[...]``, the ids' shape.

    Storage: ``4 B d`` bytes (``storage_bytes``), whatever ``V``.
    """

    is_embedding_table = True

    def __init__(
        self,
        input_dim: int,
        num_buckets: int,
        output_dim: int,
        salt: int = 0,
        oov_id: int = 0,
        embeddings_initializer="uniform",
        seed: int | None = None,
        mask_zero: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        name = type(self).__name__
        self.input_dim = int(input_dim)
        self.num_buckets = int(num_buckets)
        self.output_dim = int(output_dim)
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if not 1 <= self.num_buckets <= MAX_ROWS:
            raise ValueError(f"{name}: num_buckets must be in [1, 2**31), got {num_buckets}")
        if self.output_dim < 1:
            raise ValueError(f"{name}: output_dim must be >= 1, got {output_dim}")
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self.salt = int(salt)
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.seed = None if seed is None else int(seed)

    @property
    def storage_bytes(self) -> int:
        """``4 B d``: the float32 table."""
        return 4 * self.num_buckets * self.output_dim

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, self.output_dim), dtype="float32",
            initializer=make_initializer(self.embeddings_initializer, self.seed, 0),
        )
        self.built = True

    def bucket_of(self, inputs):
        """The int32 rows ``[...]`` that ids ``[...]`` read (out-of-range ids mapped to ``oov_id`` first)."""
        ids = map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)
        return hash_buckets(ids, self.num_buckets, self.salt)

    def call(self, inputs):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        rows = self.bucket_of(inputs)
        out = tf.gather(self.embeddings, tf.reshape(rows, [-1]))  # [N, d] (sparse gradient rows)
        out = tf.reshape(out, tf.concat([tf.shape(rows), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (``[...]``, the ids' shape), as
        ``keras.layers.Embedding``. An incoming ``mask`` is ignored, as there."""
        return zero_mask(inputs, self.mask_zero)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, num_buckets=self.num_buckets, output_dim=self.output_dim,
                      salt=self.salt, oov_id=self.oov_id, embeddings_initializer=self.embeddings_initializer,
                      seed=self.seed, mask_zero=self.mask_zero)
        return config


__all__ = ["HashedEmbedding", "hash_buckets", "hash_buckets_numpy", "hash_coefficients", "HASH_PRIME"]
