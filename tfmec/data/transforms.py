"""Numeric transforms applied to raw numeric columns (vectorised over a chunk)."""
from __future__ import annotations

import numpy as np

from tfmec.api_export import tfmec_export


BUCKET_LIMIT = float(2**53)
"""``log_square`` buckets are clipped to ``[-2**53, 2**53]`` (exact in float64) before the cast to int64,
so an absurd count (``-1e308``) gets a well-defined bucket, the same in NumPy and in-graph."""

ZSCORE_LIMIT = 1e6
"""Standardised numeric values are clipped to ``[-1e6, 1e6]``: an absurd raw value (``3e38``) must not
overflow float32 into ``inf`` (and the model's output into NaN)."""


@tfmec_export("tfmec.data.criteo_log_square")
def criteo_log_square(values: np.ndarray) -> np.ndarray:
    """Criteo's standard bucketing of integer counts: ``x > 2 -> floor(log(x)^2)``, else ``int(x)``.

    Args:
        values: ``float64[rows]``, NaN for missing.
    Returns:
        ``object[rows]`` of str bucket tokens; missing values become ``""`` (their own bucket).
    """
    v = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(v)
    safe = np.where(missing, 0.0, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        bucket = np.where(safe > 2, np.floor(np.log(np.maximum(safe, 1e-12)) ** 2), np.floor(safe))
    bucket = np.clip(bucket, -BUCKET_LIMIT, BUCKET_LIMIT)  # huge negatives: one bucket, no int64 overflow
    tokens = bucket.astype(np.int64).astype(str).astype(object)
    tokens[missing] = ""
    return tokens


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)`` of ``float64[rows]``; NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    return np.sign(v) * np.log1p(np.abs(v))


def apply_numeric_transform(transform: str | None, values: np.ndarray) -> np.ndarray:
    """Applies a field's numeric transform (see :data:`tfmec.data.schema.NUMERIC_TRANSFORMS`)."""
    if transform in (None, "identity"):
        return np.asarray(values, dtype=np.float64)
    if transform == "log1p":
        return signed_log1p(values)
    if transform == "log_square":
        return criteo_log_square(values)
    raise ValueError(f"unknown numeric transform {transform!r}")
