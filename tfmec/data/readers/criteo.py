"""Reader for the raw Criteo Display Advertising Challenge (Kaggle DAC) files."""
from __future__ import annotations

from typing import Iterator

from tfmec.api_export import export_value, tfmec_export
from tfmec.data.readers.base import Chunk, parse_float
from tfmec.data.readers.text import NAN, FileReader, fast_label, iter_split_records

CRITEO_NUMERIC_COLUMNS = [f"I{i}" for i in range(1, 14)]
CRITEO_CATEGORICAL_COLUMNS = [f"C{i}" for i in range(1, 27)]
CRITEO_COLUMNS = [(c, "numeric") for c in CRITEO_NUMERIC_COLUMNS] + [
    (c, "categorical") for c in CRITEO_CATEGORICAL_COLUMNS
]
export_value("tfmec.data.readers.CRITEO_NUMERIC_COLUMNS", CRITEO_NUMERIC_COLUMNS,
             doc="Criteo's numeric columns I1..I13")
export_value("tfmec.data.readers.CRITEO_CATEGORICAL_COLUMNS", CRITEO_CATEGORICAL_COLUMNS,
             doc="Criteo's categorical columns C1..C26")
export_value("tfmec.data.readers.CRITEO_COLUMNS", CRITEO_COLUMNS,
             doc="the (name, kind) columns CriteoReader emits, in file order")
_N_FIELDS = 1 + len(CRITEO_COLUMNS)  # label + 39 features


@tfmec_export("tfmec.data.CriteoReader", "tfmec.data.readers.CriteoReader")
class CriteoReader(FileReader):
    """Raw Criteo DAC data: tab-separated, no header, 40 columns per line.

    Columns are ``label`` (0/1), ``I1..I13`` (integers, empty -> NaN; kind ``"numeric"``) and
    ``C1..C26`` (hashed categoricals, empty -> ``""``; kind ``"categorical"``). A line with a column
    count other than 40, text in an ``I`` column, a label other than 0/1 or invalid UTF-8 is a bad
    row (raised as :class:`DataError` or, with ``on_error="skip"``, skipped and counted).

    Args:
        paths: one path or a list of paths, read in order (``.gz`` files are decompressed).
        on_error: ``"raise"`` or ``"skip"``.
    """

    def __init__(self, paths, on_error: str = "raise"):
        super().__init__(paths, on_error)
        self.columns = list(CRITEO_COLUMNS)
        self.label = "label"

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        n_num = len(CRITEO_NUMERIC_COLUMNS)
        num_names = CRITEO_NUMERIC_COLUMNS

        def parse(fields, path, lineno):
            y = fast_label(fields[0], path, lineno)
            row = fields[1:]
            for j in range(n_num):
                t = row[j]
                if not t:
                    row[j] = NAN
                    continue
                try:
                    v = float(t)
                except ValueError:
                    v = None
                if v is None or v - v != 0.0:
                    v = parse_float(t, num_names[j], path, lineno)
                row[j] = v
            return row, y

        return self._stream(chunk_size, _records, parse, _N_FIELDS, _count_message)


def _records(path: str):
    return iter_split_records(path, "\t", keep_spaces=True)


def _count_message(got: int) -> str:
    return f"expected {_N_FIELDS} tab-separated columns (label, I1..I13, C1..C26), got {got}"
