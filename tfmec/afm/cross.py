"""AFM for DCNv2's cross network (:class:`tfmec.layers.CrossNetV2`).

Cross layer ``l`` computes ``x_{l+1} = x_0 * z_l + x_l`` with the linear map ``z_l = x_l W_l + b_l``
(``W_l``: D x D). AFM treats ``z_l`` as it treats a Dense layer's pre-activations (DESIGN.md 1.2):
the streaming mean ``mu`` and covariance of ``z_l`` over the calibration data, their top-``k``
eigenvectors ``U_k`` (D x k), and

    z_l ~ ((x_l W_l + b_l - mu) U_k) U_k^T + mu = x_l (W_l U_k) U_k^T + b'_l,
    b'_l = (b_l - mu) U_k U_k^T + mu,

which is exactly the factored form ``x_l V_l U_l + b'_l`` that ``CrossNetV2(rank=...)`` computes
(``V_l = W_l U_k``, ``U_l = U_k^T``): 2 D k + D parameters instead of D^2 + D. The layers are
factored first to last, each calibrated on the ``x_l`` produced by the already factored layers
before it (the inputs ``x_0`` are captured while the model runs, so the network may sit anywhere in a
model of any kind; the earlier layers are applied in float64 NumPy). At full rank ``U_k U_k^T = I``
and the layer is unchanged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tfmec.afm.stats import StreamingMoments, _no_rows, pca, select_rank
from tfmec.api_export import tfmec_export
from tfmec.layers.cross import CrossNetV2


@tfmec_export("tfmec.afm.cross_params")
def cross_params(dim: int, rank: int | None = None) -> int:
    """Parameters of one cross layer of width ``dim``: ``D^2 + D`` at full rank, ``2 D k + D`` factored."""
    return dim * dim + dim if rank is None else 2 * dim * int(rank) + dim


def cross_network_params(layer) -> int:
    """Parameters of a built :class:`CrossNetV2`."""
    return int(sum(int(np.prod(w.shape)) for w in layer.weights))


def _layer_maps(layer) -> list[dict]:
    """Per cross layer, float64 NumPy copies of its weights (``kernel`` or ``v_kernel``/``u_kernel``, ``bias``)."""
    return [{key: np.asarray(v.numpy(), dtype=np.float64) for key, v in layer.layer_weights(i).items()}
            for i in range(layer.num_layers)]


def _apply(x0, x, weights: dict):
    """One cross layer in float64 NumPy: ``x0 * (x W + b) + x`` with W full or factored."""
    if "kernel" in weights:
        xw = x @ weights["kernel"]
    else:
        xw = (x @ weights["v_kernel"]) @ weights["u_kernel"]
    return x0 * (xw + weights["bias"]) + x


def cross_refusal(layer) -> str:
    """Why a cross network cannot be factored ('' when it can). A network called more than once is
    refused by :func:`tfmec.afm.compress`, which counts the calls of the model's forward pass."""
    if not layer.built:
        return "layer is not built"
    return ""


@tfmec_export("tfmec.afm.factor_cross_network")
def factor_cross_network(model, layer, calibration, *, rank=None, energy=None, param_budget=None,
                         allow_larger: bool = False, report_entry: Callable | None = None):
    """Factors the full-rank layers of the :class:`CrossNetV2` ``layer`` of ``model`` by AFM.

    Args:
        model: a model of any kind (functional, nested, subclassed) that calls ``layer`` once; what
            ``layer`` receives is captured while ``model`` runs (:func:`tfmec.graph.capture.run_capturing`).
        layer: a built ``CrossNetV2``; layers already factored stay as they are.
        calibration: ``(features, label)`` batches (iterated once per cross layer).
        rank, energy, param_budget, allow_larger: the rank rule of :func:`tfmec.afm.stats.select_rank`,
            applied per cross layer (``param_budget`` as a share or count of that layer's parameters).
        report_entry: ``f(index, dim, choice)`` called per cross layer with its
            :class:`~tfmec.afm.stats.RankChoice` (``None`` for a layer already factored).

    Returns:
        a new built ``CrossNetV2`` with per-layer ranks and the AFM weights, or None when no layer
        was factored.

    Shapes:
        the network maps ``[batch, D]`` -> ``[batch, D]`` before and after.
    """
    from tfmec.graph.capture import run_capturing

    dim = int(layer.layer_weights(0)["bias"].shape[0])
    maps = _layer_maps(layer)
    ranks = list(layer.layer_ranks)
    changed = False
    for index in range(layer.num_layers):
        if ranks[index] is not None:
            if report_entry is not None:
                report_entry(index, dim, None)
            continue
        moments = StreamingMoments(dim)

        def reduce(_, arrays, earlier=maps[:index], kernel=maps[index]["kernel"], moments=moments):
            for x0 in arrays:
                x0 = np.asarray(x0, dtype=np.float64).reshape(-1, dim)
                x = x0
                for weights in earlier:
                    x = _apply(x0, x, weights)
                moments.update(x @ kernel)

        run_capturing(model, [layer], calibration, reduce, what="inputs")
        if moments.count == 0:
            raise _no_rows()
        bias = maps[index]["bias"]
        mean = moments.mean + bias  # z = x W + b: b shifts the mean only
        values, vectors = pca(moments.covariance())
        choice = select_rank(values, cross_params(dim), lambda k: cross_params(dim, k), rank=rank, energy=energy,
                             param_budget=param_budget, allow_larger=allow_larger)
        if report_entry is not None:
            report_entry(index, dim, choice)
        if choice.rank is None:
            continue
        u_k = vectors[:, : choice.rank]
        maps[index] = {"v_kernel": maps[index]["kernel"] @ u_k, "u_kernel": u_k.T,
                       "bias": (bias - mean) @ u_k @ u_k.T + mean}
        ranks[index] = int(choice.rank)
        changed = True
    if not changed:
        return None
    config = layer.get_config()
    config["rank"] = ranks
    new_layer = CrossNetV2.from_config(config)
    new_layer(tf.zeros((1, dim), dtype=new_layer.compute_dtype))  # built by a call: tf-keras records the shape
    for index, weights in enumerate(maps):
        for key, variable in new_layer.layer_weights(index).items():
            variable.assign(tf.cast(weights[key], variable.dtype))
    return new_layer


__all__ = ["factor_cross_network", "cross_params", "cross_network_params", "cross_refusal"]
