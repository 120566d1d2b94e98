"""tfmec.afm: AFM low-rank compression (Atomic Feature Mimicking, arXiv 2405.18146).

:func:`compress` replaces a functional model's Dense layers by :class:`~tfmec.layers.AFMDense`
(first to last, each calibrated on the partly compressed model) and, optionally, its embedding tables
by :class:`~tfmec.layers.LowRankEmbedding`, and factors DCNv2's cross network
(:mod:`tfmec.afm.cross`); it returns ``(new_model, report)``. The streaming
statistics, PCA and rank rules live in :mod:`tfmec.afm.stats`.
"""
from tfmec.afm.compress import AFMReport, LayerReport, compress, replace_layers
from tfmec.afm.cross import cross_params, factor_cross_network
from tfmec.afm.stats import (
    RankChoice,
    StreamingMoments,
    collect_moments,
    dense_preactivation_moments,
    embedding_output_moments,
    energy_curve,
    pca,
    select_rank,
)
from tfmec.layers.afm_dense import dense_params, embedding_params

__all__ = [
    "compress", "replace_layers", "AFMReport", "LayerReport", "StreamingMoments", "collect_moments",
    "dense_preactivation_moments", "embedding_output_moments", "pca", "select_rank", "energy_curve", "RankChoice",
    "dense_params", "embedding_params", "cross_params", "factor_cross_network",
]
