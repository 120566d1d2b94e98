"""Vectorised, seedable integer hashing (splitmix64) used for deterministic splits and synthetic data."""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of ``uint64[...]`` -> ``uint64[...]`` (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_keys(*keys) -> np.ndarray:
    """Hashes a tuple of integer keys (scalars or broadcastable arrays) into ``uint64``."""
    h = np.uint64(0x243F6A8885A308D3)
    for k in keys:
        with np.errstate(over="ignore"):
            h = mix64(np.asarray(k).astype(np.uint64) ^ mix64(h))
    return h


def uniform01(h: np.ndarray) -> np.ndarray:
    """Maps ``uint64`` hashes to float64 uniforms in [0, 1)."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal_from(h: np.ndarray) -> np.ndarray:
    """Standard normal variates from ``uint64`` hashes (Box-Muller on two derived uniforms)."""
    u1 = uniform01(mix64(h)) + 1e-300
    u2 = uniform01(mix64(h ^ np.uint64(0x5851F42D4C957F2D)))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
