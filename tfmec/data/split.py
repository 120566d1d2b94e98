"""Deterministic, streaming train/valid/test splits.

Each row's split is a function of (seed, row index) only, so it is the same in every pass over the
data, whatever the chunk size, and needs no memory.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.data.hashing import hash_keys, uniform01

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validates (train, valid, test) fractions: three non-negative numbers summing to 1."""
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {fractions!r}")
    f = tuple(float(x) for x in fractions)
    if any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6 or f[0] == 0:
        raise ValueError(f"fractions must be non-negative, sum to 1 and give train a share; got {fractions!r}")
    return f


@tfmec_export("tfmec.data.assign_splits")
def assign_splits(row_index: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split of each row: ``int8[rows]`` with 0 = train, 1 = valid, 2 = test."""
    f = check_fractions(fractions)
    u = uniform01(hash_keys(seed, 0x5EED, np.asarray(row_index, dtype=np.int64)))
    return np.where(u < f[0], TRAIN, np.where(u < f[0] + f[1], VALID, TEST)).astype(np.int8)
