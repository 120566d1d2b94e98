"""Reader for Parquet files, batch by batch, through pyarrow (default) or tensorflow-io.

The ``engine`` argument picks the library that reads the file: ``"pyarrow"`` (default, every
supported column type, nulls) or ``"tfio"`` (``tensorflow_io.IODataset.from_parquet``; needs
tensorflow-io 0.37.1 on TensorFlow 2.16.x, see :mod:`tfmec.data.readers.tfio_engine`). Both engines go
through the same conversion, so they yield identical chunks; what tensorflow-io cannot read that way
(nulls, decimals, float16) is refused with a :class:`~tfmec.data.errors.DataError`. List columns
(multi-valued fields) are read by the pyarrow engine only.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

from tfmec.api_export import export_value, tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import (
    MAX_CELL_CHARS,
    MAX_CHUNK_CHARS,
    MAX_EXACT_INT,
    Chunk,
    cell_too_long,
    int_not_exact,
    parse_float,
)
from tfmec.data.readers.text import FileReader, as_name_list, check_regular, fast_label

#: The Parquet engines: ``pyarrow`` (default) and ``tfio`` (tensorflow-io).
ENGINES = ("pyarrow", "tfio")
export_value("tfmec.data.readers.ENGINES", ENGINES, doc="the Parquet engines: pyarrow (default) and tfio")


def _list_value_type(pa, typ):
    """The value type of a list / large_list / fixed_size_list type, else None."""
    t = pa.types
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ):
        return typ.value_type
    return None


def _kind_of(pa, typ) -> str | None:
    """``"numeric"`` / ``"categorical"`` / ``"list"`` for a supported arrow type, else None.

    A list (also large or fixed-size) of strings, binary or integers (dictionary-encoded or not) is a
    ``"list"``: a multi-valued categorical column. Lists of anything else (floats, decimals, booleans,
    nested lists) are not supported (see :func:`_unsupported_list`)."""
    t = pa.types
    value = _list_value_type(pa, typ)
    if value is not None:
        if t.is_dictionary(value):
            value = value.value_type
        return "list" if _is_text(pa, value) or t.is_integer(value) else None
    if t.is_dictionary(typ):
        typ = typ.value_type
    if t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ) or t.is_decimal(typ):
        return "numeric"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ):
        return "categorical"
    if getattr(t, "is_string_view", None) and t.is_string_view(typ):
        return "categorical"
    return None


def _unsupported_list(pa, name: str, typ) -> str | None:
    """The message refusing column ``name`` of list type ``typ`` whose values are not categorical, or
    None when ``typ`` is not a list type."""
    value = _list_value_type(pa, typ)
    if value is None:
        return None
    return (f"column {name!r} is a list of {value}: only lists of strings, binary or integers (categorical "
            f"values) can be read as a multi-valued column; pass drop=[{name!r}] to leave it out")


@tfmec_export("tfmec.data.ParquetReader", "tfmec.data.readers.ParquetReader")
class ParquetReader(FileReader):
    """Parquet files read with ``pyarrow.parquet.ParquetFile.iter_batches``.

    Feature kinds come from the arrow types: integer, floating, decimal and boolean columns are
    numeric, string/binary columns categorical, and list columns (``list``, ``large_list`` or
    ``fixed_size_list``) of strings, binary or integers are ``"list"`` columns: multi-valued categorical
    fields (see :mod:`tfmec.data.lists`), whose cells are Python lists of ``str`` in the file's order
    (oldest first), integers rendered as their digits as a categorical integer column renders them
    (``[12, 7]`` -> ``["12", "7"]``), a null cell an empty list and null items left out. A list of
    floats, decimals or booleans (or a nested list) is refused with a :class:`DataError` naming the
    column (only categorical values can be listed; ``drop`` it). ``numeric`` (a list) overrides the
    detection: exactly those columns are numeric (string cells are parsed as floats) and the others
    categorical (numbers become their string) or, for list columns, lists; a list column cannot be
    numeric. ``categorical`` forces listed number columns to categorical (a list column stays a list).
    Nulls become NaN / ``""``. A non-finite numeric value (NaN stored as a value, inf), a null or
    non-0/1 label, an unparsable cell, a string or binary cell (or list item) longer than
    :data:`~tfmec.data.readers.base.MAX_CELL_CHARS` characters, or an integer beyond +-2**53 in a numeric
    column (float64 cannot hold every such integer exactly: read an id column as categorical, which keeps
    every digit) is a bad row; its "line" is the 1-based row number in the file, and the message names
    the column. Integer labels are compared exactly. A batch is converted in slices of at most
    :data:`~tfmec.data.readers.base.MAX_CHUNK_CHARS` bytes of text (fewer rows per batch where the row
    groups' sizes say the rows are long), and dictionary-encoded columns share one Python string per
    distinct value. What the Parquet library itself holds while decoding is bounded by the file's pages
    (a page holds at least one cell, so a file of huge cells costs a few times the largest page; the
    column chunks are streamed, not read whole). An error of the Parquet library while reading is a
    :class:`DataError` naming the file and the first row it could not read. Only regular files are read.

    With ``engine="tfio"`` the values are read by ``tensorflow_io.IODataset.from_parquet`` and then
    converted by the same code, so the chunks are identical to the pyarrow engine's. The column kinds
    still come from the file's arrow schema (metadata only). tensorflow-io must be usable (0.37.1 on
    TensorFlow 2.16.x: checked once when the reader is built, :class:`TfioUnavailableError` otherwise)
    and each file is refused with a :class:`DataError` when a used column has nulls (or lacks the
    null-count statistics that rule them out) or is a decimal, or when any column is float16. The tfio
    engine reads single-valued columns only: a list column among the used ones is a ``ValueError``
    when the reader is built (read such a file with ``engine="pyarrow"``, or ``drop`` the column).

    Args:
        paths: one path or a list of paths, read in order; all must have the used columns.
        label: the label column (0/1, -1 counts as 0; or any number with ``label_threshold``).
        numeric: ``None`` to detect from the types, or the list of numeric columns.
        categorical: columns to treat as categorical even when their type is numeric.
        drop: columns to leave out (also the way to skip columns of unsupported types).
        label_threshold: if given, the label is ``value >= label_threshold``.
        on_error: ``"raise"`` or ``"skip"``.
        engine: ``"pyarrow"`` (default) or ``"tfio"``; see above.

    Raises:
        ValueError: an unknown ``engine`` (:class:`TfioUnavailableError`, a ValueError, when ``"tfio"``
            cannot run here); a list column with ``engine="tfio"`` or listed in ``numeric``.
        DataError: an unreadable file, missing columns, unsupported column types (lists of floats).
    """

    def __init__(
        self,
        paths,
        label: str,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        drop: Sequence[str] = (),
        label_threshold: float | None = None,
        on_error: str = "raise",
        engine: str = "pyarrow",
    ):
        super().__init__(paths, on_error)
        import pyarrow as pa
        import pyarrow.parquet as pq

        if engine not in ENGINES:
            raise ValueError(f"unknown Parquet engine {engine!r}; choose one of {ENGINES}")
        self.engine = engine
        if engine == "tfio":
            from tfmec.data.readers.tfio_engine import require_tfio

            require_tfio()  # before anything is read: a clear message where tensorflow-io cannot run

        self.label = label
        self.label_threshold = None if label_threshold is None else float(label_threshold)
        drop = set(as_name_list(drop, "drop"))
        cat = set(as_name_list(categorical, "categorical"))
        num = None if numeric is None else set(as_name_list(numeric, "numeric"))
        path = self.paths[0]
        check_regular(path)
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a non-parquet file
            raise DataError(f"cannot read as Parquet: {exc}", path) from None
        names = list(schema.names)
        missing = [c for c in [label, *(num or ()), *cat, *drop] if c not in names]
        if missing:
            raise DataError(f"column(s) {missing} not found; the columns are {names}", path)
        if label in drop or label in cat or (num and label in num):
            raise ValueError(f"the label column {label!r} cannot also be a feature or dropped")
        if _kind_of(pa, schema.field(label).type) not in ("numeric", "categorical"):
            raise DataError(f"label column {label!r} has unsupported type {schema.field(label).type}", path)
        self.columns = []
        for name in names:
            if name == label or name in drop:
                continue
            typ = schema.field(name).type
            auto = _kind_of(pa, typ)
            if auto is None:
                raise DataError(
                    _unsupported_list(pa, name, typ)
                    or f"column {name!r} has unsupported type {typ}; pass drop=[{name!r}] to leave it out", path
                )
            if auto == "list":
                if num is not None and name in num:
                    raise ValueError(f"column {name!r} is a list column ({typ}): it cannot be numeric (a list "
                                     f"column is a multi-valued categorical field)")
                kind = "list"
            elif num is not None:
                kind = "numeric" if name in num else "categorical"
            else:
                kind = "categorical" if name in cat else auto
            self.columns.append((name, kind))
        if not self.columns:
            raise DataError(f"no feature columns left; the columns are {names}", path)
        if engine == "tfio":
            lists = [name for name, kind in self.columns if kind == "list"]
            if lists:
                raise ValueError(f"list column(s) {lists} need engine='pyarrow': the tfio engine reads "
                                 f"single-valued columns only (or pass drop={lists} to leave them out)")
            from tfmec.data.readers.tfio_engine import check_tfio_file

            check_tfio_file(pf, [label] + self.column_names, path)

    # --- conversion of one batch column --------------------------------------------------------
    # Problems are collected in ``errs`` ({row in batch: DataError}, first problem per row) and
    # raised / skipped in row order once the whole batch is converted.
    @staticmethod
    def _note(errs, i, message, path, line):
        if i not in errs:
            errs[i] = DataError(message, path, line)

    def _numeric(self, pa, pc, arr, name, path, first_row, errs):
        """float64 values of a column (null -> NaN); notes non-finite / unparsable cells and integers
        beyond +-2**53."""
        if _kind_of(pa, arr.type) == "numeric":
            if pa.types.is_dictionary(arr.type):
                arr = pc.cast(arr, arr.type.value_type)  # numbers: fixed width, bounded by the row count
            null = arr.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_integer(arr.type):
                ints = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(_beyond_exact(ints)):
                    i = int(i)
                    self._note(errs, i, int_not_exact(name, int(ints[i])), path, first_row + i)
                vals = ints.astype(np.float64)
                vals[null] = np.nan
                return vals
            vals = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            vals = vals.astype(np.float64, copy=False)
            for i in np.flatnonzero(~np.isfinite(vals) & ~null):
                i = int(i)
                self._note(errs, i, f"column {name!r}: {vals[i]!r} is not a finite number", path, first_row + i)
            return vals
        vals = np.full(len(arr), np.nan)
        for i, v in enumerate(self._strings(pa, pc, arr, name, path, first_row, errs)):
            if i in errs:
                continue
            try:
                vals[i] = parse_float(v, name, path, first_row + i)
            except DataError as err:
                errs.setdefault(i, err)
        return vals

    def _strings(self, pa, pc, arr, name, path, first_row, errs):
        """object array of str (null -> ""); notes undecodable binary cells and cells longer than
        MAX_CELL_CHARS characters. A dictionary-encoded column is decoded through its dictionary: the
        rows share one Python string per distinct value (never materialised row by row)."""
        if pa.types.is_dictionary(arr.type):
            values, problems = _plain_strings(pa, pc, arr.dictionary, name)
            null = arr.is_null().to_numpy(zero_copy_only=False)
            indices = pc.fill_null(arr.indices, 0).to_numpy(zero_copy_only=False)
            if len(values) == 0:
                return np.full(len(arr), "", dtype=object)
            out = values[indices]
            out[null] = ""
            if problems:
                bad = np.isin(indices, np.fromiter(problems, dtype=np.int64)) & ~null
                for i in np.flatnonzero(bad):
                    i = int(i)
                    self._note(errs, i, problems[int(indices[i])], path, first_row + i)
            return out
        out, problems = _plain_strings(pa, pc, arr, name)
        for i, message in problems.items():
            self._note(errs, i, message, path, first_row + i)
        return out

    def _lists(self, pa, pc, arr, name, path, first_row, errs):
        """object array of Python lists of str (a null cell -> [], null items left out, integers as their
        digits); notes undecodable items and items longer than MAX_CELL_CHARS characters."""
        n = len(arr)
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = arr.flatten()  # the slice's values, without those behind null cells
        if len(flat) != int(lengths.sum()):  # pragma: no cover - a pyarrow whose flatten keeps them
            pieces = [cell.values for cell in arr if cell.is_valid]
            flat = pa.concat_arrays(pieces) if pieces else pa.array([], type=_list_value_type(pa, arr.type))
        if pa.types.is_dictionary(flat.type):
            flat = pc.cast(flat, flat.type.value_type)  # the items of one batch, decoded once
        out = np.empty(n, dtype=object)
        if len(flat) == 0:
            for i in range(n):
                out[i] = []
            return out
        values, problems = _plain_strings(pa, pc, flat, name)
        row_of = np.repeat(np.arange(n), lengths)
        for j, message in problems.items():
            i = int(row_of[j])
            self._note(errs, i, message, path, first_row + i)
        null = flat.is_null().to_numpy(zero_copy_only=False)
        if null.any():
            values, lengths = values[~null], np.bincount(row_of[~null], minlength=n)
        ends = np.cumsum(lengths).tolist()
        start = 0
        for i, end in enumerate(ends):
            out[i] = values[start:end].tolist()
            start = end
        return out

    def _labels(self, pa, pc, arr, path, first_row, errs):
        """float32 0/1 labels; notes null, non-0/1 or unparsable labels (integers compared exactly)."""
        thr = self.label_threshold
        if pa.types.is_dictionary(arr.type) and _kind_of(pa, arr.type) == "numeric":
            arr = pc.cast(arr, arr.type.value_type)
        if _kind_of(pa, arr.type) == "numeric":
            null = arr.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_integer(arr.type):
                v = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
                if thr is None:
                    ok = ~null & ((v == 0) | (v == 1) | (v == -1))
                    y = (v == 1).astype(np.float32)
                else:
                    ok = ~null
                    y = (v >= thr).astype(np.float32)
                    for i in np.flatnonzero(_beyond_exact(v)):  # where float64 rounds: compare exactly
                        y[i] = float(int(v[i]) >= thr)
                shown_value = lambda i: str(int(v[i]))  # noqa: E731
            else:
                v = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                v = v.astype(np.float64, copy=False)
                if thr is None:
                    ok = ~null & ((v == 0) | (v == 1) | (v == -1))
                    y = (v == 1).astype(np.float32)
                else:
                    ok = ~null & np.isfinite(v)
                    y = (v >= thr).astype(np.float32)
                shown_value = lambda i: repr(float(v[i]))  # noqa: E731
            what = "not finite" if thr is not None else "not 0/1 (or -1 for negative)"
            for i in np.flatnonzero(~ok):
                i = int(i)
                shown = "empty" if null[i] else shown_value(i)
                self._note(errs, i, f"label {shown} is {what}", path, first_row + i)
            return y
        y = np.zeros(len(arr), dtype=np.float32)
        for i, s in enumerate(self._strings(pa, pc, arr, self.label, path, first_row, errs)):
            if i in errs:
                continue
            try:
                y[i] = fast_label(s, path, first_row + i, thr)
            except DataError as err:
                errs.setdefault(i, err)
        return y

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = [self.label] + self.column_names
        for path in self.paths:
            check_regular(path)
            try:
                # column chunks streamed page by page (never read or pre-buffered whole)
                pf = (pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False) if self.engine == "pyarrow"
                      else pq.ParquetFile(path))
            except Exception as exc:
                raise DataError(f"cannot read as Parquet: {exc}", path) from None
            present = set(pf.schema_arrow.names)
            missing = [c for c in wanted if c not in present]
            if missing:
                raise DataError(f"column(s) {missing} not found; the columns are {pf.schema_arrow.names}", path)
            first_row = 1
            batches = self._batches(pf, path, wanted, chunk_size)
            while True:
                try:
                    batch = next(batches, None)
                except DataError:
                    raise
                except (pa.ArrowException, OSError) as exc:
                    raise DataError(f"cannot read as Parquet from row {first_row} on: {exc}", path,
                                    first_row) from None
                if batch is None:
                    break
                for piece in _slices(pa, batch, wanted):
                    yield self._convert(pa, pc, piece, path, first_row)
                    first_row += len(piece[self.label])

    def _convert(self, pa, pc, batch: dict, path: str, first_row: int) -> Chunk:
        """One batch ``{column: pyarrow.Array}`` whose first row is ``first_row`` as a Chunk (bad rows
        raised or left out, as ``on_error`` says)."""
        n = len(batch[self.label])
        errs: dict = {}
        column = self.label
        try:
            labels = self._labels(pa, pc, batch[self.label], path, first_row, errs)
            feats = {}
            for column, kind in self.columns:
                arr = batch[column]
                if kind == "numeric":
                    feats[column] = self._numeric(pa, pc, arr, column, path, first_row, errs)
                elif kind == "list":
                    feats[column] = self._lists(pa, pc, arr, column, path, first_row, errs)
                else:
                    feats[column] = self._strings(pa, pc, arr, column, path, first_row, errs)
        except pa.ArrowException as exc:  # pragma: no cover - the conversions above are total
            raise DataError(f"column {column!r}: cannot convert rows {first_row}..{first_row + n - 1}: {exc}",
                            path, first_row) from None
        if errs:
            for i in sorted(errs):
                self._reject(errs[i])
            keep = np.ones(n, dtype=bool)
            keep[list(errs)] = False
            labels = labels[keep]
            feats = {k: v[keep] for k, v in feats.items()}
        return Chunk(feats, np.ascontiguousarray(labels, dtype=np.float32), np.zeros(0, np.int64))

    def _batches(self, pf, path: str, wanted: list, chunk_size: int) -> Iterator[dict]:
        """``{column: pyarrow.Array}`` batches of ``chunk_size`` rows, read by the chosen engine."""
        if self.engine == "tfio":
            from tfmec.data.readers.tfio_engine import check_tfio_file, tfio_batches

            check_tfio_file(pf, wanted, path)
            yield from tfio_batches(pf, path, wanted, chunk_size)
            return
        lists = {name for name, kind in self.columns if kind == "list"}
        for batch in pf.iter_batches(batch_size=_batch_rows(pf, wanted, chunk_size, lists), columns=wanted):
            yield {name: batch.column(name) for name in wanted}


_READ_BUFFER = 2**20


def _batch_rows(pf, wanted: list, chunk_size: int, lists=frozenset()) -> int:
    """Rows per batch: ``chunk_size``, fewer where the file's rows are long (from the row groups'
    uncompressed sizes), so that a batch holds about MAX_CHUNK_CHARS bytes at most. A list column
    (named in ``lists``) counts its leaf (``name.list.element``)."""
    meta = pf.metadata
    leaves = {pf.schema.column(j).path: j for j in range(meta.num_columns)}
    cols = [leaves[name] for name in wanted if name in leaves]
    cols += [j for leaf, j in leaves.items() for name in lists if leaf.startswith(name + ".")]
    per_row = 0.0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows:
            size = sum(group.column(j).total_uncompressed_size for j in cols)
            per_row = max(per_row, size / group.num_rows)
    return max(1, min(chunk_size, int(MAX_CHUNK_CHARS // max(per_row, 1.0))))


def _beyond_exact(ints: np.ndarray) -> np.ndarray:
    """Mask of the integers beyond +-2**53 (int64 or uint64 values)."""
    if ints.dtype.kind == "u":
        return ints > MAX_EXACT_INT
    return (ints > MAX_EXACT_INT) | (ints < -MAX_EXACT_INT)


def _is_text(pa, typ) -> bool:
    t = pa.types
    return t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ) or bool(
        getattr(t, "is_string_view", None) and t.is_string_view(typ))


def _offsets(pa, arr) -> np.ndarray | None:
    """The value offsets of a (large) string / binary array, as a NumPy view, or None for other types."""
    t = pa.types
    if t.is_string(arr.type) or t.is_binary(arr.type):
        dtype = np.int32
    elif t.is_large_string(arr.type) or t.is_large_binary(arr.type):
        dtype = np.int64
    else:
        return None
    buf = arr.buffers()[1]
    if buf is None:
        return None
    return np.frombuffer(buf, dtype=dtype)[arr.offset:arr.offset + len(arr) + 1]


def _text_bytes(pa, arr) -> int:
    """Bytes of text a column holds (0 for numbers; a dictionary column's distinct values; a list
    column's items)."""
    if _list_value_type(pa, arr.type) is not None:
        return _text_bytes(pa, arr.flatten())
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary
    if not _is_text(pa, arr.type):
        return 0
    offsets = _offsets(pa, arr)
    if offsets is None or len(offsets) == 0:
        return arr.nbytes
    return int(offsets[-1] - offsets[0])


def _slices(pa, batch: dict, wanted: list) -> Iterator[dict]:
    """``batch`` itself, or row slices of it holding at most about MAX_CHUNK_CHARS bytes of text each
    (the Python strings made from a slice are no bigger than its text)."""
    n = len(batch[wanted[0]])
    size = sum(_text_bytes(pa, arr) for arr in batch.values())
    if size <= MAX_CHUNK_CHARS or n <= 1:
        yield batch
        return
    step = max(1, math.ceil(n / math.ceil(size / MAX_CHUNK_CHARS)))
    for start in range(0, n, step):
        yield {name: arr.slice(start, step) for name, arr in batch.items()}


def _plain_strings(pa, pc, arr, name: str) -> tuple[np.ndarray, dict]:
    """``(object array of str, {index: problem})`` of a non-dictionary column: null -> ``""``; a cell
    that is not valid UTF-8 or holds more than MAX_CELL_CHARS characters becomes ``""`` and a problem
    (it is never turned into a Python string)."""
    typ = arr.type
    problems: dict = {}
    binary = pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
    if not binary and not _is_text(pa, typ):
        arr = pc.cast(arr, pa.string())  # numbers read as categorical: their (short) text, every digit
        typ = arr.type
    offsets = _offsets(pa, arr) if len(arr) else None
    longest = int(np.diff(offsets).max()) if offsets is not None else None  # bytes: characters or more
    if len(arr) and _is_text(pa, typ) and (longest is None or longest > MAX_CELL_CHARS):
        lengths = pc.binary_length(arr) if binary else pc.utf8_length(arr)
        over = pc.fill_null(pc.greater(lengths, MAX_CELL_CHARS), False).to_numpy(zero_copy_only=False)
        if over.any():
            lengths = lengths.to_numpy(zero_copy_only=False)
            keep = {}
            for i in np.flatnonzero(over):
                i = int(i)
                n = int(lengths[i])
                if binary and n <= 4 * MAX_CELL_CHARS:  # bytes, not characters: decode to count (bounded)
                    try:
                        text = arr[i].as_py().decode("utf-8")
                    except UnicodeDecodeError:
                        problems[i] = f"column {name!r}: value is not valid UTF-8"
                        continue
                    if len(text) <= MAX_CELL_CHARS:
                        keep[i] = text
                        continue
                    n = len(text)
                problems[i] = cell_too_long(name, n) if not binary or n <= 4 * MAX_CELL_CHARS else (
                    f"column {name!r}: the value holds {n:,} bytes, more than the {MAX_CELL_CHARS:,} characters "
                    f"a cell may hold (tfmec.data.readers.base.MAX_CELL_CHARS)")
            arr = pc.if_else(pa.array(over), pa.scalar(None, typ), arr)  # never made into Python strings
            out, more = _plain_strings(pa, pc, arr, name)
            for i, text in keep.items():
                out[i] = text
            problems.update(more)
            return out, problems
    if binary:
        out = np.empty(len(arr), dtype=object)
        for i, b in enumerate(arr.to_pylist()):
            try:
                out[i] = "" if b is None else b.decode("utf-8")
            except UnicodeDecodeError:
                out[i] = ""
                problems[i] = f"column {name!r}: value is not valid UTF-8"
        return out, problems
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        arr = pc.cast(arr, pa.string())
    out = pc.fill_null(arr, "").to_numpy(zero_copy_only=False)
    return np.asarray(out, dtype=object), problems
