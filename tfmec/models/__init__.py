"""tfmec models: CTR models assembled from a feature schema and an embedding factory.

Every builder returns a functional ``keras.Model`` that takes ``{field.name: Tensor[batch]}`` (int32
ids for categorical fields, float32 for numeric) and returns the click probability ``[batch, 1]``.
"""
from tfmec.api_export import public_names
from tfmec.models import autoint, cross, deepfm, din, embedding, fm, lr, pnn, registry

# every name exported as tfmec.models.* by the modules above (@tfmec_export, export_value)
__all__ = public_names(globals(), autoint, cross, deepfm, din, embedding, fm, lr, pnn, registry)
