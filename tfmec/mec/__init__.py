"""tfmec.mec: MEC (product-quantised embeddings, arXiv 2502.15355).

Stage 1 :func:`learn_codes` learns codes and codebooks from a trained model's tables; stage 2
:func:`compress_embeddings` swaps the tables of any functional model for quantised ones;
:func:`memory_report` counts bytes; :func:`compress_to_budget` fits any byte budget with popularity
tiers per table (exact head rows, PQ codes, a zero-byte hashed tail); :func:`count_ids` measures how often each table row is looked up,
through the model's own preprocessing (the ``frequencies`` of stage 1).
"""
from tfmec.mec.budget import BudgetPlan, compress_to_budget
from tfmec.mec.codes import CodeSet, FieldCodes, code_dtype
from tfmec.mec.compress import compress_embeddings
from tfmec.mec.count import count_ids
from tfmec.mec.memory import memory_report
from tfmec.mec.stage1 import learn_codes, popularity_weights, tables_from

__all__ = ["compress_to_budget", "BudgetPlan", "count_ids", "CodeSet", "FieldCodes", "code_dtype", "compress_embeddings", "memory_report", "learn_codes",
           "popularity_weights", "tables_from"]
