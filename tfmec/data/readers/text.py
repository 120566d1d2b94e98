"""Shared plumbing for the file readers: path handling, line and record loops, row buffering, and the
one record loop (:meth:`FileReader._stream`) that every line/record based reader runs.

Text files are read in binary mode and decoded one line at a time as UTF-8, so a line with
undecodable bytes becomes one malformed row (a :class:`DataError` naming the file and line) instead of
an error for the whole file. Files whose name ends in ``.gz`` are decompressed transparently.
"""
from __future__ import annotations

import csv
import errno
import gzip
import os
import zlib
from typing import Callable, Iterable, Iterator, Sequence

from tfmec.data.errors import DataError
from tfmec.data.readers.base import Chunk, Reader, make_chunk, parse_float, parse_label

NAN = float("nan")


def resolve_paths(paths) -> list[str]:
    """Normalises one path or a list of paths to a list of ``str`` and checks that each exists.

    Raises:
        ValueError: when the list is empty.
        FileNotFoundError: for a path that does not exist.
        IsADirectoryError: for a path that is a directory.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    out = [os.fsdecode(os.fspath(p)) for p in paths]
    if not out:
        raise ValueError("no input files given")
    for p in out:
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, "no such data file", p)
        if os.path.isdir(p):
            raise IsADirectoryError(errno.EISDIR, "expected a data file, got a directory", p)
    return out


def describe_paths(paths: Sequence[str]) -> str:
    """A short human-readable name for a list of input files (used in error messages)."""
    if len(paths) == 1:
        return paths[0]
    if len(paths) <= 4:
        return ", ".join(paths)
    return f"{paths[0]}, {paths[1]}, ... {paths[-1]} ({len(paths)} files)"


def open_binary(path: str):
    """Opens ``path`` for binary reading, through gzip when its name ends in ``.gz``."""
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


DECOMPRESSION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def decompression_error(path: str, line: int, exc: Exception) -> DataError:
    """The :class:`DataError` for a truncated or corrupt ``.gz`` file (instead of gzip's ``EOFError`` /
    ``zlib.error``), at the line where decompression failed."""
    return DataError(f"truncated or corrupt compressed file ({exc})", path, line)


def iter_text_lines(path: str) -> Iterator[tuple[int, str | None]]:
    """Yields ``(line_number, text)`` for every physical line of a text file (1-based numbers).

    ``text`` has its line ending removed (and a UTF-8 byte-order mark on line 1); it is ``None`` when
    the line is not valid UTF-8. Blank lines are yielded too (as ``""``); callers usually skip them.
    """
    lineno = 0
    with open_binary(path) as fh:
        try:
            for raw in fh:
                lineno += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield lineno, None
                    continue
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text.rstrip("\r\n")
        except DECOMPRESSION_ERRORS as exc:
            raise decompression_error(path, lineno + 1, exc) from None


def _csv_records(path: str, delimiter: str) -> Iterator[tuple[int, list | None, str | None]]:
    state = {"bad": False, "lines": 0}

    def lines():
        with open_binary(path) as fh:
            try:
                for raw in fh:
                    state["lines"] += 1
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        state["bad"] = True
                        text = raw.decode("utf-8", "replace")
                    if state["lines"] == 1 and text.startswith("\ufeff"):
                        text = text[1:]
                    yield text
            except DECOMPRESSION_ERRORS as exc:
                raise decompression_error(path, state["lines"] + 1, exc) from None

    reader = csv.reader(lines(), delimiter=delimiter)
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = state["lines"]
            state["bad"] = False
            yield start, None, f"malformed delimited record ({exc})"
            continue
        end = state["lines"]
        if state["bad"]:
            state["bad"] = False
            yield start, None, "line is not valid UTF-8"
            continue
        if not fields:
            continue  # blank line
        yield start, fields, None


def iter_split_records(
    path: str, sep: str | None = None, keep_spaces: bool = False
) -> Iterator[tuple[int, list | None, str | None]]:
    """Yields ``(line_number, text.split(sep), None)`` for each line of a text file, or
    ``(line_number, None, "line is not valid UTF-8")`` for an undecodable line.

    ``sep=None`` splits on runs of whitespace. Blank lines are skipped: empty ones always, and
    whitespace-only ones too unless ``keep_spaces`` (then they come out as a one-field record).
    """
    for lineno, text in iter_text_lines(path):
        if text is None:
            yield lineno, None, "line is not valid UTF-8"
        elif text if keep_spaces else text.strip():
            yield lineno, text.split(sep), None


def iter_records(path: str, sep: str, quoting: bool = True) -> Iterator[tuple[int, list | None, str | None]]:
    """Yields ``(line_number, fields, problem)`` for each non-blank record of a delimited file.

    With a one-character ``sep`` and ``quoting`` the :mod:`csv` module parses the records (quotes,
    quoted newlines; ``line_number`` is the record's first line); otherwise each line is split on
    ``sep`` (needed for multi-character separators such as MovieLens' ``::``). When a record cannot be
    read, ``fields`` is ``None`` and ``problem`` says why (invalid UTF-8, bad quoting).
    """
    if len(sep) == 1 and quoting:
        return _csv_records(path, sep)
    return iter_split_records(path, sep)


def first_record(path: str, sep: str, quoting: bool = True) -> tuple[int, list | None, str | None] | None:
    """The first non-blank record of a delimited file as :func:`iter_records` yields it, or ``None``."""
    gen = iter_records(path, sep, quoting)
    try:
        return next(gen, None)
    finally:
        gen.close()


def first_line(path: str) -> tuple[int, str | None] | None:
    """The first non-blank line of a text file as ``(line_number, text)`` (``text`` is ``None`` when it
    is not valid UTF-8), or ``None`` for an empty file."""
    gen = iter_text_lines(path)
    try:
        for lineno, text in gen:
            if text is None or text.strip():
                return lineno, text
        return None
    finally:
        gen.close()


def fast_label(text: str, path: str, line: int, threshold: float | None = None) -> float:
    """Fast :func:`base.parse_label`: same result and errors, with a shortcut for the common cases
    (``"1"``, ``"0"``, ``"-1"``; with ``threshold``, any finite number)."""
    if threshold is None:
        if text == "1":
            return 1.0
        if text == "0" or text == "-1":
            return 0.0
        return parse_label(text, path, line)
    try:
        v = float(text)
    except ValueError:
        return parse_label(text, path, line, threshold)
    if v - v == 0.0:  # false for NaN and +-inf
        return 1.0 if v >= threshold else 0.0
    return parse_label(text, path, line, threshold)


def to_float(text: str, column: str, path: str, line: int) -> float:
    """Fast :func:`base.parse_float`: empty -> NaN, a finite number -> float, else DataError."""
    if not text:
        return NAN
    try:
        v = float(text)
        if v - v == 0.0:  # false for NaN and +-inf
            return v
    except ValueError:
        pass
    return parse_float(text, column, path, line)


def check_unique(names: Sequence[str], path: str, line: int | None = 1):
    """Raises DataError when a header repeats a column name."""
    seen, dupes = set(), []
    for n in names:
        if n in seen and n not in dupes:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise DataError(f"duplicate column names in header: {dupes}", path, line)


def as_name_list(names, what: str) -> list[str]:
    """Accepts ``None``, one column name or an iterable of names; returns a list."""
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what}: column names must be strings, got {n!r}")
    return out


class RowBuffer:
    """Collects converted rows (lists in column order) and turns them into a Chunk."""

    def __init__(self, columns: Sequence[tuple[str, str]]):
        self.columns = list(columns)
        self.names = [c for c, _ in self.columns]
        self.rows: list = []
        self.labels: list = []

    def __len__(self):
        return len(self.labels)

    def add(self, row: list, label: float):
        """Adds one row (values in column order) and its label."""
        self.rows.append(row)
        self.labels.append(label)

    def flush(self):
        """Returns the buffered rows as a :class:`Chunk` and empties the buffer."""
        rows = self.rows
        values = {name: [r[j] for r in rows] for j, name in enumerate(self.names)}
        chunk = make_chunk(self.columns, values, self.labels)
        self.rows, self.labels = [], []
        return chunk


class FileReader(Reader):
    """A :class:`Reader` over one or more files read in order.

    Sets ``self.paths`` (a list of ``str``, all checked to exist) and ``self.description``.
    """

    def __init__(self, paths, on_error: str = "raise"):
        super().__init__(on_error)
        self.paths = resolve_paths(paths)
        self.description = describe_paths(self.paths)

    def _reject(self, err: DataError):
        """Raises ``err`` or records it as a skipped row, as ``on_error`` says."""
        if self.on_error == "raise":
            raise err
        self.stats.record_skip(err)

    def _stream(
        self,
        chunk_size: int,
        records_for_path: Callable[[str], Iterable[tuple[int, object, str | None]]],
        parse_record: Callable[[object, str, int], tuple[list, float]],
        ncols: int | None = None,
        count_message: Callable[[int], str] | None = None,
    ) -> Iterator[Chunk]:
        """The record loop shared by the readers: yields chunks of at most ``chunk_size`` rows.

        For each path in ``self.paths``, ``records_for_path(path)`` yields ``(line, fields, problem)``
        (``fields`` is ``None`` for an unreadable record, ``problem`` says why). A record with
        ``len(fields) != ncols`` (when ``ncols`` is given) is a bad row with the message
        ``count_message(len(fields))`` (default ``"expected {ncols} columns, got {n}"``). Otherwise
        ``parse_record(fields, path, line)`` returns ``(row, label)`` with the row's values in column
        order, or raises :class:`DataError` for a bad row. Bad rows raise or are skipped as
        ``on_error`` says.
        """
        if ncols is not None and count_message is None:
            count_message = lambda got: f"expected {ncols} columns, got {got}"  # noqa: E731
        buf = RowBuffer(self.columns)
        rows, labels = buf.rows, buf.labels
        bad_row, reject = self._bad_row, self._reject
        for path in self.paths:
            for lineno, fields, problem in records_for_path(path):
                if fields is None:
                    bad_row(problem, path, lineno)
                    continue
                if ncols is not None and len(fields) != ncols:
                    bad_row(count_message(len(fields)), path, lineno)
                    continue
                try:
                    row, y = parse_record(fields, path, lineno)
                except DataError as err:
                    reject(err)
                    continue
                rows.append(row)
                labels.append(y)
                if len(labels) >= chunk_size:
                    yield buf.flush()
                    rows, labels = buf.rows, buf.labels
        if labels:
            yield buf.flush()

    def __repr__(self):
        return f"{type(self).__name__}({self.description!r}, {len(self.columns)} columns, label={self.label!r})"

