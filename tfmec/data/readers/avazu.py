"""Reader for the Avazu CTR data set (Kaggle 2014) CSV files."""
from __future__ import annotations

import datetime
from typing import Iterator

from tfmec.api_export import export_value, tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import Chunk, shown
from tfmec.data.readers.csv_reader import _clean_header
from tfmec.data.readers.text import FileReader, check_unique, fast_label, iter_records

AVAZU_LABEL = "click"
AVAZU_RAW_COLUMNS = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
#: The feature columns :class:`AvazuReader` emits for the standard Avazu header, in order.
AVAZU_FEATURE_COLUMNS = ["hour_of_day", "weekday"] + AVAZU_RAW_COLUMNS[3:]
export_value("tfmec.data.readers.AVAZU_RAW_COLUMNS", AVAZU_RAW_COLUMNS, doc="the columns of the standard Avazu header")
export_value("tfmec.data.readers.AVAZU_FEATURE_COLUMNS", AVAZU_FEATURE_COLUMNS,
             doc="the feature columns AvazuReader emits for the standard Avazu header, in order")


@tfmec_export("tfmec.data.readers.split_hour")
def split_hour(hour: str) -> tuple[str, str]:
    """Splits an Avazu ``hour`` value ``YYMMDDHH`` into ``(hour_of_day, weekday)``.

    ``hour_of_day`` is ``"00".."23"`` and ``weekday`` is ``"0".."6"`` (Monday = 0) of the date
    ``20YY-MM-DD``. Raises ValueError for anything else.
    """
    h = hour.strip()
    if len(h) != 8 or not h.isdigit():
        raise ValueError(f"hour {shown(hour)} is not YYMMDDHH")
    hh = int(h[6:8])
    if hh > 23:
        raise ValueError(f"hour {hour!r} has hour of day {hh} > 23")
    try:
        day = datetime.date(2000 + int(h[0:2]), int(h[2:4]), int(h[4:6]))
    except ValueError:
        raise ValueError(f"hour {hour!r} is not a valid date YYMMDD") from None
    return h[6:8], str(day.weekday())


def _parse_header(head, path: str) -> list[str]:
    """Checks the first record of an Avazu file and returns its column names."""
    if head is None:
        raise DataError("the file is empty: expected the Avazu header row (id,click,hour,...)", path)
    lineno, fields, problem = head
    if fields is None:
        raise DataError(f"cannot read the header: {problem}", path, lineno)
    header = _clean_header(fields)
    check_unique(header, path, lineno)
    if AVAZU_LABEL not in header:
        raise DataError(
            f"label column {AVAZU_LABEL!r} not found (is this Avazu test.csv, which has no labels?); "
            f"the columns are {header}",
            path,
            lineno,
        )
    return header


@tfmec_export("tfmec.data.AvazuReader", "tfmec.data.readers.AvazuReader")
class AvazuReader(FileReader):
    """Avazu CSV data (``train.csv`` layout): comma-separated with a header row.

    The header must contain ``click`` (the label, 0/1). ``id`` is dropped. ``hour`` (``YYMMDDHH``) is
    replaced, in place, by two categorical columns ``hour_of_day`` (``"00".."23"``) and ``weekday``
    (``"0".."6"``, Monday = 0). Every other column is categorical and kept as its string. For the
    standard header the feature columns are :data:`AVAZU_FEATURE_COLUMNS`.

    Args:
        paths: one path or a list of paths, read in order (``.gz`` files are decompressed); every file
            has the same header.
        on_error: ``"raise"`` or ``"skip"`` for malformed rows (wrong column count, bad label or hour,
            invalid UTF-8).
    """

    def __init__(self, paths, on_error: str = "raise"):
        super().__init__(paths, on_error)
        self.label = AVAZU_LABEL
        self.header = self._read_header(self.paths[0])
        self._label_index = self.header.index(AVAZU_LABEL)
        self._hour_index = self.header.index("hour") if "hour" in self.header else None
        self.columns = []
        self._spec = []  # indices of the plain categorical columns, after the hour pair
        for i, name in enumerate(self.header):
            if name in ("id", AVAZU_LABEL):
                continue
            if i == self._hour_index:
                self.columns += [("hour_of_day", "categorical"), ("weekday", "categorical")]
            else:
                self.columns.append((name, "categorical"))
                self._spec.append(i)
        # Column order with "hour" replaced in place: the hour pair may sit anywhere in the row.
        self._hour_pos = [c for c, _ in self.columns].index("hour_of_day") if self._hour_index is not None else None
        if not self.columns:
            raise DataError(f"no feature columns besides id and click; the columns are {self.header}", self.paths[0], 1)

    def _read_header(self, path: str) -> list[str]:
        records = iter_records(path, ",")
        try:
            return _parse_header(next(records, None), path)
        finally:
            records.close()

    def _records(self, path: str):
        """The data records of one file, after checking that its header matches the first file's."""
        records = iter_records(path, ",")
        head = next(records, None)
        if _parse_header(head, path) != self.header:
            raise DataError(
                f"header {_parse_header(head, path)} differs from the first file's header {self.header}",
                path,
                head[0],
            )
        return records

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        li, hi, hpos, spec = self._label_index, self._hour_index, self._hour_pos, self._spec
        hour_cache: dict = {}

        def parse(fields, path, lineno):
            y = fast_label(fields[li], path, lineno)
            row = [fields[i] for i in spec]
            if hi is not None:
                h = fields[hi]
                pair = hour_cache.get(h)
                if pair is None:
                    try:
                        pair = split_hour(h)
                    except ValueError as exc:
                        raise DataError(str(exc), path, lineno) from None
                    if len(hour_cache) > 100_000:
                        hour_cache.clear()
                    hour_cache[h] = pair
                row[hpos:hpos] = pair
            return row, y

        header = self.header
        return self._stream(chunk_size, self._records, parse, len(header), cell_name=header.__getitem__)
