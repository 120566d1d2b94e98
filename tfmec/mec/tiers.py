"""Fitting the tiers of a :class:`~tfmec.layers.TieredEmbedding` to a trained float table.

Given a table ``float32[V, d]`` (ids numbered by descending training frequency), popularity weights
``[V]`` and a list of tiers (:class:`~tfmec.layers.Tier`), :func:`fit_tiers` returns the initial arrays
of each tier:

- exact tiers copy their rows;
- pq tiers run popularity-weighted k-means per sub-space on (a weighted sample of) the tier's rows,
  then give every row of the tier its nearest codeword (the weighted distortion MEC's stage 1 starts
  from; stage 2 fine-tunes the codebooks with the contrastive term);
- hashed tiers take, for each sub-space and codeword, the weighted mean of the sub-vectors of the
  tier's rows whose hashed code it is: the codebooks that minimise the weighted distortion for the
  fixed hashed codes (rows of zero weight count when no weighted row lands on a codeword).

Everything is NumPy on host, in chunks: peak memory is the table plus ``O(chunk * K)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmec.layers.tiered_embedding import Tier, hashed_codes_numpy
from tfmec.mec.kmeans import kmeans

SAMPLE_ROWS = 16384  # k-means fits on at most this many rows of a tier (weighted sample)
CHUNK = 65536


def _sample(n: int, weights: np.ndarray, rng: np.random.Generator, size: int = SAMPLE_ROWS) -> np.ndarray:
    """Indices of at most ``size`` rows: all rows when few, else the heaviest half of the budget plus a
    weighted draw (without replacement) of the rest."""
    if n <= size:
        return np.arange(n)
    order = np.argsort(-weights, kind="stable")
    top = order[: size // 2]
    rest = order[size // 2:]
    w = weights[rest].astype(np.float64) + 1e-12
    draw = rng.choice(rest, size=size - top.size, replace=False, p=w / w.sum())
    return np.sort(np.concatenate([top, draw]))


def nearest_codes(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes int64[n], squared distances float64[n])`` of the rows of ``x [n, s]`` to ``centres [K, s]``,
    in chunks."""
    c = centres.astype(np.float32)
    cc = (c * c).sum(1)
    codes = np.empty(x.shape[0], np.int64)
    dist = np.empty(x.shape[0], np.float64)
    for a in range(0, x.shape[0], CHUNK):
        xb = x[a:a + CHUNK].astype(np.float32)
        d = (xb * xb).sum(1)[:, None] - 2.0 * xb @ c.T + cc[None, :]
        codes[a:a + CHUNK] = d.argmin(1)
        dist[a:a + CHUNK] = np.maximum(d[np.arange(xb.shape[0]), codes[a:a + CHUNK]], 0.0)
    return codes, dist


def fit_pq(rows: np.ndarray, weights: np.ndarray, num_subspaces: int, num_codewords: int, seed: int = 0,
           iterations: int = 10, sample_rows: int = SAMPLE_ROWS,
           init: str = "kmeans++") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted PQ of ``rows [n, d]``: ``(codes int64[n, M], codebooks float32[M, K, d/M], squared error
    float64[n])``. k-means runs on a weighted sample of at most ``sample_rows`` rows; every row then
    gets its nearest codeword. ``init``: ``"kmeans++"`` seeding, or ``"random"`` (distinct sampled rows,
    drawn by weight: much faster for large ``K``, used by the budget's profile)."""
    n, d = rows.shape
    m, k = int(num_subspaces), int(num_codewords)
    sub = d // m
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, np.float64)
    if not (w > 0).any():
        w = np.ones(n)
    pick = _sample(n, w, rng, sample_rows)
    fit_w = w[pick] + 1e-9 * w[pick].max()
    codebooks = np.zeros((m, k, sub), np.float32)
    codes = np.zeros((n, m), np.int64)
    error = np.zeros(n, np.float64)
    for j in range(m):
        part = rows[:, j * sub:(j + 1) * sub]
        codebooks[j] = kmeans(part[pick], k, seed=seed + j, iterations=iterations, weights=fit_w, init=init)
        codes[:, j], dist = nearest_codes(part, codebooks[j])
        error += dist
    return codes, codebooks, error


def fit_hashed(rows: np.ndarray, ids: np.ndarray, weights: np.ndarray, num_subspaces: int, num_codewords: int,
               salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Codebooks of a hashed tier for ``rows [n, d]`` of table ids ``ids [n]``: ``(codebooks
    float32[M, K, d/M], squared error float64[n])`` (weighted means per hashed code; a codeword no
    weighted row reaches takes the plain mean of its rows, or 0)."""
    n, d = rows.shape
    m, k = int(num_subspaces), int(num_codewords)
    sub = d // m
    w = np.asarray(weights, np.float64)
    codebooks = np.zeros((m, k, sub), np.float32)
    error = np.zeros(n, np.float64)
    codes_all = [hashed_codes_numpy(ids[a:a + CHUNK * 4], m, k, salt) for a in range(0, n, CHUNK * 4)]
    codes = np.concatenate(codes_all) if codes_all else np.zeros((0, m), np.int64)
    for j in range(m):
        part = rows[:, j * sub:(j + 1) * sub].astype(np.float64)
        c = codes[:, j]
        mass = np.bincount(c, weights=w, minlength=k)
        count = np.bincount(c, minlength=k)
        for s in range(sub):
            weighted = np.bincount(c, weights=w * part[:, s], minlength=k)
            plain = np.bincount(c, weights=part[:, s], minlength=k)
            codebooks[j, :, s] = np.where(mass > 0, weighted / np.maximum(mass, 1e-300),
                                          plain / np.maximum(count, 1))
        error += ((part - codebooks[j][c]) ** 2).sum(1)
    return codebooks, error


def fit_tiers(table: np.ndarray, tiers: Sequence, weights: np.ndarray | None = None, seed: int = 0,
              hash_salt: int = 0) -> list[dict]:
    """Initial arrays of every tier (the ``arrays`` argument of :class:`~tfmec.layers.TieredEmbedding`)
    for a float table ``[V, d]`` and popularity ``weights [V]`` (default: all ones).

    ``hash_salt`` must be the layer's: hashed tier ``t`` hashes with ``hash_salt + t``."""
    table = np.asarray(table)
    v, d = table.shape
    w = np.ones(v) if weights is None else np.asarray(weights, np.float64)
    tiers = [Tier.from_config(t) for t in tiers]
    if sum(t.rows for t in tiers) != v:
        raise ValueError(f"the tiers' rows sum to {sum(t.rows for t in tiers)}, the table has {v}")
    out, start = [], 0
    for t, tier in enumerate(tiers):
        stop = start + tier.rows
        rows = table[start:stop]
        if tier.kind == "exact":
            out.append({"rows": np.array(rows, np.float32)})
        elif tier.kind == "pq":
            codes, books, _ = fit_pq(rows, w[start:stop], tier.num_subspaces, tier.num_codewords, seed=seed + t)
            out.append({"codes": codes, "codebooks": books})
        else:
            books, _ = fit_hashed(rows, np.arange(start, stop), w[start:stop], tier.num_subspaces,
                                  tier.num_codewords, hash_salt + t)
            out.append({"codebooks": books})
        start = stop
    return out


__all__ = ["fit_tiers", "fit_pq", "fit_hashed", "nearest_codes"]
