"""Reader for Parquet files, batch by batch, through pyarrow (default) or tensorflow-io.

The ``engine`` argument picks the library that reads the file: ``"pyarrow"`` (default, every
supported column type, nulls) or ``"tfio"`` (``tensorflow_io.IODataset.from_parquet``; needs
tensorflow-io 0.37.1 on TensorFlow 2.16.x, see :mod:`tfmec.data.readers.tfio_engine`). Both engines go
through the same conversion, so they yield identical chunks; what tensorflow-io cannot read that way
(nulls, decimals, float16) is refused with a :class:`~tfmec.data.errors.DataError`.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from tfmec.data.errors import DataError
from tfmec.data.readers.base import Chunk, parse_float
from tfmec.data.readers.text import FileReader, as_name_list, fast_label

#: The Parquet engines: ``pyarrow`` (default) and ``tfio`` (tensorflow-io).
ENGINES = ("pyarrow", "tfio")


def _kind_of(pa, typ) -> str | None:
    """``"numeric"`` / ``"categorical"`` for a supported arrow type, else None."""
    t = pa.types
    if t.is_dictionary(typ):
        typ = typ.value_type
    if t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ) or t.is_decimal(typ):
        return "numeric"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ):
        return "categorical"
    if getattr(t, "is_string_view", None) and t.is_string_view(typ):
        return "categorical"
    return None


class ParquetReader(FileReader):
    """Parquet files read with ``pyarrow.parquet.ParquetFile.iter_batches``.

    Feature kinds come from the arrow types: integer, floating, decimal and boolean columns are
    numeric, string/binary columns categorical. ``numeric`` (a list) overrides the detection: exactly
    those columns are numeric (string cells are parsed as floats) and the others categorical
    (numbers become their string). ``categorical`` forces listed number columns to categorical.
    Nulls become NaN / ``""``. A non-finite numeric value (NaN stored as a value, inf), a null or
    non-0/1 label or an unparsable cell is a bad row; its "line" is the 1-based row number in the file.

    With ``engine="tfio"`` the values are read by ``tensorflow_io.IODataset.from_parquet`` and then
    converted by the same code, so the chunks are identical to the pyarrow engine's. The column kinds
    still come from the file's arrow schema (metadata only). tensorflow-io must be usable (0.37.1 on
    TensorFlow 2.16.x: checked once when the reader is built, :class:`TfioUnavailableError` otherwise)
    and each file is refused with a :class:`DataError` when a used column has nulls (or lacks the
    null-count statistics that rule them out) or is a decimal, or when any column is float16.

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
            cannot run here).
        DataError: an unreadable file, missing columns, unsupported column types.
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
        if _kind_of(pa, schema.field(label).type) is None:
            raise DataError(f"label column {label!r} has unsupported type {schema.field(label).type}", path)
        self.columns = []
        for name in names:
            if name == label or name in drop:
                continue
            typ = schema.field(name).type
            auto = _kind_of(pa, typ)
            if auto is None:
                raise DataError(
                    f"column {name!r} has unsupported type {typ}; pass drop=[{name!r}] to leave it out", path
                )
            if num is not None:
                kind = "numeric" if name in num else "categorical"
            else:
                kind = "categorical" if name in cat else auto
            self.columns.append((name, kind))
        if not self.columns:
            raise DataError(f"no feature columns left; the columns are {names}", path)
        if engine == "tfio":
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
        """float64 values of a column (null -> NaN); notes non-finite / unparsable cells."""
        if _kind_of(pa, arr.type) == "numeric":
            null = arr.is_null().to_numpy(zero_copy_only=False)
            vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            for i in np.flatnonzero(~np.isfinite(vals) & ~null):
                i = int(i)
                self._note(errs, i, f"column {name!r}: {vals[i]!r} is not a finite number", path, first_row + i)
            return vals
        vals = np.full(len(arr), np.nan)
        for i, v in enumerate(self._strings(pa, pc, arr, name, path, first_row, errs)):
            try:
                vals[i] = parse_float(v, name, path, first_row + i)
            except DataError as err:
                errs.setdefault(i, err)
        return vals

    def _strings(self, pa, pc, arr, name, path, first_row, errs):
        """object array of str (null -> ""); notes undecodable binary cells."""
        typ = arr.type
        if pa.types.is_dictionary(typ):
            arr = pc.cast(arr, typ.value_type)
            typ = arr.type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            out = np.empty(len(arr), dtype=object)
            for i, b in enumerate(arr.to_pylist()):
                try:
                    out[i] = "" if b is None else b.decode("utf-8")
                except UnicodeDecodeError:
                    out[i] = ""
                    self._note(errs, i, f"column {name!r}: value is not valid UTF-8", path, first_row + i)
            return out
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            arr = pc.cast(arr, pa.string())
        out = pc.fill_null(arr, "").to_numpy(zero_copy_only=False)
        return np.asarray(out, dtype=object)

    def _labels(self, pa, pc, arr, path, first_row, errs):
        """float32 0/1 labels; notes null, non-0/1 or unparsable labels."""
        thr = self.label_threshold
        if _kind_of(pa, arr.type) == "numeric":
            null = arr.is_null().to_numpy(zero_copy_only=False)
            v = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            if thr is None:
                ok = ~null & ((v == 0) | (v == 1) | (v == -1))
                y = (v == 1).astype(np.float32)
            else:
                ok = ~null & np.isfinite(v)
                y = (v >= thr).astype(np.float32)
            what = "not finite" if thr is not None else "not 0/1 (or -1 for negative)"
            for i in np.flatnonzero(~ok):
                i = int(i)
                shown = "empty" if null[i] else repr(float(v[i]))
                self._note(errs, i, f"label {shown} is {what}", path, first_row + i)
            return y
        y = np.zeros(len(arr), dtype=np.float32)
        for i, s in enumerate(self._strings(pa, pc, arr, self.label, path, first_row, errs)):
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
            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:
                raise DataError(f"cannot read as Parquet: {exc}", path) from None
            present = set(pf.schema_arrow.names)
            missing = [c for c in wanted if c not in present]
            if missing:
                raise DataError(f"column(s) {missing} not found; the columns are {pf.schema_arrow.names}", path)
            first_row = 1
            for batch in self._batches(pf, path, wanted, chunk_size):
                n = len(batch[self.label])
                errs: dict = {}
                labels = self._labels(pa, pc, batch[self.label], path, first_row, errs)
                feats = {}
                for name, kind in self.columns:
                    arr = batch[name]
                    if kind == "numeric":
                        feats[name] = self._numeric(pa, pc, arr, name, path, first_row, errs)
                    else:
                        feats[name] = self._strings(pa, pc, arr, name, path, first_row, errs)
                first_row += n
                if errs:
                    for i in sorted(errs):
                        self._reject(errs[i])
                    keep = np.ones(n, dtype=bool)
                    keep[list(errs)] = False
                    labels = labels[keep]
                    feats = {k: v[keep] for k, v in feats.items()}
                yield Chunk(feats, np.ascontiguousarray(labels, dtype=np.float32), np.zeros(0, np.int64))

    def _batches(self, pf, path: str, wanted: list, chunk_size: int) -> Iterator[dict]:
        """``{column: pyarrow.Array}`` batches of ``chunk_size`` rows, read by the chosen engine."""
        if self.engine == "tfio":
            from tfmec.data.readers.tfio_engine import check_tfio_file, tfio_batches

            check_tfio_file(pf, wanted, path)
            yield from tfio_batches(pf, path, wanted, chunk_size)
            return
        for batch in pf.iter_batches(batch_size=chunk_size, columns=wanted):
            yield {name: batch.column(name) for name in wanted}
