"""Reader for generic delimited text files (CSV, TSV, RecBole atomic files, MovieLens ``::`` files)."""
from __future__ import annotations

import csv
import operator
from typing import Iterator, Sequence

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import Chunk
from tfmec.data.readers.text import (
    FileReader,
    as_name_list,
    check_unique,
    fast_label,
    first_line,
    iter_records,
    to_float,
)

# Tried in this order on the header (or first) line when ``sep=None``.
SNIFF_SEPARATORS = ("\t", "::", ",", ";", "|")


@tfmec_export("tfmec.data.readers.sniff_separator")
def sniff_separator(line: str) -> str:
    """Picks the column separator of a delimited file from its header (or first) line.

    Tab wins over ``::``, which wins over comma, then ``;`` and ``|``; a line with none of them is
    taken as comma-separated (a single column).
    """
    for sep in SNIFF_SEPARATORS:
        if sep in line:
            return sep
    return ","


def split_line(line: str, sep: str) -> list[str]:
    """Splits one line on ``sep``, honouring CSV quoting when ``sep`` is a single character."""
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep), [])
    return line.split(sep)


def _clean_header(names: Sequence[str]) -> list[str]:
    out = []
    for k, n in enumerate(names):
        n = n.strip()
        out.append(n if n else f"unnamed_{k}")
    return out


@tfmec_export("tfmec.data.CSVReader", "tfmec.data.readers.CSVReader")
class CSVReader(FileReader):
    """A delimited text file with a header row (or headerless with ``names=``).

    Args:
        paths: one path or a list of paths, read in order; ``.gz`` files are decompressed. Every file
            repeats the same header (unless ``names`` is given).
        label: name of the label column. Its values must be 0/1 (``-1`` counts as 0) unless
            ``label_threshold`` is given.
        sep: column separator; ``None`` sniffs tab, ``::``, comma, ``;`` or ``|`` from the header line.
            One-character separators go through the :mod:`csv` module (quoting works); longer ones
            (MovieLens' ``::``) are split literally.
        numeric: columns parsed as floats (empty -> NaN; text -> bad row).
        categorical: if given, only these (plus ``numeric``) columns are kept as features; by default
            every column other than the label, ``numeric`` and ``drop`` is categorical.
        drop: columns to leave out.
        label_threshold: if given, the label is ``float(value) >= label_threshold`` (e.g. ratings).
        names: column names for a file without a header row; then no header line is read.
        lists: multi-valued columns (``"list"`` columns: the genres of a movie, the items a user
            clicked before, oldest first), as ``{column: separator}`` (``None``: whitespace) or a list
            of names (whitespace-separated values). The separator must differ from ``sep``. The
            default schema makes each a field of ``max_length`` values (:mod:`tfmec.data.lists`).
        on_error: ``"raise"`` or ``"skip"`` for malformed rows.

    Header names are kept as given (stripped of surrounding spaces; an empty name becomes
    ``unnamed_<k>``), e.g. RecBole's ``user_id:token``. ``columns`` lists the kept feature columns in
    file order.
    """

    def __init__(
        self,
        paths,
        label: str,
        sep: str | None = None,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] | None = None,
        drop: Sequence[str] = (),
        label_threshold: float | None = None,
        names: Sequence[str] | None = None,
        lists=(),
        on_error: str = "raise",
    ):
        super().__init__(paths, on_error)
        if not isinstance(label, str) or not label:
            raise ValueError(f"label must be a column name, got {label!r}")
        if sep is not None and (not isinstance(sep, str) or sep == "" or sep in ("\n", "\r")):
            raise ValueError(f"sep must be a non-empty separator string, got {sep!r}")
        self.label = label
        self.label_threshold = None if label_threshold is None else float(label_threshold)
        numeric = as_name_list(numeric, "numeric")
        drop = as_name_list(drop, "drop")
        cat = None if categorical is None else as_name_list(categorical, "categorical")
        first_path = self.paths[0]

        if names is None:
            self.has_header = True
            found = first_line(first_path)
            if found is None:
                raise DataError("the file is empty: expected a header row with the column names", first_path)
            lineno, text, problem = found
            if text is None:
                raise DataError(f"cannot read the header: {problem}", first_path, lineno)
            self.sep = sep if sep is not None else sniff_separator(text)
            try:
                header = _clean_header(split_line(text, self.sep))
            except csv.Error as exc:
                raise DataError(f"cannot read the header: malformed delimited record ({exc})", first_path,
                                lineno) from None
            where = (first_path, lineno)
        else:
            self.has_header = False
            header = as_name_list(names, "names")
            if not header:
                raise ValueError("names must list at least one column")
            if sep is None:
                found = first_line(first_path)
                sep = sniff_separator(found[1]) if found and found[1] else ","
            self.sep = sep
            where = (first_path, None)
        check_unique(header, *where)
        self.header = header

        present = set(header)

        def _require(cols, what):
            missing = [c for c in cols if c not in present]
            if missing:
                raise DataError(f"{what} column(s) {missing} not found; the columns are {header}", *where)

        if isinstance(lists, dict):
            list_seps = {str(k): v for k, v in lists.items()}
        else:
            list_seps = {name: None for name in as_name_list(lists, "lists")}
        for name, value_sep in list_seps.items():
            if value_sep is not None and (not isinstance(value_sep, str) or not value_sep or value_sep == self.sep):
                raise ValueError(f"list column {name!r}: its value separator must be a non-empty string other "
                                 f"than the column separator {self.sep!r}, got {value_sep!r}")
        _require([label], "label")
        _require(numeric, "numeric")
        _require(drop, "drop")
        _require(list(list_seps), "list")
        if label in list_seps or set(list_seps) & set(numeric):
            raise ValueError(f"list columns {sorted(list_seps)} cannot be the label or numeric columns")
        if cat is not None:
            _require(cat, "categorical")
        for what, cols in (("numeric", numeric), ("drop", drop), ("categorical", cat or [])):
            if label in cols:
                raise ValueError(f"the label column {label!r} cannot also be listed in {what}")
        both = sorted(set(numeric) & set(cat or []))
        if both:
            raise ValueError(f"columns {both} are listed as both numeric and categorical")

        num_set, drop_set = set(numeric), set(drop)
        keep_cat = None if cat is None else set(cat)
        self.columns = []
        self._spec = []  # (index in the record, is_numeric, name)
        for i, name in enumerate(header):
            if name == label or name in drop_set:
                continue
            if name in num_set:
                kind = "numeric"
            elif name in list_seps:
                kind = "list"
            elif keep_cat is None or name in keep_cat:
                kind = "categorical"
            else:
                continue
            self.columns.append((name, kind))
            self._spec.append((i, kind == "numeric", name))
        self.list_separators = {n: v for n, v in list_seps.items() if v is not None}
        if not self.columns:
            raise DataError(f"no feature columns left (the columns are {header}, label {label!r})", *where)
        self._label_index = header.index(label)

    def _records(self, path: str):
        records = iter_records(path, self.sep)
        if self.has_header:
            head = next(records, None)
            if head is None:
                raise DataError("the file is empty: expected a header row with the column names", path)
            lineno, fields, problem = head
            if fields is None:
                raise DataError(f"cannot read the header: {problem}", path, lineno)
            if _clean_header(fields) != self.header:
                raise DataError(
                    f"header {_clean_header(fields)} differs from the first file's header {self.header}", path, lineno
                )
        return records

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        idxs = [i for i, _, _ in self._spec]
        pick = operator.itemgetter(*idxs) if len(idxs) > 1 else (lambda f, i=idxs[0]: (f[i],))
        num_pos = [(k, name) for k, (_, isnum, name) in enumerate(self._spec) if isnum]
        li = self._label_index
        thr = self.label_threshold

        def parse(fields, path, lineno):
            y = fast_label(fields[li], path, lineno, thr)
            row = list(pick(fields))
            for k, name in num_pos:
                row[k] = to_float(row[k], name, path, lineno)
            return row, y

        header = self.header
        return self._stream(chunk_size, self._records, parse, len(header), cell_name=header.__getitem__)
