"""Running a predictor over ``{name: array[n]}`` inputs in fixed-size batches (Keras, SavedModel, ONNX)."""
from __future__ import annotations

from typing import Callable

import numpy as np


def predict_in_batches(predict_batch: Callable[[int, int], np.ndarray], inputs: dict, batch_size: int) -> np.ndarray:
    """Probabilities ``float32[n]`` of ``n = len(any input)`` rows: ``predict_batch(start, stop)``
    returns the predictions of rows ``[start, stop)`` in any shape; they are flattened and joined."""
    n = len(next(iter(inputs.values())))
    out = [np.asarray(predict_batch(start, min(n, start + batch_size))).reshape(-1) for start in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


__all__ = ["predict_in_batches"]
