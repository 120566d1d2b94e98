"""Export step of ``tfmec run``: SavedModel + ONNX for one method's model, with sizes and parity.

Layout under the method's folder ``DIR/<method>/``::

    saved_model/<version>/       tfmec.export.saved_model (a new version each run; TF Serving's layout)
    model.onnx                   tfmec.export.onnx (ids inputs)
    model.vocabulary.json        the vocabulary beside the ONNX model
"""
from __future__ import annotations

import os
import time

from tfmec.export.onnx_export import onnx, onnx_available
from tfmec.export.parity import check_parity, take_rows
from tfmec.export.savedmodel import saved_model
from tfmec.export.versions import directory_bytes


def export_run(model, method_dir: str, encoder, dataset, max_rows: int = 2048) -> dict:
    """Exports ``model`` into ``method_dir`` and checks both exports on up to ``max_rows`` rows of
    ``dataset`` (a ``tf.data`` split of ``(features, label)`` batches).

    Returns the ``metrics.json`` entries: ``saved_model_path`` (relative to ``method_dir``),
    ``saved_model_bytes``, ``onnx_bytes``, ``saved_model_max_abs_diff`` (both signatures; the raw one
    on values decoded from the ids), ``onnx_max_abs_diff``, ``parity_rows``, ``export_seconds``. Without
    tf2onnx/onnxruntime the ONNX entries are None and ``onnx_skipped`` says why.
    """
    t0 = time.perf_counter()
    sm_path = saved_model(model, os.path.join(method_dir, "saved_model"), encoder)
    onnx_path = None
    out = {}
    if onnx_available():
        onnx_path = onnx(model, os.path.join(method_dir, "model.onnx"), encoder)
    else:
        out.update(onnx_bytes=None, onnx_max_abs_diff=None,
                   onnx_skipped="tf2onnx/onnxruntime not installed: pip install 'tfmec[onnx]'")
    export_seconds = time.perf_counter() - t0
    ids = take_rows(dataset, max_rows)
    out.update(check_parity(model, ids, saved_model_path=sm_path, onnx_path=onnx_path, encoder=encoder))
    out.update(saved_model_path=os.path.relpath(sm_path, method_dir), saved_model_bytes=directory_bytes(sm_path),
               export_seconds=export_seconds)
    if onnx_path is not None:
        out["onnx_bytes"] = os.path.getsize(onnx_path)
    return out


__all__ = ["export_run", "onnx_available"]
