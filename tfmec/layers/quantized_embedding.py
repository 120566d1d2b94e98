"""Product-quantised embedding table: the stage-2 embedding layer of MEC.

An id ``i`` of a field with ``V`` ids is stored as ``M`` small integer codes (one per sub-space) and
its embedding is the concatenation of the selected codewords, optionally followed by a learned
``d x d`` projection::

    e_i = concat_m( codebooks[m, codes[i, m]] ) @ projection          (d = M * subspace_dim)

The lookup is two plain ``tf.gather`` ops (the code rows of the ids, then the codewords from the
codebooks flattened to ``[M * K, d / M]`` with offsets ``m * K``), so the layer runs in TF Serving and
converts with tf2onnx without custom ops or hash tables.

Randomness of the contrastive regulariser. With ``contrastive_weight > 0`` the layer holds a
non-trainable ``int64`` step counter, ``negatives_step``, and draws each training step's negatives
with ``tf.random.stateless_uniform`` from the seed ``(seed, negatives_step)``, then adds one to the
counter. The draws are therefore a pure function of the layer's variables: a checkpoint (or a saved
model) carries the position in the random stream, and training resumed after a kill draws exactly the
negatives an uninterrupted run would. Under ``tf.distribute`` the counter is updated by the first
replica only (``ONLY_FIRST_REPLICA``); every replica draws with the same seed, on its own rows. With
``seed=None`` the seed is drawn once, at construction, from NumPy's global generator (which
``keras.utils.set_random_seed`` seeds).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import IS_LEGACY_KERAS, keras, register
from tfmec.layers._utils import (MAX_ROWS, array_initializer, as_shape, map_out_of_range_ids, renamed_kwargs,
                                 zero_mask)
from tfmec.layers.bitpack import check_bits, decode_packed_tf, pack_codes, packed_width, unpack_codes_tf



def _code_dtype(num_codewords: int) -> str:
    """Stored dtype of an unpacked code: ``uint8`` when ``K <= 256``, else ``uint16``."""
    return "uint8" if int(num_codewords) <= 256 else "uint16"


@tfmec_export("tfmec.layers.decode_codes")
def decode_codes(codes, codebooks, projection=None):
    """Quantised embeddings of integer codes.

    Args:
        codes: integer ``[..., M]`` codeword indices (any integer dtype; cast to int32 here).
        codebooks: float ``[M, K, d / M]``.
        projection: optional ``[d, d]`` applied after the concatenation.

    Returns:
        ``[..., d]``: ``concat_m(codebooks[m, codes[..., m]]) (@ projection)``, computed with one
        gather on the codebooks flattened to ``[M * K, d / M]``.
    """
    codebooks = tf.convert_to_tensor(codebooks)
    m, k, sub = (int(s) for s in codebooks.shape)
    codes = tf.cast(codes, tf.int32)
    flat_codebooks = tf.reshape(codebooks, [m * k, sub])
    parts = tf.gather(flat_codebooks, codes + tf.constant(np.arange(m, dtype=np.int32) * k))  # [..., M, d/M]
    if codes.shape.rank == 2:  # [N, M]: a static reshape
        out_shape = [-1, m * sub]
    else:
        out_shape = tf.concat([tf.shape(codes)[:-1], [m * sub]], axis=0)
    if projection is None:
        return tf.reshape(parts, out_shape)
    projection = tf.cast(tf.convert_to_tensor(projection), codebooks.dtype)
    return tf.reshape(tf.matmul(tf.reshape(parts, [-1, m * sub]), projection), out_shape)


def _is_stateless_seed(seed) -> bool:
    if seed is None or isinstance(seed, (int, np.integer)):
        return False
    return isinstance(seed, (tf.Tensor, tf.Variable, np.ndarray, list, tuple))


@tfmec_export("tfmec.layers.semi_synthetic_negative_codes")
def semi_synthetic_negative_codes(codes, num_codewords: int, num_negatives: int, seed=None):
    """Semi-synthetic negatives of MEC: ``num_negatives`` corrupted copies of each row of codes.

    Each negative replaces the code of ONE sub-space, chosen uniformly per row and per negative,
    with a uniformly drawn OTHER codeword: ``(code + r) mod K`` with ``r`` uniform in ``[1, K)``.

    Args:
        codes: integer ``[N, M]``.
        num_codewords: ``K`` (>= 2).
        num_negatives: negatives per row (>= 1).
        seed: None or an int (stateful ``tf.random.uniform``: a new draw on every call / step), or a
            shape-``[2]`` integer tensor (``tf.random.stateless_uniform``: a function of the seed).

    Returns:
        ``int32[N, num_negatives, M]``.
    """
    k = int(num_codewords)
    n_neg = int(num_negatives)
    if k < 2:
        raise ValueError(f"num_codewords must be >= 2, got {num_codewords}")
    if n_neg < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    codes = tf.cast(codes, tf.int32)
    m = codes.shape[-1] if codes.shape.rank is not None and codes.shape[-1] is not None else tf.shape(codes)[-1]
    shape = tf.stack([tf.shape(codes)[0], n_neg])
    if _is_stateless_seed(seed):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        which = tf.random.stateless_uniform(shape, seed=seeds[0], minval=0, maxval=m, dtype=tf.int32)
        shift = tf.random.stateless_uniform(shape, seed=seeds[1], minval=1, maxval=k, dtype=tf.int32)
    else:
        op_seed = None if seed is None else int(seed)
        which = tf.random.uniform(shape, minval=0, maxval=m, dtype=tf.int32, seed=op_seed)
        shift = tf.random.uniform(
            shape, minval=1, maxval=k, dtype=tf.int32, seed=None if op_seed is None else op_seed + 1
        )
    base = codes[:, None, :]  # [N, 1, M]
    hit = tf.equal(tf.range(m, dtype=tf.int32)[None, None, :], which[:, :, None])  # [N, n, M]
    replaced = tf.math.floormod(base + shift[:, :, None], k)
    return tf.where(hit, replaced, base)


@tfmec_export("tfmec.layers.contrastive_loss")
@renamed_kwargs({"temperature": "contrastive_temperature"})
def contrastive_loss(
    anchor,
    codes,
    codebooks,
    num_negatives: int,
    contrastive_temperature: float,
    seed=None,
    projection=None,
    stop_anchor_gradient: bool = True,
    row_weights=None,
):
    """MEC contrastive loss on semi-synthetic negatives (InfoNCE with one positive).

    With ``q+ = decode(codes)`` and ``q-_n = decode(negative codes n)`` (see
    :func:`semi_synthetic_negative_codes`), ``s+ = cos(anchor, q+)``, ``s-_n = cos(anchor, q-_n)``::

        loss = mean_rows( -log( exp(s+/tau) / (exp(s+/tau) + sum_n exp(s-_n/tau)) ) )

    computed as ``logsumexp([s+, s-_1..N] / tau) - s+/tau``.

    Args:
        anchor: ``[N, d]``; stage 2 passes the looked-up quantised embeddings, stage 1 the original
            embeddings. Gradient-stopped unless ``stop_anchor_gradient=False``.
        codes: integer ``[N, M]``, the codes of the positives.
        codebooks: ``[M, K, d / M]`` (gradients flow into them through positives and negatives).
        num_negatives: negatives per row.
        contrastive_temperature: ``tau`` (> 0), the InfoNCE temperature (the deprecated keyword
            ``temperature`` is accepted for one release, with a ``DeprecationWarning``).
        seed: see :func:`semi_synthetic_negative_codes`.
        projection: optional ``[d, d]`` applied to positives and negatives after decoding.
        stop_anchor_gradient: apply ``tf.stop_gradient`` to the anchor (default True).
        row_weights: optional ``[N]`` weights (bool or float) of the rows: the loss is then
            ``sum(w * loss_row) / sum(w)`` (0 when every weight is 0). ``QuantizedEmbedding(mask_zero=True)``
            passes ``ids != 0`` so that padding does not count. Static shapes: XLA-compatible, unlike
            dropping the rows with ``tf.boolean_mask``.

    Returns:
        A float32 scalar (0 for an empty batch).
    """
    if float(contrastive_temperature) <= 0:
        raise ValueError(f"contrastive_temperature must be > 0, got {contrastive_temperature}")
    codebooks = tf.cast(tf.convert_to_tensor(codebooks), tf.float32)
    anchor = tf.cast(anchor, tf.float32)
    if stop_anchor_gradient:
        anchor = tf.stop_gradient(anchor)
    codes = tf.cast(codes, tf.int32)
    k = int(codebooks.shape[1])
    negative_codes = semi_synthetic_negative_codes(codes, k, num_negatives, seed)
    positive = decode_codes(codes, codebooks, projection)  # [N, d]
    negative = decode_codes(negative_codes, codebooks, projection)  # [N, n, d]
    a = tf.math.l2_normalize(anchor, axis=-1, epsilon=1e-12)
    s_pos = tf.reduce_sum(a * tf.math.l2_normalize(positive, axis=-1, epsilon=1e-12), axis=-1)  # [N]
    s_neg = tf.reduce_sum(a[:, None, :] * tf.math.l2_normalize(negative, axis=-1, epsilon=1e-12), axis=-1)
    logits = tf.concat([s_pos[:, None], s_neg], axis=1) / float(contrastive_temperature)  # [N, 1 + n]
    per_row = tf.reduce_logsumexp(logits, axis=1) - logits[:, 0]
    if row_weights is not None:
        weights = tf.cast(tf.reshape(row_weights, [-1]), tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(weights * per_row), tf.reduce_sum(weights))
    rows = tf.cast(tf.shape(per_row)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_row), rows)



class ContrastiveSteps:
    """The ``negatives_step`` counter of a layer with a contrastive term (see the module docstring):
    ``_add_step_counter`` in ``build``, ``_next_negatives_seed`` once per training call. The layer sets
    ``self._negatives_seed`` (int) and ``self.negatives_step``."""

    def _set_contrastive(self, contrastive_weight, num_negatives, contrastive_temperature, seed) -> None:
        """Checks and sets ``contrastive_weight`` (>= 0), ``num_negatives`` (>= 1),
        ``contrastive_temperature`` (> 0) and ``seed``, and draws the first half of the negatives'
        stateless seed (``seed``, else one draw from NumPy's global generator; the second half is the
        ``negatives_step`` counter)."""
        name = type(self).__name__
        self.contrastive_weight = float(contrastive_weight)
        if self.contrastive_weight < 0:
            raise ValueError(f"{name}: contrastive_weight must be >= 0, got {contrastive_weight}")
        self.num_negatives = int(num_negatives)
        if self.num_negatives < 1:
            raise ValueError(f"{name}: num_negatives must be >= 1, got {num_negatives}")
        self.contrastive_temperature = float(contrastive_temperature)
        if self.contrastive_temperature <= 0:
            raise ValueError(f"{name}: contrastive_temperature must be > 0, got {contrastive_temperature}")
        self.seed = None if seed is None else int(seed)
        self._negatives_seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**31 - 1))

    def _add_step_counter(self):
        """The scalar ``int64`` counter of training steps that drew negatives (see the module doc)."""
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA if IS_LEGACY_KERAS else "only_first_replica"
        return self.add_weight(name="negatives_step", shape=(), dtype="int64", initializer="zeros",
                               trainable=False, aggregation=aggregation)

    def _next_negatives_seed(self):
        """The shape-``[2]`` stateless seed of this step's negatives; advances ``negatives_step``."""
        step = tf.convert_to_tensor(self.negatives_step)
        seed = tf.stack([tf.constant(self._negatives_seed, tf.int64), tf.cast(step, tf.int64)])
        with tf.control_dependencies([seed]):
            self.negatives_step.assign_add(1)
        return seed



@tfmec_export("tfmec.layers.QuantizedEmbedding")
@register
@renamed_kwargs({"vocab_size": "input_dim", "temperature": "contrastive_temperature"})
class QuantizedEmbedding(ContrastiveSteps, keras.layers.Layer):
    """Embedding table stored as product-quantisation codes plus codebooks (MEC, stage 2).

    Example::

        layer = tfmec.layers.QuantizedEmbedding(1000, num_subspaces=4, num_codewords=16, subspace_dim=4,
                                                seed=0)   # random codes; stage 1 gives learned ones
        y = layer(tf.constant([0, 5, 999]))               # shape (3, 16): d = 4 * 4

    Args:
        input_dim: ``V``, number of ids (``< 2**31``), as ``keras.layers.Embedding``'s ``input_dim``.
        num_subspaces: ``M``.
        num_codewords: ``K`` per sub-space (2..65536).
        subspace_dim: ``d / M``; the width is ``output_dim = d = M * subspace_dim`` (a property).
        codes: optional integer ``[V, M]`` initial codes (stage 1's output). Default: uniform random
            codes drawn with ``seed``. Never part of the config: the weights carry them.
        codebooks: optional ``float32[M, K, d / M]`` initial codebooks. Default: normal(0, 0.05).
        projection: None (no projection), True (a ``[d, d]`` projection initialised to the identity)
            or a ``float32[d, d]`` initial projection.
        trainable_codebooks: whether codebooks (and projection) are trainable. Codes never are.
        bits: None (codes stored one per ``uint8``/``uint16``) or a code width in 1..16, at least
            ``ceil(log2 K)``: codes are then bit-packed into ``uint8[V, ceil(M * bits / 8)]``
            (layout in :mod:`tfmec.layers.bitpack`) and unpacked in-graph after the row gather.
        oov_id: the row used for ids ``< 0`` or ``>= V`` (mapped with ``tf.where``; never an error).
        contrastive_weight: ``beta``; when > 0 and ``training=True`` the layer adds
            ``beta * contrastive_loss(...)`` on the batch's looked-up ids with ``add_loss``.
        num_negatives: semi-synthetic negatives per looked-up id.
        contrastive_temperature: ``tau`` of the contrastive loss (InfoNCE).
        seed: int seed for the default codes/codebooks and the first half of the negatives' stateless seed.
        head_rows: ``H >= 0`` (beyond the paper): rows ``0 .. H-1`` are kept exact in a float32
            ``head [H, d]`` weight and read from it instead of from the codes. tfmec's vocabularies
            number ids by descending frequency (id 0 is the OOV bucket), so these are the most
            frequent ids; ``H * d * 4`` bytes buy back the accuracy PQ loses on them.
        head: optional ``float32[H, d]`` initial head rows (default: the PQ decoding of rows
            ``0 .. H-1``, so that a layer built without them starts from its codes).
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream (pooling, attention,
            RNNs) skip id 0 as padding, and id 0 does not count in the contrastive term. The output
            itself is unchanged (id 0 still reads its row). Default False (no mask).

    Deprecated keywords (accepted for one release with a ``DeprecationWarning``; old configs load
    silently): ``vocab_size`` (now ``input_dim``), ``temperature`` (now ``contrastive_temperature``).

    Weights (created in ``build``):
        ``codes``: non-trainable ``uint8[V, M]`` (``K <= 256``) or ``uint16[V, M]``, or
        ``uint8[V, ceil(M * bits / 8)]`` when packed; ``codebooks``: ``float32[M, K, d / M]``;
        ``projection``: ``float32[d, d]`` when enabled.

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``
        float (compute dtype), i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with
        ``mask_zero``) is bool ``[...]``, the ids' shape.

    Storage: the integer ``codes`` weight keeps 1 (or 2) bytes per code everywhere: in memory, in
    ``.keras`` files (HDF5 ``uint8``/``uint16`` datasets) and in SavedModel checkpoints, under
    Keras 3 and tf-keras. ``storage_bytes`` equals the bytes of ``layer.weights``.

    The value of the last contrastive term (before ``beta``) is in :attr:`last_contrastive_loss`
    (a tensor of the current step/trace; None before any training call) and the ``beta``-weighted one
    in ``layer.losses``.
    """

    is_embedding_table = True

    def __init__(
        self,
        input_dim: int,
        num_subspaces: int,
        num_codewords: int,
        subspace_dim: int,
        codes=None,
        codebooks=None,
        projection=None,
        trainable_codebooks: bool = True,
        bits: int | None = None,
        oov_id: int = 0,
        contrastive_weight: float = 0.0,
        num_negatives: int = 4,
        contrastive_temperature: float = 0.5,
        seed: int | None = None,
        head_rows: int = 0,
        head=None,
        mask_zero: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        self.input_dim = int(input_dim)
        self.num_subspaces = int(num_subspaces)
        self.num_codewords = int(num_codewords)
        self.subspace_dim = int(subspace_dim)
        name = type(self).__name__
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.num_subspaces < 1 or self.subspace_dim < 1:
            raise ValueError(
                f"{name}: num_subspaces and subspace_dim must be >= 1, got {num_subspaces}, {subspace_dim}"
            )
        if not 2 <= self.num_codewords <= 65536:
            raise ValueError(f"{name}: num_codewords must be in [2, 65536], got {num_codewords}")
        self.bits = None if bits is None else check_bits(bits, self.num_codewords)
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self._set_contrastive(contrastive_weight, num_negatives, contrastive_temperature, seed)
        self.trainable_codebooks = bool(trainable_codebooks)

        d, m, k = self.output_dim, self.num_subspaces, self.num_codewords
        self._initial_codes = None
        if codes is not None:
            codes = np.asarray(codes)
            if codes.shape != (self.input_dim, m):
                raise ValueError(f"{name}: codes must be [{self.input_dim}, {m}], got shape {codes.shape}")
            if not np.issubdtype(codes.dtype, np.integer):
                raise ValueError(f"{name}: codes must be integers, got {codes.dtype}")
            if codes.size and (codes.min() < 0 or codes.max() >= k):
                raise ValueError(f"{name}: codes must lie in [0, {k})")
            self._initial_codes = codes
        self._initial_codebooks = None
        if codebooks is not None:
            codebooks = np.asarray(codebooks, dtype=np.float32)
            if codebooks.shape != (m, k, self.subspace_dim):
                raise ValueError(
                    f"{name}: codebooks must be [{m}, {k}, {self.subspace_dim}], got shape {codebooks.shape}"
                )
            self._initial_codebooks = codebooks
        self._initial_projection = None
        if projection is None or projection is False:
            self.use_projection = False
        elif projection is True:
            self.use_projection = True
        else:
            projection = np.asarray(projection, dtype=np.float32)
            if projection.shape != (d, d):
                raise ValueError(f"{name}: projection must be [{d}, {d}], got shape {projection.shape}")
            self.use_projection = True
            self._initial_projection = projection
        self.head_rows = int(head_rows)
        if not 0 <= self.head_rows <= self.input_dim:
            raise ValueError(f"{name}: head_rows must be in [0, {self.input_dim}], got {head_rows}")
        self._initial_head = None
        if head is not None:
            head = np.asarray(head, dtype=np.float32)
            if head.shape != (self.head_rows, d):
                raise ValueError(f"{name}: head must be [{self.head_rows}, {d}], got shape {head.shape}")
            self._initial_head = head
        self.projection = None
        self.head = None
        self.negatives_step = None
        self._last_contrastive_loss = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_codes(cls, field_codes, **kwargs) -> "QuantizedEmbedding":
        """A layer initialised from a :class:`tfmec.mec.codes.FieldCodes` (codes, codebooks and
        projection); ``kwargs`` are the other constructor arguments (bits, contrastive_weight, name,
        ``mask_zero`` to copy the setting of the ``Embedding`` the layer replaces...)."""
        m, k, sub = field_codes.codebooks.shape
        return cls(
            input_dim=field_codes.codes.shape[0],
            num_subspaces=m,
            num_codewords=k,
            subspace_dim=sub,
            codes=field_codes.codes,
            codebooks=field_codes.codebooks,
            projection=field_codes.projection,
            **kwargs,
        )

    @property
    def output_dim(self) -> int:
        """``d = M * subspace_dim``."""
        return self.num_subspaces * self.subspace_dim

    @property
    def codes_dtype(self) -> str:
        """Stored dtype of the ``codes`` weight."""
        return "uint8" if self.bits is not None else _code_dtype(self.num_codewords)

    @property
    def codes_shape(self) -> tuple:
        """Shape of the ``codes`` weight: ``[V, M]`` or ``[V, ceil(M * bits / 8)]`` when packed."""
        width = self.num_subspaces if self.bits is None else packed_width(self.num_subspaces, self.bits)
        return (self.input_dim, width)

    @property
    def storage_bytes(self) -> int:
        """Bytes of codes at their stored width + codebooks, projection and head rows at float32 + the
        8-byte ``negatives_step`` counter when the layer has a contrastive term."""
        codes = int(np.prod(self.codes_shape)) * np.dtype(self.codes_dtype).itemsize
        codebooks = self.num_codewords * self.output_dim * 4
        projection = self.output_dim * self.output_dim * 4 if self.use_projection else 0
        counter = 8 if self.contrastive_weight > 0 else 0
        return codes + codebooks + projection + self.head_rows * self.output_dim * 4 + counter

    @property
    def last_contrastive_loss(self):
        """The unweighted contrastive loss of the last training call (None before any)."""
        return self._last_contrastive_loss

    def _codes_initial_value(self) -> np.ndarray:
        codes = self._initial_codes
        if codes is None:
            rng = np.random.default_rng(self.seed)
            codes = rng.integers(0, self.num_codewords, size=(self.input_dim, self.num_subspaces))
        if self.bits is not None:
            return pack_codes(codes, self.bits)
        return codes.astype(self.codes_dtype)

    def build(self, input_shape=None):
        self.codes = self.add_weight(
            name="codes",
            shape=self.codes_shape,
            dtype=self.codes_dtype,
            initializer=array_initializer(self._codes_initial_value()),
            trainable=False,
        )
        if self._initial_codebooks is not None:
            codebook_init = array_initializer(self._initial_codebooks)
        else:
            codebook_init = keras.initializers.RandomNormal(stddev=0.05, seed=self.seed)
        self.codebooks = self.add_weight(
            name="codebooks",
            shape=(self.num_subspaces, self.num_codewords, self.subspace_dim),
            dtype="float32",
            initializer=codebook_init,
            trainable=self.trainable_codebooks,
        )
        if self.use_projection:
            init = self._initial_projection
            if init is None:
                init = np.eye(self.output_dim, dtype=np.float32)
            self.projection = self.add_weight(
                name="projection",
                shape=(self.output_dim, self.output_dim),
                dtype="float32",
                initializer=array_initializer(init),
                trainable=self.trainable_codebooks,
            )
        if self.head_rows:
            self.head = self.add_weight(
                name="head",
                shape=(self.head_rows, self.output_dim),
                dtype="float32",
                initializer=array_initializer(self._head_initial_value()),
                trainable=self.trainable_codebooks,
            )
        if self.contrastive_weight > 0:
            self.negatives_step = self._add_step_counter()
        # the weights hold the arrays from now on; do not keep a second copy of the table
        self._initial_codes = self._initial_codebooks = self._initial_projection = self._initial_head = None
        self.built = True

    def _head_initial_value(self) -> np.ndarray:
        """The given head rows, else the PQ decoding of rows ``0 .. H-1`` (built weights needed)."""
        if self._initial_head is not None:
            return self._initial_head
        rows = tf.range(self.head_rows, dtype=tf.int32)
        projection = None if self.projection is None else tf.cast(self.projection, tf.float32)
        return np.asarray(decode_codes(self._gather_codes(rows), tf.cast(self.codebooks, tf.float32), projection))

    # ------------------------------------------------------------------ computation
    def _sanitize_ids(self, inputs):
        """Ids as int32 with every id outside ``[0, V)`` replaced by ``oov_id``."""
        return map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)

    def lookup_codes(self, ids):
        """The int32 codes ``[..., M]`` of ``ids`` (OOV-mapped), unpacked when bit-packed."""
        return self._codes_of_rows(self._sanitize_ids(ids))

    def _codes_of_rows(self, rows):
        """Int32 codes ``[..., M]`` of in-range table rows ``[...]`` (int32)."""
        if not self.built:
            self.build(None)
        codes = self._gather_codes(tf.reshape(rows, [-1]))
        return tf.reshape(codes, tf.concat([tf.shape(rows), [self.num_subspaces]], axis=0))

    def _gather_codes(self, flat_ids):
        rows = tf.gather(self.codes, flat_ids)  # [N, M] (or [N, packed width])
        if self.bits is not None:
            return unpack_codes_tf(rows, self.bits, self.num_subspaces)
        return tf.cast(rows, tf.int32)

    def call(self, inputs, training=None):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        return self._embed_rows(self._sanitize_ids(inputs), training, self._counted(inputs))

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (``[...]``, the ids' shape), as
        ``keras.layers.Embedding``. An incoming ``mask`` is ignored, as there."""
        return zero_mask(inputs, self.mask_zero)

    def _counted(self, inputs):
        """Bool ``[...]``: the ids that count in the contrastive term (``inputs != 0`` with
        ``mask_zero``), or None (every id counts). Computed on the raw ids, like :meth:`compute_mask`."""
        if not (self.mask_zero and self.contrastive_weight > 0):
            return None
        return tf.not_equal(tf.convert_to_tensor(inputs), 0)

    def _embed_rows(self, ids, training, counted=None):
        """Embeddings ``[..., d]`` of in-range table rows ``ids [...]`` (int32), adding the contrastive
        term when training, over the rows where ``counted [...]`` (bool, the ids' shape) is True (all
        rows when None)."""
        codebooks = tf.cast(self.codebooks, tf.float32)
        projection = None if self.projection is None else tf.cast(self.projection, tf.float32)
        contrastive = bool(training) and self.contrastive_weight > 0
        flat = ids.shape.rank == 1  # the usual [batch] ids: no reshapes around the lookup
        flat_ids = ids if flat else tf.reshape(ids, [-1])
        if self.bits in (1, 2, 4) and not contrastive:
            # several codes per byte: decode whole bytes through a byte table (same values, fewer ops)
            out = decode_packed_tf(tf.gather(self.codes, flat_ids), codebooks, self.bits)
            if projection is not None:
                out = tf.matmul(out, projection)
        else:
            flat_codes = self._gather_codes(flat_ids)  # [N, M] int32
            out = decode_codes(flat_codes, codebooks, projection)  # [N, d]
        if contrastive:
            loss = contrastive_loss(
                tf.stop_gradient(out),
                flat_codes,
                codebooks,
                self.num_negatives,
                self.contrastive_temperature,
                seed=self._next_negatives_seed(),
                projection=projection,
                row_weights=None if counted is None else tf.reshape(counted, [-1]),
            )
            self._last_contrastive_loss = loss
            self.add_loss(self.contrastive_weight * loss)
        if self.head_rows:  # the H most frequent ids read their exact rows
            head_rows = tf.gather(tf.cast(self.head, out.dtype), tf.minimum(flat_ids, self.head_rows - 1))
            out = tf.where((flat_ids < self.head_rows)[:, None], head_rows, out)
        if not flat:
            out = tf.reshape(out, tf.concat([tf.shape(ids), [self.output_dim]], axis=0))
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            num_subspaces=self.num_subspaces,
            num_codewords=self.num_codewords,
            subspace_dim=self.subspace_dim,
            projection=self.use_projection,
            trainable_codebooks=self.trainable_codebooks,
            bits=self.bits,
            oov_id=self.oov_id,
            contrastive_weight=self.contrastive_weight,
            num_negatives=self.num_negatives,
            contrastive_temperature=self.contrastive_temperature,
            seed=self.seed,
            head_rows=self.head_rows,
            mask_zero=self.mask_zero,
        )
        return config


__all__ = [
    "ContrastiveSteps",
    "QuantizedEmbedding",
    "contrastive_loss",
    "semi_synthetic_negative_codes",
    "decode_codes",
]
