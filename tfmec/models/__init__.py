"""tfmec models: CTR models assembled from a feature schema and an embedding factory.

Every builder returns a functional ``keras.Model`` that takes ``{field.name: Tensor[batch]}`` (int32
ids for categorical fields, float32 for numeric) and returns the click probability ``[batch, 1]``.
"""
from tfmec.models.autoint import AutoInt
from tfmec.models.cross import DCNv2, GDCN
from tfmec.models.deepfm import DeepFM
from tfmec.models.din import DIN, target_attention_pooling
from tfmec.models.embedding import (
    FieldEmbeddings,
    build_inputs,
    check_schema,
    default_embedding_factory,
    embed_fields,
    mean_pooling,
)
from tfmec.models.fm import FM
from tfmec.models.lr import LR
from tfmec.models.pnn import PNN
from tfmec.models.registry import MODELS, build_model

__all__ = [
    "LR", "FM", "DeepFM", "DIN", "target_attention_pooling", "mean_pooling", "DCNv2", "PNN", "GDCN", "AutoInt", "MODELS", "build_model",
    "default_embedding_factory", "embed_fields", "build_inputs", "check_schema", "FieldEmbeddings",
]
