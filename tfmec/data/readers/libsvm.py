"""Reader for libSVM / libFM files with one one-hot feature per field (Frappe, MovieLens-tag, ...)."""
from __future__ import annotations

from typing import Iterator, Sequence

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import Chunk, shown
from tfmec.data.readers.text import (
    FileReader,
    as_name_list,
    fast_label,
    first_line,
    iter_split_records,
    iter_text_lines,
    resolve_paths,
)


@tfmec_export("tfmec.data.readers.load_field_map")
def load_field_map(path) -> tuple[list[str], dict[str, int]]:
    """Reads a field map file whose lines are ``field:value<TAB>index``.

    Returns ``(field_names, index_to_field)``: the field names in order of first appearance and a dict
    from feature index (as written, a string) to the field's position. Raises DataError for a
    malformed line or an index given to two different fields.
    """
    (path,) = resolve_paths(path)
    names: list[str] = []
    pos: dict[str, int] = {}
    index_field: dict[str, int] = {}
    for lineno, text, problem in iter_text_lines(path):
        if text is None:
            raise DataError(problem, path, lineno)
        if not text.strip():
            continue
        key, tab, idx = text.rpartition("\t")
        idx = idx.strip()
        field, colon, _value = key.partition(":")
        if not tab or not colon or not field or not idx.isdigit():
            raise DataError(f"expected 'field:value<TAB>index', got {shown(text)}", path, lineno)
        if field not in pos:
            pos[field] = len(names)
            names.append(field)
        k = pos[field]
        if index_field.setdefault(idx, k) != k:
            raise DataError(
                f"feature index {idx} is mapped to field {names[index_field[idx]]!r} and to {field!r}", path, lineno
            )
    if not names:
        raise DataError("the field map is empty", path)
    return names, index_field


@tfmec_export("tfmec.data.LibSVMReader", "tfmec.data.readers.LibSVMReader")
class LibSVMReader(FileReader):
    """libSVM / libFM lines ``label idx:val idx:val ...`` holding exactly one feature per field.

    The label is ``1``, ``0`` or ``-1`` (``-1`` -> 0). Every column is categorical: the value of a
    field is the index string of its feature (e.g. ``"204"``); the ``:val`` part is checked for
    presence but otherwise ignored (the features are one-hot).

    Fields are, by default, positional: the k-th feature of a row belongs to field k, and the fields
    are named ``f0..f{n-1}`` with n the feature count of the first row, or ``field_names``. With a
    ``field_map`` file (lines ``field:value<TAB>index``) each feature goes to the field its index is
    mapped to, whatever its position; an index missing from the map is a bad row.

    A row with a feature count other than the number of fields (or two features of one field), a
    malformed ``idx:val`` token, a bad label or invalid UTF-8 is a bad row.

    Args:
        paths: one path or a list of paths, read in order (``.gz`` files are decompressed).
        field_map: optional path of a field map file.
        field_names: optional names of the fields in order (not with ``field_map``).
        on_error: ``"raise"`` or ``"skip"``.
    """

    def __init__(
        self,
        paths,
        field_map=None,
        field_names: Sequence[str] | None = None,
        on_error: str = "raise",
    ):
        super().__init__(paths, on_error)
        self.label = "label"
        self.field_map = None
        self._index_field = None
        if field_map is not None:
            if field_names is not None:
                raise ValueError("give field_map or field_names, not both")
            names, self._index_field = load_field_map(field_map)
            self.field_map = str(field_map)
        elif field_names is not None:
            names = as_name_list(field_names, "field_names")
            if not names:
                raise ValueError("field_names must name at least one field")
        else:
            names = self._sniff_names()
        if "label" in names:
            raise ValueError("a field cannot be called 'label' (that is the label's name)")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names: {names}")
        self.columns = [(n, "categorical") for n in names]

    def _sniff_names(self) -> list[str]:
        for path in self.paths:
            found = first_line(path)
            if found is None:
                continue
            lineno, text, problem = found
            if text is None:
                raise DataError(f"{problem} (cannot count the fields)", path, lineno)
            n = len(text.split()) - 1
            if n < 1:
                raise DataError("the first row has no features (cannot count the fields)", path, lineno)
            return [f"f{k}" for k in range(n)]
        raise DataError(f"no data rows in {self.description}")

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        nf = len(self.columns)
        names = self.column_names
        index_field = self._index_field

        def parse(toks, path, lineno):
            y = fast_label(toks[0], path, lineno)
            row = [None] * nf if index_field is not None else []
            for tok in toks[1:]:
                idx, colon, _val = tok.partition(":")
                if not colon or not idx.isdigit():
                    raise DataError(f"malformed feature {shown(tok)}, expected index:value", path, lineno)
                if index_field is None:
                    row.append(idx)
                    continue
                k = index_field.get(idx)
                if k is None:
                    raise DataError(f"feature index {idx} is not in the field map {self.field_map}", path, lineno)
                if row[k] is not None:
                    raise DataError(f"two features ({row[k]} and {idx}) of field {names[k]!r}", path, lineno)
                row[k] = idx
            return row, y

        def count_message(got: int) -> str:
            return f"expected {nf} features (one per field), got {got - 1}"

        def cell_name(j: int) -> str:
            if j == 0:
                return "label"
            return names[j - 1] if index_field is None else f"feature {j} of the line"

        return self._stream(chunk_size, iter_split_records, parse, nf + 1, count_message, cell_name)
