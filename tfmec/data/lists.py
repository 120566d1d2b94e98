"""Multi-valued cells: splitting them into values, and encoding them as padded id rows.

A multi-valued field (``Field(max_length=L)``) reads, per row, a list of raw values in
chronological order (oldest first). A cell is one of:

* a string, split on the field's ``separator`` (whitespace when None); ``""`` is an empty list;
* a list, tuple or 1-D array of values (Parquet list columns, TFRecord variable-length features);
* None or a float NaN (a missing cell): an empty list.

Empty values (``""``) are dropped wherever they come from: a served request pads its lists with them.

Encoding (:func:`encode_lists`) maps every value through the vocabulary, drops the values it does
not keep (id 0, the OOV id: inside a list 0 is only ever padding), keeps the ``L`` most recent kept
values, most recent first, and pads with 0: ``int32[rows, L]``. The work is one flat lookup per chunk
(no per-value Python call into the vocabulary) plus NumPy indexing.
"""
from __future__ import annotations

import math

import numpy as np

from tfmec.data.vocabulary import OOV_ID, Vocabulary

PADDING_ID = 0
"""The id of an empty slot of a multi-valued row (the OOV id, which a list never holds)."""


def cell_values(cell, separator: str | None = None) -> list:
    """The raw values of one multi-valued cell, oldest first (see the module docstring).

    Raises:
        TypeError: for a cell that is neither a string, a sequence of values nor missing (the caller
            turns it into a DataError naming the row).
    """
    if cell is None:
        return []
    if isinstance(cell, (bytes, bytearray)):
        cell = cell.decode("utf-8", errors="replace")
    if isinstance(cell, str):
        return cell.split(separator) if separator is not None else cell.split()
    if isinstance(cell, float):
        if math.isnan(cell):
            return []
        raise TypeError(f"a multi-valued cell must be a list or a string, got the number {cell!r}")
    if isinstance(cell, np.ndarray):
        if cell.ndim != 1:
            raise TypeError(f"a multi-valued cell must be 1-D, got an array of shape {cell.shape}")
        return cell.tolist()
    if isinstance(cell, (list, tuple)):
        return list(cell)
    raise TypeError(f"a multi-valued cell must be a list or a string, got {type(cell).__name__}")


def split_cells(cells, separator: str | None = None) -> tuple[list, np.ndarray]:
    """``(values, lengths)``: every cell's values concatenated (a flat list) and ``int64[rows]`` counts."""
    flat, lengths = [], np.zeros(len(cells), np.int64)
    for i, cell in enumerate(cells):
        values = [v for v in cell_values(cell, separator) if not (isinstance(v, (str, bytes)) and not v)]
        flat.extend(values)
        lengths[i] = len(values)
    return flat, lengths


def encode_lists(vocabulary: Vocabulary, cells, max_length: int, separator: str | None = None) -> np.ndarray:
    """Encodes multi-valued cells ``[rows]`` as ``int32[rows, max_length]`` (module docstring rules)."""
    flat, lengths = split_cells(cells, separator)
    rows = len(lengths)
    out = np.zeros((rows, int(max_length)), np.int32)
    if not flat:
        return out
    ids = vocabulary.lookup(flat)
    row_of = np.repeat(np.arange(rows), lengths)
    keep = ids != OOV_ID
    ids, row_of = ids[keep], row_of[keep]
    if not len(ids):
        return out
    # position from the end of its row (0 = most recent kept value), from the kept values' counts
    kept = np.bincount(row_of, minlength=rows)
    ends = np.cumsum(kept)
    from_end = ends[row_of] - 1 - np.arange(len(ids))
    sel = from_end < max_length
    out[row_of[sel], from_end[sel]] = ids[sel]
    return out


__all__ = ["PADDING_ID", "cell_values", "split_cells", "encode_lists"]
