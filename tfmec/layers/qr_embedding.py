"""Quotient-remainder embedding: ``V`` ids held in two small tables (Shi et al., 2019, "Compositional
Embeddings Using Complementary Partitions for Memory-Efficient Recommendation Systems").

Id ``i`` (after the usual mapping of ids outside ``[0, V)`` to the OOV id) reads row ``i // B`` of a
quotient table ``Q [ceil(V / B), d]`` and row ``i mod B`` of a remainder table ``R [B, d]``, and the two
rows are combined element-wise::

    e_i = Q[i // B] * R[i mod B]          (combiner "mul", the paper's and keras.io's choice)
    e_i = Q[i // B] + R[i mod B]          (combiner "add")

The two partitions are complementary: no two ids share both rows, so, unlike the hashing trick, no
two ids have the same embedding, while the tables hold ``ceil(V / B) + B`` rows instead of ``V``
(about ``2 sqrt(V)`` at ``B = ceil(sqrt(V))``, their fewest). This is the memory-efficient embedding of
the keras.io example, written here as one registered layer with plain TensorFlow ops (``FloorDiv``,
``FloorMod``, two ``Gather``, ``Mul``): it exports to a SavedModel and converts with tf2onnx as is.
"""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register, tf_variable
from tfmec.layers._utils import (
    MAX_ROWS,
    as_shape,
    make_initializer,
    map_out_of_range_ids,
    renamed_kwargs,
    serialize_initializer,
    zero_mask,
)

COMBINERS = ("mul", "add")


def quotient_rows(input_dim: int, num_buckets: int) -> int:
    """``ceil(V / B)``: the rows of the quotient table."""
    return -(-int(input_dim) // int(num_buckets))


@tfmec_export("tfmec.layers.QREmbedding")
@register
@renamed_kwargs({"vocab_size": "input_dim"})
class QREmbedding(keras.layers.Layer):
    """An embedding of ``V`` ids held in a quotient and a remainder table (module docstring).

    Example::

        layer = tfmec.layers.QREmbedding(1_000_000, 16, num_buckets=1000)   # 2,000 rows, not 10^6
        y = layer(tf.constant([3, 999_999]))                                 # shape (2, 16)

    Args:
        input_dim: ``V``, number of ids (``< 2**31``); ids outside ``[0, V)`` become ``oov_id`` first
            (mapped with ``tf.where``, never an error). ``vocab_size`` (keyword or attribute) is its
            deprecated name, accepted for one release with a ``DeprecationWarning``.
        output_dim: ``d``.
        num_buckets: ``B``, the rows of the remainder table (``1 <= B``); the quotient table has
            ``ceil(V / B)`` rows. ``B = ceil(sqrt(V))`` gives the fewest rows in all.
        combiner: ``"mul"`` (element-wise product, default) or ``"add"``.
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream skip id 0 as padding;
            the output is unchanged. Default False.
        oov_id: the id that out-of-range ids become.
        embeddings_initializer: initializer of the remainder table (Keras's Embedding default:
            ``"uniform"``, in [-0.05, 0.05]); also of the quotient table with ``combiner="add"``.
        quotient_initializer: initializer of the quotient table; default ``"ones"`` with ``"mul"`` (the
            layer then starts as its remainder table and the products keep the scale of an ordinary
            Embedding's rows, not the square of it), else ``embeddings_initializer``.
        seed: optional integer seed of the initializers (one derived per table).

    Weights (created in ``build``, both trainable: the trick trains the model from scratch):
        ``quotient_embeddings``: ``float32[ceil(V / B), d]``; ``remainder_embeddings``: ``float32[B, d]``.

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``,
        i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with ``mask_zero``) is bool
        ``[...]``, the ids' shape.

    Storage: ``4 d (ceil(V / B) + B)`` bytes (``storage_bytes``, equal to the bytes of
    ``layer.weights``), against ``4 V d`` for the full table.

    In a model::

        from tfmec.layers.qr_embedding import QREmbedding
        ids = keras.Input(shape=(), dtype="int32")
        emb = QREmbedding(1_000_000, 16, num_buckets=1000)(ids)   # 2,000 rows instead of 10^6
        model = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(emb))

    :func:`tfmec.baselines.qr_embeddings` puts such tables into a user's model at a byte budget.
    """

    is_embedding_table = True

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_buckets: int,
        combiner: str = "mul",
        mask_zero: bool = False,
        oov_id: int = 0,
        embeddings_initializer="uniform",
        quotient_initializer=None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        name = type(self).__name__
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.num_buckets = int(num_buckets)
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.output_dim < 1:
            raise ValueError(f"{name}: output_dim must be >= 1, got {output_dim}")
        if not 1 <= self.num_buckets <= MAX_ROWS:
            raise ValueError(f"{name}: num_buckets must be in [1, 2**31), got {num_buckets}")
        if combiner not in COMBINERS:
            raise ValueError(f"{name}: combiner must be one of {COMBINERS}, got {combiner!r}")
        self.combiner = str(combiner)
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.quotient_initializer = serialize_initializer(quotient_initializer)
        self.seed = None if seed is None else int(seed)

    @property
    def quotient_rows(self) -> int:
        """``ceil(V / B)``."""
        return quotient_rows(self.input_dim, self.num_buckets)

    @property
    def storage_bytes(self) -> int:
        """``4 d (ceil(V / B) + B)``: the two float32 tables."""
        return 4 * self.output_dim * (self.quotient_rows + self.num_buckets)

    def build(self, input_shape=None):
        q_init = self.quotient_initializer
        if q_init is None:
            q_init = "ones" if self.combiner == "mul" else self.embeddings_initializer
        self.quotient_embeddings = self.add_weight(
            name="quotient_embeddings", shape=(self.quotient_rows, self.output_dim), dtype="float32",
            initializer=make_initializer(q_init, self.seed, 0),
        )
        self.remainder_embeddings = self.add_weight(
            name="remainder_embeddings", shape=(self.num_buckets, self.output_dim), dtype="float32",
            initializer=make_initializer(self.embeddings_initializer, self.seed, 1),
        )
        self.built = True

    def rows_of(self, inputs):
        """``(quotient rows, remainder rows)``, int32 ``[...]`` each, that ids ``[...]`` read (out-of-range
        ids mapped to ``oov_id`` first)."""
        ids = map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)
        b = tf.constant(self.num_buckets, tf.int32)
        return tf.math.floordiv(ids, b), tf.math.floormod(ids, b)

    def call(self, inputs):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        q, r = self.rows_of(inputs)
        eq = tf.gather(tf_variable(self.quotient_embeddings), tf.reshape(q, [-1]))  # [N, d], sparse reads
        er = tf.gather(tf_variable(self.remainder_embeddings), tf.reshape(r, [-1]))
        out = eq * er if self.combiner == "mul" else eq + er
        out = tf.reshape(out, tf.concat([tf.shape(q), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (``[...]``, the ids' shape), as
        ``keras.layers.Embedding``. An incoming ``mask`` is ignored, as there."""
        return zero_mask(inputs, self.mask_zero)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim, num_buckets=self.num_buckets,
                      combiner=self.combiner, mask_zero=self.mask_zero, oov_id=self.oov_id,
                      embeddings_initializer=self.embeddings_initializer,
                      quotient_initializer=self.quotient_initializer, seed=self.seed)
        return config


__all__ = ["QREmbedding", "quotient_rows", "COMBINERS"]
