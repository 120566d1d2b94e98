"""tfmec.mec: MEC (product-quantised embeddings, arXiv 2502.15355).

Stage 1 :func:`learn_codes` learns codes and codebooks from a trained model's tables; stage 2
:func:`compress_embeddings` swaps the tables of any functional model for quantised ones;
:func:`memory_report` counts bytes; :func:`compress_to_budget` fits any byte budget with popularity
tiers per table (exact head rows, PQ codes, a zero-byte hashed tail); :func:`count_ids` measures how often each table row is looked up,
through the model's own preprocessing (the ``frequencies`` of stage 1).
"""
from tfmec.api_export import public_names
from tfmec.mec import budget, codes, compress, count, memory, stage1

# every name exported as tfmec.mec.* by the modules above (@tfmec_export)
__all__ = public_names(globals(), budget, codes, compress, count, memory, stage1)
