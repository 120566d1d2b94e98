"""Shared plumbing for the file readers: path handling, line and record loops, row buffering, and the
one record loop (:meth:`FileReader._stream`) that every line/record based reader runs.

Text files are read in binary mode and decoded one line at a time as UTF-8, so a line with
undecodable bytes becomes one malformed row (a :class:`DataError` naming the file and line) instead of
an error for the whole file. Files whose name ends in ``.gz`` are decompressed transparently.

Bounds (see :mod:`tfmec.data.readers.base`): only regular files are opened (:func:`open_regular`); a
line is read with a length limit (:data:`~tfmec.data.readers.base.MAX_RECORD_BYTES`), so a file
without line breaks is never read whole; a cell longer than
:data:`~tfmec.data.readers.base.MAX_CELL_CHARS` characters makes a bad row; a chunk ends early once it
holds :data:`~tfmec.data.readers.base.MAX_CHUNK_CHARS` characters.
"""
from __future__ import annotations

import csv
import errno
import gzip
import os
import stat
import zlib
from typing import Callable, Iterable, Iterator, Sequence

from tfmec.data.errors import DataError
from tfmec.data.readers.base import (
    MAX_CELL_CHARS,
    MAX_CHUNK_CHARS,
    MAX_RECORD_BYTES,
    Chunk,
    Reader,
    cell_too_long,
    make_chunk,
    parse_float,
    parse_label,
)

NAN = float("nan")
_DRAIN = 2**20  # an over-long line is read past in pieces of at most this many bytes

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind_of_mode(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def special_file_error(path: str, mode: int) -> DataError:
    """The :class:`DataError` refusing ``path``, which is not a regular file (``mode`` from os.stat)."""
    what = _kind_of_mode(mode)
    real = os.path.realpath(path)
    via = f"a link to {real}, which is {what}" if os.path.islink(path) or os.path.abspath(path) != real else what
    why = ("give the data file(s) in it" if stat.S_ISDIR(mode) else
           "reading a pipe or device can block forever or never end")
    return DataError(f"the data path is {via}, not a regular file; tfmec reads data only from regular files "
                     f"({why})", path)


def check_regular(path: str) -> os.stat_result:
    """``os.stat(path)`` (following links) when ``path`` is a regular file.

    Raises:
        FileNotFoundError: ``path`` (or the target of its link) does not exist.
        DataError: ``path`` is a folder, named pipe, device or socket, or a link to one.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such data file", path) from None
    if not stat.S_ISREG(st.st_mode):
        raise special_file_error(path, st.st_mode)
    return st


def open_regular(path: str):
    """Opens ``path`` for binary reading (unbuffered ``os.open`` wrapped in a buffered reader) after
    checking that it is a regular file, also on the opened descriptor: the open does not block (a named
    pipe put in the file's place in between is refused, not waited on)."""
    check_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise special_file_error(path, st.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def resolve_paths(paths) -> list[str]:
    """Normalises one path or a list of paths to a list of ``str`` and checks that each is a regular file.

    Raises:
        ValueError: when the list is empty.
        FileNotFoundError: for a path that does not exist.
        DataError: for a path that is a folder, a named pipe, a device or a socket (or a link to one).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    out = [os.fsdecode(os.fspath(p)) for p in paths]
    if not out:
        raise ValueError("no input files given")
    for p in out:
        check_regular(p)
    return out


def describe_paths(paths: Sequence[str]) -> str:
    """A short human-readable name for a list of input files (used in error messages)."""
    if len(paths) == 1:
        return paths[0]
    if len(paths) <= 4:
        return ", ".join(paths)
    return f"{paths[0]}, {paths[1]}, ... {paths[-1]} ({len(paths)} files)"


def open_binary(path: str):
    """Opens the regular file ``path`` for binary reading (:func:`open_regular`), through gzip when its
    name ends in ``.gz``."""
    fh = open_regular(path)
    if path.lower().endswith(".gz"):
        gz = gzip.GzipFile(fileobj=fh, mode="rb")
        gz.myfileobj = fh  # closed with the GzipFile, as gzip.open(path) does
        return gz
    return fh


DECOMPRESSION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def decompression_error(path: str, line: int, exc: Exception) -> DataError:
    """The :class:`DataError` for a truncated or corrupt ``.gz`` file (instead of gzip's ``EOFError`` /
    ``zlib.error``), at the line where decompression failed."""
    return DataError(f"truncated or corrupt compressed file ({exc})", path, line)


def line_too_long(what: str = "line") -> str:
    """The bad-row message for a line (or record) longer than MAX_RECORD_BYTES."""
    return (f"the {what} is longer than {MAX_RECORD_BYTES:,} bytes, the most a {what} may hold "
            f"(tfmec.data.readers.base.MAX_RECORD_BYTES); it was not read whole")


def read_line(fh) -> bytes | None:
    """The next line of ``fh`` (bytes, line ending included), ``b""`` at the end, or ``None`` for a line
    longer than :data:`MAX_RECORD_BYTES` (which is then read past, in pieces of 1 MiB at most)."""
    raw = fh.readline(MAX_RECORD_BYTES + 1)
    if len(raw) <= MAX_RECORD_BYTES or raw.endswith(b"\n"):
        return raw
    return _drain(fh, raw)


def _drain(fh, raw: bytes) -> None:
    while raw and not raw.endswith(b"\n"):
        raw = fh.readline(_DRAIN)
    return None


#: Records longer than this many characters carry their size (:class:`SizedFields`) and have their cells'
#: lengths checked; shorter ones cannot hold a cell over MAX_CELL_CHARS and count nothing towards
#: MAX_CHUNK_CHARS (a chunk of them holds at most chunk_size x LONG_RECORD characters).
LONG_RECORD = 4096


class SizedFields(list):
    """The fields of a long record (over :data:`LONG_RECORD` characters), with its size in ``size``."""

    __slots__ = ("size",)


def sized_fields(fields: list, size: int):
    """``fields`` of a record of ``size`` characters as the record loop takes them: a :class:`LongCell`
    problem when a cell holds more than MAX_CELL_CHARS characters, :class:`SizedFields` when the record is
    long, else ``fields`` itself. Returns ``(fields or None, problem or None)``."""
    if size <= LONG_RECORD:
        return fields, None
    if size > MAX_CELL_CHARS:
        for j, cell in enumerate(fields):
            if len(cell) > MAX_CELL_CHARS:
                return None, LongCell(j, len(cell))
    out = SizedFields(fields)
    out.size = size
    return out, None


def iter_text_lines(path: str, fallback_encoding: str | None = None) -> Iterator[tuple[int, str | None, str | None]]:
    """Yields ``(line_number, text, problem)`` for every physical line of a text file (1-based numbers).

    ``text`` has its line ending removed (and a UTF-8 byte-order mark on line 1); it is ``None`` when
    the line cannot be read, and ``problem`` says why (not valid UTF-8, longer than
    :data:`MAX_RECORD_BYTES`). Blank lines are yielded too (as ``""``); callers usually skip them. With
    ``fallback_encoding`` (e.g. ``"latin-1"``, MovieLens 1M's ``movies.dat``) a line that is not valid
    UTF-8 is decoded with it instead.
    """
    lineno = 0
    with open_binary(path) as fh:
        try:
            while True:
                raw = read_line(fh)
                if raw == b"":
                    return
                lineno += 1
                if raw is None:
                    yield lineno, None, line_too_long()
                    continue
                try:
                    text = _decode_line(raw)
                except UnicodeDecodeError:
                    if fallback_encoding is None:
                        yield lineno, None, "line is not valid UTF-8"
                        continue
                    text = raw.decode(fallback_encoding).rstrip("\r\n")
                raw = None  # a long line is held once, as text
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text, None
        except DECOMPRESSION_ERRORS as exc:
            raise decompression_error(path, lineno + 1, exc) from None


def _decode_line(raw: bytes) -> str:
    """``raw`` decoded as UTF-8 without its line ending, with no intermediate copy for a long line."""
    if len(raw) < 65536:
        return raw.decode("utf-8").rstrip("\r\n")
    end = len(raw)
    while end and raw[end - 1] in (10, 13):  # b"\n", b"\r"
        end -= 1
    if end == len(raw):
        return raw.decode("utf-8")
    return str(memoryview(raw)[:end], "utf-8")


class _RecordTooLong(Exception):
    """Raised inside the CSV line feed to abandon a record longer than MAX_RECORD_BYTES."""


def _csv_records(path: str, delimiter: str) -> Iterator[tuple[int, list | None, str | None]]:
    state = {"bad": False, "lines": 0, "size": 0, "text": ""}

    def lines(fh):
        try:
            while True:
                raw = read_line(fh)
                if raw == b"":
                    return
                state["lines"] += 1
                if raw is None:
                    raise _RecordTooLong(line_too_long())
                state["size"] += len(raw)
                if state["size"] > MAX_RECORD_BYTES + 1:  # a quoted field over many lines (its last "\n" free)
                    raise _RecordTooLong(line_too_long("record"))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    state["bad"] = True
                    text = raw.decode("utf-8", "replace")
                if state["lines"] == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                state["text"] = text
                yield text
        except DECOMPRESSION_ERRORS as exc:
            raise decompression_error(path, state["lines"] + 1, exc) from None

    with open_binary(path) as fh:
        reader = csv.reader(lines(fh), delimiter=delimiter)
        end = 0
        while True:
            start = end + 1
            state["size"] = 0
            try:
                fields = next(reader)
            except StopIteration:
                return
            except _RecordTooLong as exc:  # the line feed has ended: go on with a fresh one
                end = state["lines"]
                state["bad"] = False
                reader = csv.reader(lines(fh), delimiter=delimiter)
                yield start, None, str(exc)
                continue
            except csv.Error as exc:
                end = state["lines"]
                state["bad"] = False
                long = _long_field(state["text"], delimiter) if start == end and _field_limit(exc) else None
                if long is not None:  # a one-line record: name the column
                    yield start, None, LongCell(*long)
                else:
                    yield start, None, f"malformed delimited record ({_csv_problem(exc)})"
                state["text"] = ""
                continue
            end = state["lines"]
            if state["bad"]:
                state["bad"] = False
                yield start, None, "line is not valid UTF-8"
                continue
            if not fields:
                continue  # blank line
            if state["size"] > LONG_RECORD:
                fields, problem = sized_fields(fields, sum(map(len, fields)))
                yield start, fields, problem
                continue
            yield start, fields, None


class LongCell(str):
    """The problem of a record whose cell at ``index`` holds ``length`` characters, more than
    MAX_CELL_CHARS (the csv module refused it before the column could be named); the record loop turns
    it into :func:`~tfmec.data.readers.base.cell_too_long` with the column's name."""

    def __new__(cls, index: int, length: int):
        self = super().__new__(cls, f"cell {index + 1} of the record holds {length:,} characters; a cell may hold "
                                    f"at most {MAX_CELL_CHARS:,} (tfmec.data.readers.base.MAX_CELL_CHARS)")
        self.index, self.length = index, length
        return self


def _field_limit(exc: Exception) -> bool:
    return "field larger than field limit" in str(exc)


def _long_field(text: str, delimiter: str) -> tuple[int, int] | None:
    """``(index, length)`` of the first field of a one-line CSV record longer than the csv module's field
    limit (standard quoting: ``"..."`` with ``""`` for a quote), or None when there is none."""
    limit = min(csv.field_size_limit(), MAX_CELL_CHARS)
    text = text.rstrip("\r\n")
    i, k, n = 0, 0, len(text)
    while i <= n:
        if text.startswith('"', i):  # a quoted field: up to its closing quote, then to the delimiter
            j = i + 1
            while True:
                j = text.find('"', j)
                if j < 0 or not text.startswith('"', j + 1):
                    break
                j += 2
            close = n if j < 0 else j
            end = text.find(delimiter, close)
            end = n if end < 0 else end
            length = len(text[i + 1:close].replace('""', '"')) + max(0, end - close - 1)
        else:
            end = text.find(delimiter, i)
            end = n if end < 0 else end
            length = end - i
        if length > limit:
            return k, length
        i, k = end + len(delimiter), k + 1
    return None


def _csv_problem(exc: Exception) -> str:
    """csv's message, with its field limit explained."""
    text = str(exc)
    if "field larger than field limit" in text:
        return (f"a cell holds more than {min(csv.field_size_limit(), MAX_CELL_CHARS):,} characters, the most a "
                f"cell may hold (tfmec.data.readers.base.MAX_CELL_CHARS)")
    return text


def iter_split_records(
    path: str, sep: str | None = None, keep_spaces: bool = False, cells: bool = True
) -> Iterator[tuple[int, list | None, str | None]]:
    """Yields ``(line_number, text.split(sep), None)`` for each line of a text file, or
    ``(line_number, None, "line is not valid UTF-8")`` for an undecodable line.

    ``sep=None`` splits on runs of whitespace. Blank lines are skipped: empty ones always, and
    whitespace-only ones too unless ``keep_spaces`` (then they come out as a one-field record). A line
    longer than :data:`MAX_RECORD_BYTES` comes out as ``(line_number, None, problem)`` too, and with
    ``cells`` so does a line with a field over MAX_CELL_CHARS characters (a :class:`LongCell` problem);
    a long line's fields come as :class:`SizedFields` (see :func:`sized_fields`).
    """
    for lineno, text, problem in iter_text_lines(path):
        if text is None:
            yield lineno, None, problem
        elif text if keep_spaces else text.strip():
            if cells and len(text) > LONG_RECORD:
                fields, problem = sized_fields(text.split(sep), len(text))
                yield lineno, fields, problem
            else:
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


def first_line(path: str) -> tuple[int, str | None, str | None] | None:
    """The first non-blank line of a text file as ``(line_number, text, problem)`` (``text`` is ``None``
    when the line cannot be read, ``problem`` says why), or ``None`` for an empty file."""
    gen = iter_text_lines(path)
    try:
        for lineno, text, problem in gen:
            if text is None or text.strip():
                return lineno, text, problem
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
        cell_name: Callable[[int], str] | None = None,
        measure: Callable[[object], int] | None = None,
    ) -> Iterator[Chunk]:
        """The record loop shared by the readers: yields chunks of at most ``chunk_size`` rows.

        For each path in ``self.paths``, ``records_for_path(path)`` yields ``(line, fields, problem)``
        (``fields`` is ``None`` for an unreadable record, ``problem`` says why). A record with
        ``len(fields) != ncols`` (when ``ncols`` is given) is a bad row with the message
        ``count_message(len(fields))`` (default ``"expected {ncols} columns, got {n}"``). Otherwise
        ``parse_record(fields, path, line)`` returns ``(row, label)`` with the row's values in column
        order, or raises :class:`DataError` for a bad row. Bad rows raise or are skipped as
        ``on_error`` says.

        A record's size is ``measure(fields)`` when ``measure`` is given, else ``fields.size`` for a long
        record (:class:`SizedFields`) and nothing for a short one; a chunk ends early once its records
        hold :data:`MAX_CHUNK_CHARS` characters. A :class:`LongCell` problem (a cell over
        :data:`MAX_CELL_CHARS` characters, found by the record iterators) becomes a bad row naming the
        column ``cell_name(position)`` (default: the reader's column names, after a first label column).
        """
        if ncols is not None and count_message is None:
            count_message = lambda got: f"expected {ncols} columns, got {got}"  # noqa: E731
        if cell_name is None:
            names = ["label", *self.column_names]
            cell_name = lambda j: names[j] if j < len(names) else f"#{j + 1}"  # noqa: E731
        buf = RowBuffer(self.columns)
        rows, labels = buf.rows, buf.labels
        bad_row, reject = self._bad_row, self._reject
        size = 0
        for path in self.paths:
            for lineno, fields, problem in records_for_path(path):
                if fields is None:
                    if isinstance(problem, LongCell):
                        problem = cell_too_long(cell_name(problem.index), problem.length)
                    bad_row(problem, path, lineno)
                    continue
                if ncols is not None and len(fields) != ncols:
                    bad_row(count_message(len(fields)), path, lineno)
                    continue
                if measure is not None:
                    n = measure(fields)
                else:
                    n = fields.size if type(fields) is SizedFields else 0
                try:
                    row, y = parse_record(fields, path, lineno)
                except DataError as err:
                    reject(err)
                    continue
                rows.append(row)
                labels.append(y)
                size += n
                if len(labels) >= chunk_size or size >= MAX_CHUNK_CHARS:
                    yield buf.flush()
                    rows, labels = buf.rows, buf.labels
                    size = 0
        if labels:
            yield buf.flush()

    def __repr__(self):
        return f"{type(self).__name__}({self.description!r}, {len(self.columns)} columns, label={self.label!r})"

