"""tfmec: compress click-through-rate models in TensorFlow/Keras (MEC product-quantised embeddings,
AFM low-rank MLPs), and keep them plain Keras models.

Public API::

    import tfmec
    data = tfmec.data.load("synthetic", rows=200_000)
    model = tfmec.models.DeepFM(data.schema, embedding_dim=16)
"""
from tfmec._tf_logs import quiet_tensorflow_import as _quiet_tensorflow_import

with _quiet_tensorflow_import():  # the tfmec command only (not a user's import): TensorFlow's C++ start-up logs
    from tfmec import afm, backend, baselines, callbacks, data, evaluation, export, io, layers, mec, models, report
    from tfmec import training
del _quiet_tensorflow_import
from tfmec.api_export import export_value, public_names  # noqa: E402

__version__ = "0.1.0"
export_value("tfmec.__version__", __version__, doc="the version of tfmec")
for _module in (afm, baselines, callbacks, data, evaluation, export, io, layers, mec, models, report, training):
    export_value(_module.__name__, _module)  # the public subpackages and modules
del _module

# the modules above, __version__, and tfmec.keras / tfmec.KERAS_MODE (exported by tfmec.backend)
__all__ = public_names(globals(), backend)
