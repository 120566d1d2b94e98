"""tfmec layers: embeddings of numeric fields, feature-interaction layers, MLP helpers.

Every layer is a registered, serialisable Keras layer (package ``tfmec``) whose math is written with
TensorFlow ops, so it behaves the same under Keras 3 and tf-keras. The MLP is built from plain
``Dense`` layers in the functional graph (see :mod:`tfmec.layers.mlp`).
"""
from tfmec.layers.attention import SelfAttentionInteraction
from tfmec.layers.cross import CrossNetV2, GatedCrossNet
from tfmec.layers.fields import FlattenFields, StackFields
from tfmec.layers.fm import FMInteraction
from tfmec.layers.linear import LinearTerms
from tfmec.layers.mlp import MLP, logit_layer, mlp_block
from tfmec.layers.numeric import NumericEmbedding
from tfmec.layers.pooling import MaskedMeanPooling, MaskedWeightedSum, TargetAttentionInputs
from tfmec.layers.product import InnerProduct, pair_indices
from tfmec.layers.regularization import L2Penalty
from tfmec.layers.sparse_read_embedding import SparseReadEmbedding

__all__ = [
    "NumericEmbedding",
    "StackFields",
    "FlattenFields",
    "LinearTerms",
    "FMInteraction",
    "InnerProduct",
    "pair_indices",
    "CrossNetV2",
    "GatedCrossNet",
    "SelfAttentionInteraction",
    "L2Penalty",
    "SparseReadEmbedding",
    "MLP",
    "mlp_block",
    "logit_layer",
    "MaskedMeanPooling",
    "TargetAttentionInputs",
    "MaskedWeightedSum",
]

# product-quantised embeddings (MEC stage 2)
from tfmec.layers.bitpack import pack_codes, unpack_codes  # noqa: E402
from tfmec.layers.quantized_embedding import (  # noqa: E402
    QuantizedEmbedding,
    contrastive_loss,
    decode_codes,
    semi_synthetic_negative_codes,
)
from tfmec.layers.shared_quantized_embedding import SharedQuantizedEmbedding  # noqa: E402
from tfmec.layers.tiered_embedding import Tier, TieredEmbedding, tiers_storage_bytes  # noqa: E402

__all__ += [
    "QuantizedEmbedding",
    "SharedQuantizedEmbedding",
    "Tier",
    "TieredEmbedding",
    "tiers_storage_bytes",
    "contrastive_loss",
    "decode_codes",
    "semi_synthetic_negative_codes",
    "pack_codes",
    "unpack_codes",
]

# low-rank layers of AFM
from tfmec.layers.afm_dense import AFMDense, LowRankEmbedding  # noqa: E402

__all__ += ["AFMDense", "LowRankEmbedding"]

# competing baselines of `tfmec run`: int8 / int4 tables, the hashing trick, quotient-remainder tables
from tfmec.layers.hashed_embedding import HashedEmbedding, hash_buckets  # noqa: E402
from tfmec.layers.int8_embedding import Int8Embedding, quantize_int8  # noqa: E402
from tfmec.layers.qr_embedding import QREmbedding  # noqa: E402

__all__ += ["Int8Embedding", "quantize_int8", "HashedEmbedding", "hash_buckets", "QREmbedding"]
