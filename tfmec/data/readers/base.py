"""The reader protocol every data format implements.

A reader streams a file (or several) as *chunks* of raw rows and never holds the whole file in
Python lists. A chunk is a :class:`Chunk`:

* ``features``: ``{column: np.ndarray[rows]}``; categorical columns are ``object`` arrays of ``str``
  (an empty value is ``""``), numeric columns are ``float64`` with ``NaN`` for an empty value;
* ``labels``: ``float32[rows]`` of 0.0 / 1.0;
* ``row_index``: ``int64[rows]``, the 0-based position of each row in the whole stream (over all
  files, counting only rows that were kept), used for deterministic splits.

Bad rows raise :class:`tfmec.data.DataError` naming file and line, or with ``on_error="skip"`` are
skipped and counted in ``reader.stats``.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from tfmec.data.errors import DataError

ON_ERROR_CHOICES = ("raise", "skip")


@dataclasses.dataclass
class Chunk:
    """A block of raw rows; see the module docstring for the array shapes and dtypes."""

    features: dict
    labels: np.ndarray
    row_index: np.ndarray

    def __len__(self):
        return int(self.labels.shape[0])


@dataclasses.dataclass
class ReadStats:
    """What the last full pass of a reader saw."""

    rows: int = 0
    skipped: int = 0
    examples: list = dataclasses.field(default_factory=list)  # first few skip messages

    def record_skip(self, err: DataError, keep: int = 20):
        self.skipped += 1
        if len(self.examples) < keep:
            self.examples.append(str(err))


class Reader:
    """Base class of all readers.

    Subclasses set ``self.columns`` (a list of ``(name, kind)`` with kind ``"categorical"`` or
    ``"numeric"``, in file order, label excluded), ``self.label`` (the label's name) and implement
    :meth:`_rows_chunks`.
    """

    columns: list
    label: str = "label"
    description: str = "data"

    def __init__(self, on_error: str = "raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        self.stats = ReadStats()

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def chunks(self, chunk_size: int = 8192) -> Iterator[Chunk]:
        """Streams the data as :class:`Chunk` objects of at most ``chunk_size`` rows.

        Every call starts a fresh pass and resets ``self.stats``. Raises :class:`DataError` on a bad
        row when ``on_error="raise"``, and on an empty input either way.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.stats = ReadStats()
        start = 0
        for chunk in self._chunks(chunk_size):
            n = len(chunk)
            if n == 0:
                continue
            chunk.row_index = np.arange(start, start + n, dtype=np.int64)
            start += n
            self.stats.rows += n
            yield chunk
        if start == 0:
            raise DataError(f"no data rows in {self.description}" + (
                f" ({self.stats.skipped} rows skipped as malformed)" if self.stats.skipped else ""))

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bad_row(self, message: str, path: str, line: int):
        """Raises or records a malformed row, as ``on_error`` says."""
        err = DataError(message, path, line)
        if self.on_error == "raise":
            raise err
        self.stats.record_skip(err)


def make_chunk(columns: Sequence[tuple[str, str]], values: dict, labels: list) -> Chunk:
    """Builds a :class:`Chunk` from per-column Python lists (kept to one chunk's rows at most)."""
    feats = {}
    for name, kind in columns:
        col = values[name]
        if kind == "numeric":
            feats[name] = np.asarray(col, dtype=np.float64)
        else:
            arr = np.empty(len(col), dtype=object)
            arr[:] = col
            feats[name] = arr
    return Chunk(feats, np.asarray(labels, dtype=np.float32), np.zeros(0, np.int64))


def parse_label(text: str, path: str, line: int, threshold: float | None = None) -> float:
    """Parses a 0/1 label (also ``-1`` as 0, libSVM style). With ``threshold`` the label is
    ``value >= threshold`` (for ratings). Raises DataError otherwise."""
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"label {t!r} is not a number", path, line) from None
    if threshold is not None:
        if not np.isfinite(v):
            raise DataError(f"label {t!r} is not finite", path, line)
        return 1.0 if v >= threshold else 0.0
    if v == 1.0:
        return 1.0
    if v in (0.0, -1.0):
        return 0.0
    raise DataError(f"label {t!r} is not 0/1 (or -1 for negative)", path, line)


def parse_float(text: str, column: str, path: str, line: int) -> float:
    """Parses a numeric cell: empty -> NaN; text, NaN or inf -> DataError."""
    t = text.strip()
    if t == "":
        return float("nan")
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"column {column!r}: {t!r} is not a number", path, line) from None
    if not np.isfinite(v):
        raise DataError(f"column {column!r}: {t!r} is not a finite number", path, line)
    return v
