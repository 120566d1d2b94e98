"""tfmec: compress click-through-rate models in TensorFlow/Keras (MEC product-quantised embeddings,
AFM low-rank MLPs), and keep them plain Keras models.

Public API::

    import tfmec
    data = tfmec.data.load("synthetic", rows=200_000)
    model = tfmec.models.DeepFM(data.schema, embedding_dim=16)
"""
from tfmec._tf_logs import quiet_tensorflow_import as _quiet_tensorflow_import

with _quiet_tensorflow_import():  # the tfmec command only (not a user's import): TensorFlow's C++ start-up logs
    from tfmec import afm, baselines, data, export, io, layers, mec, models, report
    from tfmec.backend import KERAS_MODE, keras
del _quiet_tensorflow_import

__version__ = "0.1.0"

__all__ = ["afm", "baselines", "data", "export", "io", "layers", "mec", "models", "report", "keras", "KERAS_MODE",
           "__version__"]
