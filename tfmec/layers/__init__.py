"""tfmec layers: embeddings of numeric fields, feature-interaction layers, MLP helpers.

Every layer is a registered, serialisable Keras layer (package ``tfmec``) whose math is written with
TensorFlow ops, so it behaves the same under Keras 3 and tf-keras. The MLP is built from plain
``Dense`` layers in the functional graph (see :mod:`tfmec.layers.mlp`).
"""
from tfmec.api_export import public_names
from tfmec.layers import (
    attention, cross, fields, fm, linear, mlp, numeric, pooling, product, regularization, sparse_read_embedding,
)
# product-quantised embeddings (MEC stage 2)
from tfmec.layers import bitpack, quantized_embedding, shared_quantized_embedding, tiered_embedding
# low-rank layers of AFM
from tfmec.layers import afm_dense
# competing baselines of `tfmec run`: int8 / int4 tables, the hashing trick, quotient-remainder tables
from tfmec.layers import hashed_embedding, int8_embedding, qr_embedding

# every name exported as tfmec.layers.* by the modules above (@tfmec_export)
__all__ = public_names(
    globals(), attention, cross, fields, fm, linear, mlp, numeric, pooling, product, regularization,
    sparse_read_embedding, bitpack, quantized_embedding, shared_quantized_embedding, tiered_embedding, afm_dense,
    hashed_embedding, int8_embedding, qr_embedding)
