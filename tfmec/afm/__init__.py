"""tfmec.afm: AFM low-rank compression (Atomic Feature Mimicking, arXiv 2405.18146).

:func:`compress` replaces the Dense layers of a Keras model of any kind (functional, nested,
``Sequential``, subclassed, Dense sub-layers of custom layers; found by :mod:`tfmec.graph`) by
:class:`~tfmec.layers.AFMDense` (first to last in forward order, each calibrated on what it receives
in the partly compressed model) and, optionally, its embedding tables by
:class:`~tfmec.layers.LowRankEmbedding`, and factors DCNv2's cross network (:mod:`tfmec.afm.cross`);
it returns ``(new_model, report)``. The streaming
statistics, PCA and rank rules live in :mod:`tfmec.afm.stats`.
"""
from tfmec.afm.compress import AFMReport, LayerReport, compress, replace_layers
from tfmec.afm.fine_tune import FINE_TUNE_KEYS, FineTune, run_fine_tune
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
    "dense_params", "embedding_params", "cross_params", "factor_cross_network", "FineTune", "FINE_TUNE_KEYS",
    "run_fine_tune",
]
