"""Low-rank layers of AFM (Atomic Feature Mimicking, arXiv 2405.18146): ``AFMDense`` and
``LowRankEmbedding``.

AFM factors a trained layer with the principal components of its *outputs*. For a Dense layer
``y = act(x W + b)`` whose pre-activations ``z = x W + b`` have mean ``mu`` and top-k covariance
eigenvectors ``U_k`` (``[n_out, k]``), ``z ~ mu + (z - mu) U_k U_k^T`` gives::

    y = act((x A + a) B + mu),   A = W U_k [n_in, k],  a = (b - mu) U_k [k],  B = U_k^T [k, n_out]

with ``k (n_in + n_out) + k + n_out`` parameters instead of ``n_in n_out + n_out``; at ``k = n_out``
(``U`` orthogonal) it is exactly the original layer. For an embedding table ``E`` (``V x d``) whose
looked-up rows have mean ``mu`` and top-k eigenvectors ``U_k`` (``[d, k]``), the table becomes
``(E - mu) U_k`` (``V x k``) plus one up-projection ``(U_k^T, mu)`` back to ``d`` dims.

Both layers are registered (package ``tfmec``), serialisable, create their variables in ``build``
and compute with TensorFlow ops, so they behave the same under Keras 3 and tf-keras. The initial
arrays given to the constructors are never part of the config: the weights carry them.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import (
    MAX_ROWS,
    array_initializer,
    as_shape,
    make_initializer,
    map_out_of_range_ids,
    renamed_kwargs,
    serialize_initializer,
    zero_mask,
)




def _as_array(value, name: str, ndim: int, owner: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != ndim:
        raise ValueError(f"{owner}: {name} must have {ndim} dimension(s), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: {name} contains NaN or infinite values")
    return arr


def _numpy(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, dtype=np.float64)


def _last_axis_matmul(x, kernel):
    """``x [..., n] @ kernel [n, m]`` -> ``[..., m]`` (a plain matmul for rank-2 inputs)."""
    if x.shape.rank == 2:
        return tf.matmul(x, kernel)
    return tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])


@tfmec_export("tfmec.afm.dense_params")
def dense_params(n_in: int, n_out: int, rank: int | None = None, use_bias: bool = True) -> int:
    """Parameters of ``Dense(n_out)`` on ``n_in`` inputs (``rank=None``) or of its
    :class:`AFMDense` factorisation at ``rank`` (``k (n_in + n_out) + k + n_out``)."""
    n_in, n_out = int(n_in), int(n_out)
    if rank is None:
        return n_in * n_out + (n_out if use_bias else 0)
    k = int(rank)
    return k * (n_in + n_out) + k + n_out


@tfmec_export("tfmec.afm.embedding_params")
@renamed_kwargs({"vocab_size": "input_dim", "dim": "output_dim"})
def embedding_params(input_dim: int, output_dim: int, rank: int | None = None) -> int:
    """Parameters of a ``V x d`` table (``input_dim`` ``V`` rows of ``output_dim`` ``d``; ``rank=None``)
    or of its :class:`LowRankEmbedding` form at ``rank`` (``V k + k d + d``). ``vocab_size`` / ``dim``
    are the deprecated names of ``input_dim`` / ``output_dim`` (one release, ``DeprecationWarning``)."""
    v, d = int(input_dim), int(output_dim)
    if rank is None:
        return v * d
    k = int(rank)
    return v * k + k * d + d


def _check_basis(U_k, mu, n: int, who: str):
    """Validates a PCA basis ``U_k: [n, k]`` (1 <= k <= n) and mean ``mu: [n]``; returns them as float64."""
    u = np.asarray(U_k, dtype=np.float64)
    m = np.asarray(mu, dtype=np.float64).reshape(-1)
    if u.ndim != 2 or u.shape[0] != n or not 1 <= u.shape[1] <= n:
        raise ValueError(f"{who}: U_k must be [{n}, k] with 1 <= k <= {n}, got {u.shape}")
    if m.shape != (n,):
        raise ValueError(f"{who}: mu must be [{n}], got {m.shape}")
    return u, m


@tfmec_export("tfmec.layers.AFMDense")
@register
class AFMDense(keras.layers.Layer):
    """A Dense layer factored through a rank-``k`` bottleneck: ``y = act((x A + a) B + mu)``.

    Example::

        layer = tfmec.layers.AFMDense(4, rank=2, activation="relu")
        y = layer(tf.random.normal([2, 8]))   # shape (2, 4)
        layer.down_kernel.shape               # (8, 2): 8*2 + 2*4 weights instead of 8*4

    Built by AFM from a trained ``Dense`` and the principal components of its pre-activations
    (:meth:`from_dense`), or from scratch (then ``A``, ``B`` start from ``kernel_initializer`` and
    ``a``, ``mu`` from ``bias_initializer``) for a model that trains a low-rank layer directly.

    Args:
        units: ``n_out``.
        rank: ``k`` (>= 1).
        activation: Keras activation (name, function or serialised config), applied last.
        kernel_initializer: initializer of ``A`` and ``B`` when no initial arrays are given.
        bias_initializer: initializer of ``a`` and ``mu`` when no initial arrays are given.
        seed: optional integer seed of the kernel initializers (``A``: ``seed``, ``B``: ``seed + 1``).
        down_kernel, down_bias, up_kernel, up_bias: optional initial ``A [n_in, k]``, ``a [k]``,
            ``B [k, n_out]``, ``mu [n_out]`` (not part of the config).

    Weights (created in ``build``): ``down_kernel [n_in, k]``, ``down_bias [k]``,
    ``up_kernel [k, n_out]``, ``up_bias [n_out]``.

    Shapes:
        ``[..., n_in]`` -> ``[..., n_out]`` (``n_in`` must be known when the layer is built).
    """

    def __init__(
        self,
        units: int,
        rank: int,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed: int | None = None,
        down_kernel=None,
        down_bias=None,
        up_kernel=None,
        up_bias=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True  # as keras.layers.Dense: a mask passes through unchanged
        name = type(self).__name__
        if int(units) < 1:
            raise ValueError(f"{name}: units must be >= 1, got {units}")
        if int(rank) < 1:
            raise ValueError(f"{name}: rank must be >= 1, got {rank}")
        self.units = int(units)
        self.rank = int(rank)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = serialize_initializer(kernel_initializer)
        self.bias_initializer = serialize_initializer(bias_initializer)
        self.seed = None if seed is None else int(seed)
        self._initial = {
            "down_kernel": _as_array(down_kernel, "down_kernel", 2, name),
            "down_bias": _as_array(down_bias, "down_bias", 1, name),
            "up_kernel": _as_array(up_kernel, "up_kernel", 2, name),
            "up_bias": _as_array(up_bias, "up_bias", 1, name),
        }
        self.input_dim = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, dense, U_k, mu, **kwargs) -> "AFMDense":
        """The AFM factorisation of a trained ``Dense`` layer.

        Args:
            dense: a built ``keras.layers.Dense`` with kernel ``W [n_in, n_out]`` and bias ``b``
                (zeros when it has none).
            U_k: ``[n_out, k]`` orthonormal columns (top-k eigenvectors of the covariance of
                ``z = x W + b``).
            mu: ``[n_out]`` mean of ``z``.
            **kwargs: other constructor arguments; ``name``, ``activation``, ``dtype`` and
                ``trainable`` default to the Dense layer's.

        Returns:
            an unbuilt :class:`AFMDense` holding ``A = W U_k``, ``a = (b - mu) U_k``, ``B = U_k^T``
            and ``mu`` (computed in float64, stored at the layer's dtype).
        """
        if not getattr(dense, "built", False):
            raise ValueError(f"AFMDense.from_dense: layer {dense.name!r} is not built (call it on data first)")
        w = _numpy(dense.kernel)
        if w.ndim != 2:
            raise ValueError(f"AFMDense.from_dense: expected a 2-D kernel, got shape {w.shape}")
        n_in, n_out = w.shape
        b = _numpy(dense.bias) if getattr(dense, "bias", None) is not None else np.zeros(n_out)
        u, m = _check_basis(U_k, mu, n_out, "AFMDense.from_dense")
        params = dict(
            name=dense.name,
            activation=keras.activations.serialize(dense.activation),
            dtype=dense.dtype_policy,
            trainable=dense.trainable,
        )
        params.update(kwargs)
        return cls(
            units=n_out,
            rank=u.shape[1],
            down_kernel=w @ u,
            down_bias=(b - m) @ u,
            up_kernel=u.T,
            up_bias=m,
            **params,
        )

    @property
    def params(self) -> int:
        """``k (n_in + n_out) + k + n_out`` (needs the layer built)."""
        if self.input_dim is None:
            raise ValueError(f"{self.name}: the layer is not built yet")
        return dense_params(self.input_dim, self.units, self.rank)

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects [..., n_in] with known n_in, got {shape}")
        n_in, k, n_out = int(shape[-1]), self.rank, self.units
        expected = {"down_kernel": (n_in, k), "down_bias": (k,), "up_kernel": (k, n_out), "up_bias": (n_out,)}
        for key, value in self._initial.items():
            if value is not None and value.shape != expected[key]:
                raise ValueError(
                    f"{type(self).__name__} {self.name!r}: initial {key} has shape {value.shape}, "
                    f"expected {expected[key]} for input dim {n_in}, rank {k}, units {n_out}"
                )

        def init(key, offset):
            if self._initial[key] is not None:
                return array_initializer(self._initial[key])
            if key.endswith("kernel"):
                return make_initializer(self.kernel_initializer, self.seed, offset)
            return keras.initializers.get(self.bias_initializer)

        self.down_kernel = self.add_weight(name="down_kernel", shape=(n_in, k), initializer=init("down_kernel", 0))
        self.down_bias = self.add_weight(name="down_bias", shape=(k,), initializer=init("down_bias", 0))
        self.up_kernel = self.add_weight(name="up_kernel", shape=(k, n_out), initializer=init("up_kernel", 1))
        self.up_bias = self.add_weight(name="up_bias", shape=(n_out,), initializer=init("up_bias", 1))
        self._initial = {key: None for key in self._initial}  # the weights hold the arrays now
        self.input_dim = n_in
        self.built = True

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        h = _last_axis_matmul(x, tf.cast(self.down_kernel, x.dtype)) + tf.cast(self.down_bias, x.dtype)
        y = _last_axis_matmul(h, tf.cast(self.up_kernel, x.dtype)) + tf.cast(self.up_bias, x.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape)[:-1] + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            rank=self.rank,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            seed=self.seed,
        )
        return config


@tfmec_export("tfmec.layers.LowRankEmbedding")
@register
class LowRankEmbedding(keras.layers.Layer):
    """An embedding table stored at rank ``k`` plus one up-projection: ``e_i = T[i] P + mu``.

    Example::

        layer = tfmec.layers.LowRankEmbedding(1000, 16, rank=4)   # 1000 x 4 + 4 x 16, not 1000 x 16
        y = layer(tf.constant([1, 2, 3]))                        # shape (3, 16)

    AFM builds it from a trained ``V x d`` table ``E`` (:meth:`from_embedding`) with
    ``T = (E - mu) U_k`` (``V x k``), ``P = U_k^T`` (``k x d``) and ``mu`` (``[d]``), so the layers
    that follow still see ``d`` dims. Counted as an embedding table by
    :func:`tfmec.evaluation.embedding_layers` (``is_embedding_table``); ``input_dim`` / ``output_dim``
    are ``V`` / ``d`` as for ``keras.layers.Embedding``.

    Args:
        input_dim: ``V``, number of ids (``< 2**31``).
        output_dim: ``d``, the restored dimension.
        rank: ``k`` (>= 1).
        oov_id: row used for ids ``< 0`` or ``>= V`` (mapped with ``tf.where``, never an error; the
            zoo's id 0 is the OOV bucket).
        embeddings_initializer: initializer of ``T`` without initial arrays (``P`` gets
            glorot-uniform, ``mu`` zeros).
        seed: optional integer seed of the default initializers.
        embeddings, up_kernel, up_bias: optional initial ``T [V, k]``, ``P [k, d]``, ``mu [d]``
            (not part of the config).
        mask_zero: as in ``keras.layers.Embedding``: when True, :meth:`compute_mask` returns
            ``ids != 0`` (bool, the ids' shape) so that masked layers downstream (pooling, attention,
            RNNs) skip id 0 as padding; the output is unchanged (id 0 still reads its row). Default False.

    Weights (created in ``build``): ``embeddings [V, k]``, ``up_kernel [k, d]``, ``up_bias [d]``.

    Shapes:
        integer ids ``[...]`` (``[batch]``, ``[batch, 1]``, ``[batch, length]``, ...) -> ``[..., d]``,
        i.e. ``ids.shape + [d]`` as ``keras.layers.Embedding``; the mask (with ``mask_zero``) is bool
        ``[...]``, the ids' shape.
    """

    is_embedding_table = True

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        rank: int,
        oov_id: int = 0,
        embeddings_initializer="uniform",
        seed: int | None = None,
        embeddings=None,
        up_kernel=None,
        up_bias=None,
        mask_zero: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero  # as keras.layers.Embedding
        name = type(self).__name__
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.rank = int(rank)
        if not 1 <= self.input_dim <= MAX_ROWS:
            raise ValueError(f"{name}: input_dim must be in [1, 2**31), got {input_dim}")
        if self.output_dim < 1 or self.rank < 1:
            raise ValueError(f"{name}: output_dim and rank must be >= 1, got {output_dim}, {rank}")
        self.oov_id = int(oov_id)
        if not 0 <= self.oov_id < self.input_dim:
            raise ValueError(f"{name}: oov_id must be in [0, {self.input_dim}), got {oov_id}")
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.seed = None if seed is None else int(seed)
        v, k, d = self.input_dim, self.rank, self.output_dim
        self._initial = {
            "embeddings": _as_array(embeddings, "embeddings", 2, name),
            "up_kernel": _as_array(up_kernel, "up_kernel", 2, name),
            "up_bias": _as_array(up_bias, "up_bias", 1, name),
        }
        expected = {"embeddings": (v, k), "up_kernel": (k, d), "up_bias": (d,)}
        for key, value in self._initial.items():
            if value is not None and value.shape != expected[key]:
                raise ValueError(f"{name}: {key} must have shape {expected[key]}, got {value.shape}")

    @classmethod
    def from_embedding(cls, embedding, U_k, mu, **kwargs) -> "LowRankEmbedding":
        """The AFM reduction of a trained ``keras.layers.Embedding`` (``V x d``).

        Args:
            embedding: a built ``Embedding`` layer with table ``E``.
            U_k: ``[d, k]`` orthonormal columns (top-k eigenvectors of the covariance of the looked-up
                rows over calibration data).
            mu: ``[d]`` mean of the looked-up rows.
            **kwargs: other constructor arguments; ``name``, ``dtype``, ``trainable`` and
                ``mask_zero`` default to the Embedding's.

        Returns:
            an unbuilt :class:`LowRankEmbedding` with ``T = (E - mu) U_k``, ``P = U_k^T``, ``mu``.
        """
        if not getattr(embedding, "built", False):
            raise ValueError(f"LowRankEmbedding.from_embedding: layer {embedding.name!r} is not built")
        table = _numpy(embedding.embeddings)
        v, d = table.shape
        u, m = _check_basis(U_k, mu, d, "LowRankEmbedding.from_embedding")
        params = dict(name=embedding.name, dtype=embedding.dtype_policy, trainable=embedding.trainable,
                      mask_zero=bool(getattr(embedding, "mask_zero", False)))
        params.update(kwargs)
        return cls(
            input_dim=v, output_dim=d, rank=u.shape[1], embeddings=(table - m) @ u, up_kernel=u.T, up_bias=m, **params
        )

    @property
    def params(self) -> int:
        """``V k + k d + d``."""
        return embedding_params(self.input_dim, self.output_dim, self.rank)

    @property
    def storage_bytes(self) -> int:
        """Bytes of the three weights at float32."""
        return 4 * self.params

    def build(self, input_shape=None):
        v, k, d = self.input_dim, self.rank, self.output_dim
        initial = self._initial

        def init(key, fallback):
            return array_initializer(initial[key]) if initial[key] is not None else fallback

        self.embeddings = self.add_weight(
            name="embeddings", shape=(v, k),
            initializer=init("embeddings", make_initializer(self.embeddings_initializer, self.seed, 0)),
        )
        up_init = init("up_kernel", make_initializer("glorot_uniform", self.seed, 1))
        self.up_kernel = self.add_weight(name="up_kernel", shape=(k, d), initializer=up_init)
        self.up_bias = self.add_weight(name="up_bias", shape=(d,), initializer=init("up_bias", "zeros"))
        self._initial = {key: None for key in initial}
        self.built = True

    def _sanitize_ids(self, inputs):
        return map_out_of_range_ids(inputs, self.input_dim, self.oov_id, self.name)

    def call(self, inputs):
        """Integer ids ``[...]`` -> ``[..., d]`` (see the class docstring)."""
        ids = self._sanitize_ids(inputs)
        dtype = self.compute_dtype
        rows = tf.gather(tf.cast(self.embeddings, dtype), tf.reshape(ids, [-1]))  # [N, k]
        out = tf.matmul(rows, tf.cast(self.up_kernel, dtype)) + tf.cast(self.up_bias, dtype)  # [N, d]
        return tf.reshape(out, tf.concat([tf.shape(ids), [self.output_dim]], axis=0))

    def compute_mask(self, inputs, mask=None):
        """None without ``mask_zero``; else bool ``inputs != 0`` (``[...]``, the ids' shape), as
        ``keras.layers.Embedding``. An incoming ``mask`` is ignored, as there."""
        return zero_mask(inputs, self.mask_zero)

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            rank=self.rank,
            oov_id=self.oov_id,
            embeddings_initializer=self.embeddings_initializer,
            seed=self.seed,
            mask_zero=self.mask_zero,
        )
        return config


__all__ = ["AFMDense", "LowRankEmbedding", "dense_params", "embedding_params"]
