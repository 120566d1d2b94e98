"""k-means++ seeding and a few Lloyd iterations, in NumPy, for initialising PQ codebooks.

Works on a sample of sub-vectors (never the whole table): ``x: float32[n, dm]`` -> ``float32[K, dm]``.
"""
from __future__ import annotations

import numpy as np


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared L2 distances ``[n, k]`` between rows of ``x [n, dm]`` and ``c [k, dm]``."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), optionally weighted per row.

    When ``x`` has fewer distinct rows than ``k`` the remaining centres are copies of sampled rows
    plus a little noise, so every codeword starts distinct.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    centres = np.empty((k, x.shape[1]))
    first = rng.choice(n, p=w / w.sum())
    centres[0] = x[first]
    closest = _sq_dist(x, centres[:1])[:, 0]
    for j in range(1, k):
        p = closest * w
        total = p.sum()
        if total <= 1e-12:  # every point already is a centre
            scale = float(np.std(x)) or 1.0
            centres[j] = x[rng.integers(n)] + rng.normal(0, 1e-3 * scale, x.shape[1])
        else:
            centres[j] = x[rng.choice(n, p=p / total)]
        closest = np.minimum(closest, _sq_dist(x, centres[j : j + 1])[:, 0])
    return centres


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 10, weights: np.ndarray | None = None,
           init: str = "kmeans++") -> np.ndarray:
    """k-means++ seeding (or, with ``init="random"``, ``k`` rows drawn by weight without replacement,
    repeated with a little noise when there are fewer rows) then ``iterations`` weighted Lloyd steps;
    returns ``float32[k, dm]``.

    Empty clusters keep their previous centre.
    """
    rng = np.random.default_rng(seed)
    x64 = np.asarray(x, dtype=np.float64)
    w = np.ones(x64.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if init == "random":
        p = (w + 1e-12) / (w + 1e-12).sum()
        pick = rng.choice(x64.shape[0], size=min(k, x64.shape[0]), replace=False, p=p)
        centres = x64[np.resize(pick, k)].copy()
        if k > pick.size:
            centres[pick.size:] += rng.normal(0, 1e-3 * (float(np.std(x64)) or 1.0), centres[pick.size:].shape)
    elif init == "kmeans++":
        centres = kmeans_plus_plus(x64, k, rng, w)
    else:
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    for _ in range(iterations):
        assign = _sq_dist(x64, centres).argmin(1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x64 * w[:, None])
        mass = np.bincount(assign, weights=w, minlength=k)
        filled = mass > 0
        centres[filled] = sums[filled] / mass[filled, None]
    return centres.astype(np.float32)


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every row: ``int64[n]``."""
    return _sq_dist(np.asarray(x, np.float64), np.asarray(centres, np.float64)).argmin(1)
