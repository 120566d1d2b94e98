"""tfmec: compress click-through-rate models in TensorFlow/Keras (MEC product-quantised embeddings,
AFM low-rank MLPs), and keep them plain Keras models.

Public API::

    import tfmec
    data = tfmec.data.load("synthetic", rows=200_000)
    model = tfmec.models.DeepFM(data.schema, embedding_dim=16)
"""
from tfmec import afm, baselines, data, export, io, layers, mec, models, report
from tfmec.backend import KERAS_MODE, keras

__version__ = "0.1.0"

__all__ = ["afm", "baselines", "data", "export", "io", "layers", "mec", "models", "report", "keras", "KERAS_MODE",
           "__version__"]
