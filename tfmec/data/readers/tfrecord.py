"""Reader for TFRecord files of ``tf.train.Example`` protos.

TensorFlow is imported only when a :class:`TFRecordReader` is created, so the other readers stay light.
"""
from __future__ import annotations

import gzip
import io
import math
import mmap
import re
import struct
import zlib
from typing import Iterator, Sequence

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import (
    MAX_CELL_CHARS,
    MAX_EXACT_INT,
    MAX_RECORD_BYTES,
    Chunk,
    cell_too_long,
    int_not_exact,
)
from tfmec.data.readers.text import (
    DECOMPRESSION_ERRORS,
    FileReader,
    as_name_list,
    check_regular,
    fast_label,
    open_regular,
    to_float,
)

_KIND_OF_LIST = {"int64_list": "numeric", "float_list": "numeric", "bytes_list": "categorical"}
#: The value lists a list (multi-valued) feature may hold: categorical values only.
_LISTABLE = ("bytes_list", "int64_list")

#: The records at the start of the first file read to decide which features are lists (at most this
#: many, and at most :data:`INFER_BYTES` bytes of them).
INFER_RECORDS = 1000
#: The most bytes of records read to decide which features are lists.
INFER_BYTES = 64 * 2**20


def natural_key(name: str):
    """Sort key that orders ``C2`` before ``C10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def _compression(path: str, compression: str | None) -> str:
    if compression is None:
        return "GZIP" if path.lower().endswith(".gz") else ""
    return compression


@tfmec_export("tfmec.data.TFRecordReader", "tfmec.data.readers.TFRecordReader")
class TFRecordReader(FileReader):
    """TFRecord files of ``tf.train.Example``: single-valued features, and list features.

    The feature columns are the features of the first example of the first file and the list features
    (below) of the inference window (or those given by ``features``), ordered naturally by name (``C2``
    before ``C10``): ``int64_list`` and ``float_list`` features are numeric, ``bytes_list`` ones
    categorical (decoded as UTF-8). ``numeric`` forces bytes features to be parsed as floats,
    ``categorical`` forces number features to their string. A feature missing from a later example (or
    with an empty list) is an empty value (NaN / ``""``).

    List features. A ``bytes_list`` or ``int64_list`` feature is a ``"list"`` column (a multi-valued
    categorical field, see :mod:`tfmec.data.lists`) when it is named in ``lists``, or when some record
    among the first :data:`INFER_RECORDS` records of the first file (at most :data:`INFER_BYTES` bytes
    of them: the inference window) holds more than one value for it; 0 or 1 values in every record of
    the window keep it single-valued (an empty value in a record is an empty value, as above). A list
    column's cell is a Python list of ``str`` in the record's order (oldest first): bytes decoded as
    UTF-8, integers as their digits (as a categorical ``int64_list`` feature renders them); a record
    without the feature, or with an empty value list, gives an empty list. A ``float_list`` feature
    is never a list: naming it in ``lists`` is a :class:`DataError` (only categorical values can be
    listed), and a list feature cannot be ``numeric``. A list feature is a column even when the first
    example lacks it (a writer that leaves out an empty history).

    A feature read as single-valued that holds several values in a later record (beyond the window)
    makes that record a bad row, whose :class:`DataError` names the file, the record number and the
    feature, with the fix: declare it in ``lists`` (for a ``bytes_list`` or ``int64_list`` feature).

    A record that does not parse as an Example, a single-valued feature with more than one value, a
    missing, several-valued or non-0/1 label, a non-finite number, an ``int64_list`` number beyond
    +-2**53 read as numeric (read such an id as categorical), a bytes value (also in a list) longer than
    :data:`~tfmec.data.readers.base.MAX_CELL_CHARS` characters or invalid UTF-8 is a bad row; its
    "line" is the 1-based record number in the file. A corrupted file (bad record framing or checksum)
    is reported at the record where reading stopped, and so is a record whose header claims more than
    :data:`~tfmec.data.readers.base.MAX_RECORD_BYTES` bytes (found before TensorFlow reads the file,
    which would otherwise allocate whatever a header claims); with ``on_error="skip"`` the rest of that
    file is skipped. Only regular files are read.

    Args:
        paths: one path or a list of paths, read in order. ``.gz`` files are read as GZIP-compressed.
        label: name of the label feature.
        numeric: bytes features to parse as numbers.
        categorical: number features to treat as categorical strings.
        features: optional explicit list of feature names to read, in this order.
        label_threshold: if given, the label is ``value >= label_threshold``.
        compression: ``"GZIP"``, ``"ZLIB"`` or ``""``; by default from the file extension.
        on_error: ``"raise"`` or ``"skip"``.
        lists: ``bytes_list`` / ``int64_list`` features to read as lists whatever the window holds
            (see above); each must be found in the window.
    """

    def __init__(
        self,
        paths,
        label: str,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        features: Sequence[str] | None = None,
        label_threshold: float | None = None,
        compression: str | None = None,
        on_error: str = "raise",
        lists: Sequence[str] = (),
    ):
        super().__init__(paths, on_error)
        self.label = label
        self.label_threshold = None if label_threshold is None else float(label_threshold)
        self.compression = compression
        num = set(as_name_list(numeric, "numeric"))
        cat = set(as_name_list(categorical, "categorical"))
        if num & cat:
            raise ValueError(f"columns {sorted(num & cat)} are listed as both numeric and categorical")
        declared = set(as_name_list(lists, "lists"))
        if label in declared:
            raise ValueError(f"the label {label!r} cannot be a list feature")
        if declared & num:
            raise ValueError(f"list features {sorted(declared & num)} cannot be numeric (a list feature is a "
                             f"multi-valued categorical field)")
        path = self.paths[0]
        first, seen, most, window = self._inference_window(path)
        kinds = {name: _KIND_OF_LIST[which] for name, which in first.items()}
        present = sorted(kinds, key=natural_key)
        if label not in kinds:
            raise DataError(f"label feature {label!r} not found in the first example; its features are {present}", path, 1)
        inferred = {name for name, which in seen.items() if which in _LISTABLE and most[name] > 1}
        if features is None:
            names = sorted(set(kinds) | inferred | (declared & set(seen)), key=natural_key)
        else:
            names = as_name_list(features, "features")
        missing = [c for c in dict.fromkeys([*names, *num, *cat, *sorted(declared)]) if c not in kinds and c not in seen]
        if missing:
            where = "the first example" if window == 1 else f"the first {window} records"
            raise DataError(f"feature(s) {missing} not found in {where}; the first example's features are {present}",
                            path, 1)
        self.columns = []
        for name in names:
            if name == label:
                if features is not None:
                    raise ValueError(f"the label {label!r} cannot also be listed in features")
                continue
            which = first.get(name, seen[name])
            if name in declared and which not in _LISTABLE:
                raise DataError(f"feature {name!r} is a {which}: only bytes_list and int64_list features "
                                f"(categorical values) can be read as lists; leave it out of lists=", path)
            if name in declared or name in inferred:
                if name in num:
                    raise ValueError(f"feature {name!r} holds several values in the first {window} records: it is "
                                     f"a list feature, which cannot be numeric")
                kind = "list"
            else:
                kind = "numeric" if name in num else "categorical" if name in cat else _KIND_OF_LIST[which]
            self.columns.append((name, kind))
        if not self.columns:
            raise DataError(f"no feature columns besides the label; the features are {present}", path, 1)
        self._window = window

    def _records(self, path: str) -> Iterator[tuple[int, bytes | None, str | None]]:
        """Yields ``(record_number, raw_bytes, None)``; on a read error ``(n, None, message)`` and stops."""
        import tensorflow as tf

        compression = _compression(path, self.compression)
        try:
            oversized = self._oversized_record(path, compression)
        except DECOMPRESSION_ERRORS:
            oversized = None  # TensorFlow reports the corrupt compressed data itself
        try:
            ds = tf.data.TFRecordDataset(path, compression_type=compression)
            if oversized is not None:
                ds = ds.take(oversized[0] - 1)
            it = ds.as_numpy_iterator()
        except tf.errors.OpError as exc:
            yield 1, None, f"cannot read as TFRecord: {_op_message(exc)}"
            return
        n = 0
        while True:
            try:
                raw = next(it)
            except StopIteration:
                if oversized is not None:
                    k, length = oversized
                    yield k, None, (f"the record's header claims {length:,} bytes, more than the "
                                    f"{MAX_RECORD_BYTES:,} a record may hold (tfmec.data.readers.base."
                                    f"MAX_RECORD_BYTES); cannot read further")
                return
            except tf.errors.OpError as exc:
                yield n + 1, None, f"corrupted TFRecord data, cannot read further: {_op_message(exc)}"
                return
            n += 1
            yield n, raw, None

    def _oversized_record(self, path: str, compression: str) -> tuple[int, int] | None:
        """``(record_number, claimed_length)`` of the first record whose (checksummed) header claims more
        than MAX_RECORD_BYTES, or None. Walks the record headers only (cached per file version)."""
        st = check_regular(path)
        key = (path, compression, st.st_size, st.st_mtime_ns, st.st_ino)
        cache = self.__dict__.setdefault("_walked", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = _walk_headers(path, compression, st.st_size)
        return cache[key]

    def _inference_window(self, path: str) -> tuple[dict, dict, dict, int]:
        """Reads the inference window of ``path`` (see the class docstring): ``(first, seen, most, n)``
        with ``first`` / ``seen`` ``{feature: value list kind}`` of the first example / of the window
        (first kind met), ``most`` ``{feature: most values in one record}`` and ``n`` the records read.
        An unreadable first record is a DataError; the window ends early at a later one (the pass over
        the data reports it)."""
        from google.protobuf.message import DecodeError
        import tensorflow as tf

        first: dict | None = None
        seen: dict = {}
        most: dict = {}
        n = size = 0
        for n, raw, problem in self._records(path):
            if raw is None:
                if first is None:
                    raise DataError(problem, path, n)
                n -= 1
                break
            try:
                ex = tf.train.Example.FromString(raw)
            except DecodeError as exc:
                if first is None:
                    raise DataError(f"record is not a tf.train.Example ({exc})", path, n) from None
                n -= 1
                break
            feat = ex.features.feature
            kinds = {}
            for name in feat:
                f = feat[name]
                which = f.WhichOneof("kind")
                if which is None:
                    continue
                kinds[name] = which
                seen.setdefault(name, which)
                count = len(getattr(f, which).value)
                if count > most.get(name, 0):
                    most[name] = count
            if first is None:
                first = kinds
            size += len(raw)
            if n >= INFER_RECORDS or size >= INFER_BYTES:
                break
        if first is None:
            raise DataError(f"no data rows in {path} (the file holds no records)", path)
        return first, seen, most, n

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        from google.protobuf.message import DecodeError
        import tensorflow as tf

        from_string = tf.train.Example.FromString
        label, thr = self.label, self.label_threshold
        spec = [(name, kind == "numeric", kind == "list") for name, kind in self.columns]
        window = self._window

        def parse(raw, path, n):
            try:
                ex = from_string(raw)
            except DecodeError as exc:
                raise DataError(f"record is not a tf.train.Example ({exc})", path, n) from None
            feat = ex.features.feature
            lab = _single(feat, label, path, n, None)
            if lab is None:
                raise DataError(f"label feature {label!r} is missing", path, n)
            if isinstance(lab, bytes):
                y = fast_label(_decode(lab, label, path, n), path, n, thr)
            elif isinstance(lab, int):  # int64_list: compared exactly, never through a rounded float
                y = _int_label(lab, thr, path, n)
            else:
                y = fast_label(repr(float(lab)), path, n, thr)
            row = []
            for name, isnum, islist in spec:
                if islist:
                    row.append(_many(feat, name, path, n))
                    continue
                v = _single(feat, name, path, n, window)
                if isnum:
                    if v is None:
                        v = math.nan
                    elif isinstance(v, bytes):
                        v = to_float(_decode(v, name, path, n).strip(), name, path, n)
                    elif isinstance(v, int):
                        if not -MAX_EXACT_INT <= v <= MAX_EXACT_INT:
                            raise DataError(int_not_exact(name, v), path, n)
                        v = float(v)
                    else:
                        v = float(v)
                        if not math.isfinite(v):
                            raise DataError(f"feature {name!r}: {v!r} is not a finite number", path, n)
                else:
                    if v is None:
                        v = ""
                    elif isinstance(v, bytes):
                        v = _decode(v, name, path, n)
                    else:
                        v = str(v)
                row.append(v)
            return row, y

        # A read error is the last record _records yields for its file, so the rest of that file is
        # skipped (with on_error="skip").
        return self._stream(chunk_size, self._records, parse, measure=len)


_HEADER = struct.Struct("<QI")


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (used only on the 8 bytes of an over-long header, so plain Python)."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _claims_too_much(header: bytes) -> int | None:
    """The length a record header claims when it is over MAX_RECORD_BYTES and its checksum holds."""
    length, crc = _HEADER.unpack(header)
    if length > MAX_RECORD_BYTES and _masked_crc(header[:8]) == crc:
        return length
    return None


def _walk_headers(path: str, compression: str, size: int) -> tuple[int, int] | None:
    """Finds the first record whose valid header claims more than MAX_RECORD_BYTES (see
    :meth:`TFRecordReader._oversized_record`). Stops quietly at anything else that is wrong (a corrupt
    header, a truncated file): TensorFlow reports those at the same record."""
    n = 0
    if not compression:
        if size < _HEADER.size:
            return None
        with open_regular(path) as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            off, unpack = 0, _HEADER.unpack_from
            while off + 12 <= size:
                n += 1
                length, _ = unpack(mm, off)
                if length > MAX_RECORD_BYTES:
                    claimed = _claims_too_much(mm[off:off + 12])
                    return None if claimed is None else (n, claimed)
                off += 16 + length
        return None
    with open_regular(path) as raw:
        if compression == "GZIP":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "ZLIB":
            stream = io.BufferedReader(_ZlibRaw(raw), 2**16)
        else:
            return None
        with stream:
            while True:
                header = stream.read(12)
                if len(header) < 12:
                    return None
                n += 1
                length = _HEADER.unpack(header)[0]
                if length > MAX_RECORD_BYTES:
                    claimed = _claims_too_much(header)
                    return None if claimed is None else (n, claimed)
                skip = length + 4
                while skip > 0:
                    piece = stream.read(min(skip, 2**20))
                    if not piece:
                        return None
                    skip -= len(piece)


class _ZlibRaw(io.RawIOBase):
    """zlib-compressed bytes (TFRecord's ``ZLIB`` compression) as a raw stream, for io.BufferedReader."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.z = raw, zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.z.eof:
            data = self.z.unconsumed_tail or self.raw.read(2**16)
            if not data:
                return 0
            out = self.z.decompress(data, len(b))
            if out:
                b[:len(out)] = out
                return len(out)
        return 0


def _op_message(exc) -> str:
    """A TensorFlow error's message without TensorFlow's internals (``{{function_node ...}}``,
    ``[Op:...]``, ``name:``), e.g. ``"truncated record at 184"``."""
    text = re.sub(r"\{\{[^}]*\}\}", "", str(getattr(exc, "message", exc)))
    text = re.sub(r"\[Op:[^\]]*\]", "", text)
    text = re.sub(r"\bname:\s*$", "", text.strip())
    return " ".join(text.split()).rstrip(" .") or type(exc).__name__


def _single(feat, name: str, path: str, n: int, window: int | None):
    """The one value of feature ``name`` (bytes, int or float), None when absent or empty. Several
    values are a DataError; ``window`` (the records the reader inferred the lists from) says how to fix
    it, None for the label."""
    if name not in feat:
        return None
    f = feat[name]
    which = f.WhichOneof("kind")
    if which is None:
        return None
    vals = getattr(f, which).value
    if len(vals) == 0:
        return None
    if len(vals) > 1:
        if window is None:
            raise DataError(f"label feature {name!r} has {len(vals)} values; the label must be single-valued", path, n)
        if which not in _LISTABLE:
            raise DataError(f"feature {name!r} has {len(vals)} values; a {which} feature must be single-valued "
                            f"(only bytes_list and int64_list features can be lists)", path, n)
        raise DataError(f"feature {name!r} has {len(vals)} values, but it is read as single-valued (no record "
                        f"among the first {window} of the first file held several); declare it a list feature: "
                        f"lists=[{name!r}]", path, n)
    return vals[0]


def _many(feat, name: str, path: str, n: int) -> list:
    """The values of list feature ``name`` as a list of ``str`` (``[]`` when absent or empty)."""
    if name not in feat:
        return []
    f = feat[name]
    which = f.WhichOneof("kind")
    if which is None:
        return []
    vals = getattr(f, which).value
    if not vals:
        return []
    if which == "bytes_list":
        return [_decode(b, name, path, n) for b in vals]
    if which == "int64_list":
        return [str(v) for v in vals]
    raise DataError(f"list feature {name!r} holds a {which} in this record; a list feature holds bytes_list "
                    f"or int64_list values", path, n)


def _decode(b: bytes, name: str, path: str, n: int) -> str:
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"feature {name!r}: value is not valid UTF-8", path, n) from None
    if len(b) > MAX_CELL_CHARS and len(text) > MAX_CELL_CHARS:
        raise DataError(cell_too_long(name, len(text)), path, n)
    return text


def _int_label(value: int, threshold: float | None, path: str, n: int) -> float:
    """A label from an ``int64_list``, exactly: 1 / 0 / -1 (or ``value >= threshold``)."""
    if threshold is not None:
        return 1.0 if value >= threshold else 0.0  # int vs float: Python compares exactly
    if value == 1:
        return 1.0
    if value in (0, -1):
        return 0.0
    raise DataError(f"label {value} is not 0/1 (or -1 for negative)", path, n)
