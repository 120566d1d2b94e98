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

Bounds. Whatever a file holds, a reader's memory stays bounded by the chunk size:

* a cell (a categorical or numeric value, any column of a text record) holds at most
  :data:`MAX_CELL_CHARS` characters (131,072, the :mod:`csv` module's own field limit); a longer one
  makes its row a bad row, named by file, line and column;
* a line of a text file (a record of a CSV file, quoted newlines included; a TFRecord record) holds at
  most :data:`MAX_RECORD_BYTES` bytes (16 MiB); a longer one is a bad row, read past in pieces of at
  most 1 MiB, never whole;
* a chunk ends early, before ``chunk_size`` rows, once its rows hold :data:`MAX_CHUNK_CHARS`
  characters of text (32 Mi), so that many long cells cannot add up;
* categorical values stay Python strings in ``object`` arrays all the way to the vocabulary (never a
  fixed-width NumPy string array, which pads every row to the longest value);
* only regular files are read: a named pipe (FIFO), a device (``/dev/zero``), a socket or a folder,
  also behind a symbolic link, is refused with a :class:`DataError` before it is opened for reading.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError

ON_ERROR_CHOICES = ("raise", "skip")

#: The most characters one cell may hold (the :mod:`csv` module's default field limit, 2**17).
MAX_CELL_CHARS = 131_072
#: The most bytes one line of a text file, one CSV record or one TFRecord record may hold (16 MiB).
MAX_RECORD_BYTES = 16 * 2**20
#: A chunk ends early once its rows hold this many characters of text (32 Mi).
MAX_CHUNK_CHARS = 32 * 2**20
#: Integers read from typed (Parquet, TFRecord) number columns must lie within +-2**53, where every
#: integer is exact as a float64; a larger one is a bad row (read such an id column as categorical).
MAX_EXACT_INT = 2**53


def shown(value, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters (a long cell is not echoed whole)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit - 20]!r}... ({len(value):,} characters)"


def cell_too_long(name: str, length: int) -> str:
    """The bad-row message for a cell of ``length`` characters in column ``name``."""
    return (f"column {name!r}: the value holds {length:,} characters; a cell may hold at most "
            f"{MAX_CELL_CHARS:,} (tfmec.data.readers.base.MAX_CELL_CHARS)")


def int_not_exact(name: str, value: int) -> str:
    """The bad-row message for an integer beyond +-2**53 in the number column ``name``."""
    return (f"column {name!r}: the integer {value} lies beyond +-2**53, where float64 numbers cannot hold every "
            f"integer exactly; if the column holds ids, read it as categorical (categorical=[{name!r}])")


@tfmec_export("tfmec.data.Chunk", "tfmec.data.readers.Chunk")
@dataclasses.dataclass
class Chunk:
    """A block of raw rows; see the module docstring for the array shapes and dtypes."""

    features: dict
    labels: np.ndarray
    row_index: np.ndarray

    def __len__(self):
        return int(self.labels.shape[0])


@tfmec_export("tfmec.data.readers.ReadStats")
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


@tfmec_export("tfmec.data.Reader", "tfmec.data.readers.Reader")
class Reader:
    """Base class of all readers.

    Subclasses set ``self.columns`` (a list of ``(name, kind)`` with kind ``"categorical"``,
    ``"numeric"`` or ``"list"`` (a multi-valued column: a string of values or a list per row), in file
    order, label excluded), optionally ``self.shared_tables`` (``{list column: column whose table it
    shares}``) and ``self.list_separators`` (``{list column: separator of its string cells}``), read
    by the default schema, ``self.label`` (the label's name) and implement
    :meth:`_rows_chunks`.
    """

    columns: list
    label: str = "label"
    description: str = "data"
    shared_tables: dict = {}  # noqa: RUF012 - read-only default: no list column shares a table
    list_separators: dict = {}  # noqa: RUF012 - read-only default: list cells split on whitespace

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


@tfmec_export("tfmec.data.readers.make_chunk")
def make_chunk(columns: Sequence[tuple[str, str]], values: dict, labels: list) -> Chunk:
    """Builds a :class:`Chunk` from per-column Python lists (kept to one chunk's rows at most)."""
    feats = {}
    for name, kind in columns:
        col = values[name]
        if kind == "numeric":
            feats[name] = np.asarray(col, dtype=np.float64)
        elif kind == "list":  # cell by cell: ``arr[:] = col`` would broadcast equal-length lists to 2-D
            arr = np.empty(len(col), dtype=object)
            for i, cell in enumerate(col):
                arr[i] = cell
            feats[name] = arr
        else:
            arr = np.empty(len(col), dtype=object)
            arr[:] = col
            feats[name] = arr
    return Chunk(feats, np.asarray(labels, dtype=np.float32), np.zeros(0, np.int64))


@tfmec_export("tfmec.data.readers.parse_label")
def parse_label(text: str, path: str, line: int, threshold: float | None = None) -> float:
    """Parses a 0/1 label (also ``-1`` as 0, libSVM style). With ``threshold`` the label is
    ``value >= threshold`` (for ratings). Raises DataError otherwise."""
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"label {shown(t)} is not a number", path, line) from None
    if threshold is not None:
        if not np.isfinite(v):
            raise DataError(f"label {shown(t)} is not finite", path, line)
        return 1.0 if v >= threshold else 0.0
    if v == 1.0:
        return 1.0
    if v in (0.0, -1.0):
        return 0.0
    raise DataError(f"label {shown(t)} is not 0/1 (or -1 for negative)", path, line)


@tfmec_export("tfmec.data.readers.parse_float")
def parse_float(text: str, column: str, path: str, line: int) -> float:
    """Parses a numeric cell: empty -> NaN; text, NaN or inf -> DataError."""
    t = text.strip()
    if t == "":
        return float("nan")
    try:
        v = float(t)
    except ValueError:
        raise DataError(f"column {column!r}: {shown(t)} is not a number", path, line) from None
    if not np.isfinite(v):
        raise DataError(f"column {column!r}: {shown(t)} is not a finite number", path, line)
    return v
