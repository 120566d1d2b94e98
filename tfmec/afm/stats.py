"""Streaming statistics of layer outputs, PCA and rank selection for AFM.

* :class:`StreamingMoments` keeps the count, mean and centred scatter matrix of ``[n, dim]`` blocks in
  float64 and merges blocks with Chan et al.'s parallel update, so the result does not depend on
  how the rows were batched and never needs all rows at once.
* :func:`collect_moments` runs a function of a batch's features over a calibration
  ``tf.data.Dataset`` in ONE pass (a ``tf.function`` per batch that returns only each block's count,
  mean and scatter).
* :func:`dense_preactivation_moments` and :func:`embedding_output_moments` accumulate a Dense layer's
  pre-activations ``z = x W + b`` and embedding lookups, from what the layers really receive in a
  model of any kind (:func:`tfmec.graph.capture.run_capturing`).
* :func:`pca` eigendecomposes a covariance (eigenvalues descending); :func:`select_rank` picks ``k``
  by a fixed ``rank``, an ``energy`` share of the variance or a ``param_budget``, and refuses any
  ``k`` at which the factored layer would not be smaller than the original.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export



@tfmec_export("tfmec.afm.StreamingMoments")
class StreamingMoments:
    """Mean and covariance of rows seen block by block, in float64.

    State: ``count``, ``mean [dim]`` and ``scatter [dim, dim]`` (the sum of outer products of the
    centred rows). Two blocks merge exactly (Chan, Golub & LeVeque 1979)::

        delta = mean_b - mean_a,  n = n_a + n_b
        scatter = scatter_a + scatter_b + delta delta^T n_a n_b / n,  mean = mean_a + delta n_b / n

    which avoids the cancellation of a raw sum of squares when the mean is large.
    """

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise ValueError(f"StreamingMoments: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.count = 0
        self.mean = np.zeros(self.dim, dtype=np.float64)
        self.scatter = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, rows) -> "StreamingMoments":
        """Adds a block of rows ``[n, dim]`` (any array-like; reshaped to ``[-1, dim]``)."""
        z = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        if z.shape[0] == 0:
            return self
        mean = z.mean(axis=0)
        centred = z - mean
        return self.merge_block(z.shape[0], mean, centred.T @ centred)

    def merge_block(self, count: int, mean, scatter) -> "StreamingMoments":
        """Adds a block given by its ``count``, ``mean [dim]`` and centred ``scatter [dim, dim]``."""
        n = int(count)
        if n <= 0:
            return self
        mean = np.asarray(mean, dtype=np.float64).reshape(self.dim)
        scatter = np.asarray(scatter, dtype=np.float64).reshape(self.dim, self.dim)
        if self.count == 0:
            self.count, self.mean, self.scatter = n, mean.copy(), scatter.copy()
            return self
        total = self.count + n
        delta = mean - self.mean
        self.scatter = self.scatter + scatter + np.outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total
        return self

    def merge(self, other: "StreamingMoments") -> "StreamingMoments":
        """Adds everything ``other`` has seen."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of dim {other.dim} into dim {self.dim}")
        return self.merge_block(other.count, other.mean, other.scatter)

    def covariance(self, ddof: int = 0) -> np.ndarray:
        """``scatter / (count - ddof)``: ``float64[dim, dim]`` (``ddof=1`` matches ``np.cov``)."""
        if self.count - ddof <= 0:
            raise ValueError(f"covariance needs more than {ddof} row(s), got {self.count}")
        cov = self.scatter / (self.count - ddof)
        return (cov + cov.T) / 2.0


def _block_moments(z):
    """``z [n, dim]`` float64 -> ``(n, mean [dim], centred scatter [dim, dim])`` (TF ops)."""
    n = tf.shape(z)[0]
    mean = tf.reduce_sum(z, axis=0) / tf.cast(tf.maximum(n, 1), z.dtype)
    centred = z - mean
    return n, mean, tf.matmul(centred, centred, transpose_a=True)


def features_of(element):
    """The features of a dataset element: ``element[0]`` of a ``(features, label[, weight])``
    tuple, else the element itself."""
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


@tfmec_export("tfmec.afm.collect_moments")
def collect_moments(calibration, fn: Callable, dims: Sequence[int]) -> list[StreamingMoments]:
    """One pass over ``calibration``: streaming moments of each output of ``fn``.

    Args:
        calibration: a ``tf.data.Dataset`` (or any iterable) of ``(features, label)`` batches or of
            bare features.
        fn: ``features -> list of tensors``, output ``j`` reshapeable to ``[-1, dims[j]]`` (TF ops;
            traced once in a ``tf.function``).
        dims: the width of each output.

    Returns:
        one :class:`StreamingMoments` per output. Only each batch's count, mean and scatter leave the
        graph; the outputs themselves are never collected.

    Raises:
        ValueError: when the calibration data yields no rows.
    """
    dims = [int(d) for d in dims]

    @tf.function(reduce_retracing=True)
    def step(features):
        outs = fn(features)
        return [_block_moments(tf.reshape(tf.cast(z, tf.float64), [-1, d])) for z, d in zip(outs, dims)]

    moments = [StreamingMoments(d) for d in dims]
    for element in calibration:
        for acc, (n, mean, scatter) in zip(moments, step(features_of(element))):
            acc.merge_block(int(n), mean.numpy(), scatter.numpy())
    if not moments or moments[0].count == 0:
        raise _no_rows()
    return moments


def _weights(layer):
    kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)
    bias = getattr(layer, "bias", None)
    bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias.numpy(), dtype=np.float64)
    return kernel, bias


def _no_rows() -> ValueError:
    return ValueError("the calibration data yielded no rows: AFM needs a non-empty calibration dataset")


@tfmec_export("tfmec.afm.dense_preactivation_moments")
def dense_preactivation_moments(model, layer, calibration) -> StreamingMoments:
    """Streaming moments of the pre-activations ``z = x W + b`` of ``layer`` (a built Dense) in
    ``model`` (any kind: functional, nested, subclassed, the Dense inside a custom layer), where ``x``
    is what the layer really receives when ``model`` runs with ``training=False``
    (:func:`tfmec.graph.capture.run_capturing`); ``z`` is computed in float64. Inputs of rank > 2 are
    flattened to ``[-1, n_in]``; a layer called several times contributes every call's rows."""
    from tfmec.graph.capture import run_capturing

    kernel, bias = _weights(layer)
    n_in, n_out = kernel.shape
    moments = StreamingMoments(n_out)

    def reduce(_, arrays):
        for x in arrays:
            moments.update(np.asarray(x, dtype=np.float64).reshape(-1, n_in) @ kernel)

    run_capturing(model, [layer], calibration, reduce, what="inputs")
    if moments.count == 0:
        raise _no_rows()
    moments.mean = moments.mean + bias  # z = x W + b: the constant b shifts the mean only
    return moments


def _table(layer) -> np.ndarray:
    table = getattr(layer, "embeddings", None)
    if table is None or len(table.shape) != 2:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) holds no [V, d] 'embeddings' table")
    return table.numpy()  # at its own width: only the rows looked up are widened to float64


@tfmec_export("tfmec.afm.embedding_output_moments")
def embedding_output_moments(model, layers: Sequence, calibration) -> list[StreamingMoments]:
    """Streaming moments of the looked-up rows (``[..., d]``) of several embedding tables of ``model``
    (layers with a ``[V, d]`` ``embeddings`` weight, e.g. ``keras.layers.Embedding``, wherever they
    sit), all in one pass.

    The ids each table really receives (after the model's own preprocessing) are captured
    (:func:`tfmec.graph.capture.run_capturing`) and their rows read from the table in float64. A table
    called from several places (shared by several fields) gets the rows of every call. Ids outside
    ``[0, V)`` are left out, and so is the padding id 0 of a ``mask_zero`` table (masked positions
    are ignored by the layers that follow)."""
    from tfmec.graph.capture import run_capturing

    layers = list(layers)
    tables = [_table(layer) for layer in layers]
    masked = [bool(getattr(layer, "mask_zero", False)) for layer in layers]
    moments = [StreamingMoments(t.shape[1]) for t in tables]

    def reduce(i, arrays):
        table = tables[i]
        for ids in arrays:
            ids = np.asarray(ids).reshape(-1).astype(np.int64)
            keep = (ids >= 1 if masked[i] else ids >= 0) & (ids < table.shape[0])
            moments[i].update(table[ids[keep]].astype(np.float64))

    run_capturing(model, layers, calibration, reduce, what="inputs")
    if moments and all(m.count == 0 for m in moments):
        raise _no_rows()
    return moments


@tfmec_export("tfmec.afm.pca")
def pca(covariance) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of a symmetric covariance (``np.linalg.eigh``), largest first.

    Returns:
        ``(eigenvalues [dim], eigenvectors [dim, dim])``: eigenvalues descending and clipped at 0 (tiny
        negative round-off), eigenvector ``j`` in column ``j``.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 0.0), vectors[:, order]


@tfmec_export("tfmec.afm.RankChoice")
@dataclasses.dataclass
class RankChoice:
    """The outcome of :func:`select_rank`: ``rank`` (None: leave the layer as it is), the share of the
    variance its top ``rank`` components hold, the parameter counts and, when refused, why."""

    rank: int | None
    kept_energy: float | None
    params_before: int
    params_after: int
    reason: str = ""


@tfmec_export("tfmec.afm.energy_curve")
def energy_curve(eigenvalues) -> np.ndarray:
    """Cumulative share of the variance of the top 1..dim components (all ones for zero variance)."""
    lam = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    total = lam.sum()
    if total <= 0:
        return np.ones(lam.size)
    return np.cumsum(lam) / total


def budget_limit(param_budget, params_before: int) -> int:
    """The parameter limit a ``param_budget`` sets: ``0 < float <= 1`` is a share of
    ``params_before``, anything larger an absolute count."""
    budget = float(param_budget)
    if not budget > 0 or not math.isfinite(budget):
        raise ValueError(f"param_budget must be > 0, got {param_budget}")
    if isinstance(param_budget, float) and budget <= 1.0:
        return int(math.floor(budget * params_before))
    return int(math.floor(budget))


@tfmec_export("tfmec.afm.select_rank")
def select_rank(
    eigenvalues,
    params_before: int,
    params_after: Callable[[int], int],
    *,
    rank: int | None = None,
    energy: float | None = None,
    param_budget: float | int | None = None,
    allow_larger: bool = False,
) -> RankChoice:
    """Chooses the rank ``k`` of a factored layer from the eigenvalues of its outputs' covariance.

    Rules (at least one of ``rank``, ``energy``, ``param_budget``; ``rank`` and ``energy`` exclude
    each other; ``param_budget`` combines with either as an upper bound):

    * ``rank``: ``k = min(rank, dim)``;
    * ``energy``: the smallest ``k`` whose top-``k`` eigenvalues hold at least ``energy`` of the
      total variance (``0 < energy <= 1``);
    * ``param_budget``: the largest ``k`` with ``params_after(k) <= limit`` (:func:`budget_limit`);
      with no rank or energy it alone sets ``k``.

    Whatever the rule, a ``k`` with ``params_after(k) >= params_before`` is refused (``rank=None``,
    with the reason) unless ``allow_larger`` (for exactness checks).

    Args:
        eigenvalues: ``[dim]``, descending (see :func:`pca`).
        params_before: parameters of the original layer.
        params_after: ``k -> parameters of the factored layer``.

    Returns:
        a :class:`RankChoice`.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    dim = int(lam.size)
    if dim < 1:
        raise ValueError("select_rank needs at least one eigenvalue")
    if rank is not None and energy is not None:
        raise ValueError("give either rank or energy, not both")
    if rank is None and energy is None and param_budget is None:
        raise ValueError("give one of rank, energy or param_budget")
    curve = energy_curve(lam)
    k = None
    if rank is not None:
        if int(rank) < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        k = min(int(rank), dim)
    elif energy is not None:
        if not 0.0 < float(energy) <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        # smallest k with curve[k-1] >= energy (a relative tolerance absorbs round-off at energy=1)
        k = int(np.searchsorted(curve, float(energy) - 1e-12, side="left")) + 1
        k = min(max(k, 1), dim)
    if param_budget is not None:
        limit = budget_limit(param_budget, params_before)
        fits = [j for j in range(1, dim + 1) if params_after(j) <= limit]
        if not fits:
            return RankChoice(None, None, params_before, params_before,
                              f"param_budget {param_budget} (limit {limit}) leaves no rank >= 1 "
                              f"(rank 1 needs {params_after(1)} parameters)")
        k = max(fits) if k is None else min(k, max(fits))
    after = params_after(k)
    kept = float(curve[k - 1])
    if after >= params_before and not allow_larger:
        return RankChoice(None, kept, params_before, params_before,
                          f"rank {k} would hold {after} parameters, not fewer than the original {params_before}")
    return RankChoice(k, kept, params_before, after)


__all__ = [
    "StreamingMoments", "collect_moments", "features_of", "dense_preactivation_moments", "embedding_output_moments",
    "pca", "RankChoice", "select_rank", "energy_curve", "budget_limit",
]
