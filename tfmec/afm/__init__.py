"""tfmec.afm: AFM low-rank compression (Atomic Feature Mimicking, arXiv 2405.18146).

:func:`compress` replaces the Dense layers of a Keras model of any kind (functional, nested,
``Sequential``, subclassed, Dense sub-layers of custom layers; found by :mod:`tfmec.graph`) by
:class:`~tfmec.layers.AFMDense` (first to last in forward order, each calibrated on what it receives
in the partly compressed model) and, optionally, its embedding tables by
:class:`~tfmec.layers.LowRankEmbedding`, and factors DCNv2's cross network (:mod:`tfmec.afm.cross`);
it returns ``(new_model, report)``. The streaming
statistics, PCA and rank rules live in :mod:`tfmec.afm.stats`.
"""
from tfmec.afm import compress, fine_tune, cross, stats
from tfmec.api_export import public_names
from tfmec.layers import afm_dense as _afm_dense  # defines tfmec.afm.dense_params and embedding_params

# every name exported as tfmec.afm.* by the modules above (@tfmec_export); the function compress replaces
# the submodule of that name here, as before
__all__ = public_names(globals(), compress, fine_tune, cross, stats, _afm_dense)
