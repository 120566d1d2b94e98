"""File readers: stream CTR data files as :class:`~tfmec.data.readers.base.Chunk` objects.

Every reader takes one path or a list of paths (read in order, ``row_index`` continuing across files),
exposes ``columns`` (``[(name, "categorical" | "numeric")]``, label excluded), ``label`` and
``description``, and streams with ``reader.chunks(chunk_size)``. Bad rows raise
:class:`~tfmec.data.errors.DataError` naming file and line, or with ``on_error="skip"`` are skipped and
counted in ``reader.stats``. Every reader is bounded whatever a file holds (the cell, line and chunk
limits and the refusal of special files of :mod:`tfmec.data.readers.base`).

Formats: ``criteo`` (:class:`CriteoReader`), ``avazu`` (:class:`AvazuReader`), ``csv``
(:class:`CSVReader`), ``libsvm`` / ``libfm`` (:class:`LibSVMReader`), ``parquet``
(:class:`ParquetReader`, read by pyarrow or, with ``engine="tfio"``, tensorflow-io), ``tfrecord``
(:class:`TFRecordReader`), ``mind`` (:class:`MindReader`, MIND impression logs, one row per shown
article), ``movielens`` (:class:`MovieLensReader`, MovieLens ratings, one row per rating with the user's
earlier movies as a history list); :func:`open_reader` picks one by name.
"""
from __future__ import annotations

from tfmec.api_export import export_value, public_names, tfmec_export
# The public names of this package are exported where they are defined (@tfmec_export) and bound here by
# public_names at the end: below, the names this module uses, and tfio_engine for its decorators.
from tfmec.data.readers import tfio_engine
from tfmec.data.readers.avazu import AvazuReader
from tfmec.data.readers.base import Reader
from tfmec.data.readers.criteo import CriteoReader
from tfmec.data.readers.csv_reader import CSVReader
from tfmec.data.readers.libsvm import LibSVMReader
from tfmec.data.readers.mind import MIND_LABEL, MindReader
from tfmec.data.readers.movielens import MOVIELENS_LABEL, MovieLensReader
from tfmec.data.readers.parquet import ParquetReader
from tfmec.data.readers.text import resolve_paths
from tfmec.data.readers.tfrecord import TFRecordReader

#: Format name -> reader class, as :func:`open_reader` understands them.
READERS = {
    "criteo": CriteoReader,
    "avazu": AvazuReader,
    "csv": CSVReader,
    "libsvm": LibSVMReader,
    "mind": MindReader,
    "movielens": MovieLensReader,
    "parquet": ParquetReader,
    "tfrecord": TFRecordReader,
}
FORMAT_ALIASES = {"libfm": "libsvm"}
FORMATS = sorted([*READERS, *FORMAT_ALIASES])
export_value("tfmec.data.readers.READERS", READERS, doc="format name -> reader class, as open_reader knows them")
export_value("tfmec.data.readers.FORMATS", FORMATS, doc="every format name open_reader accepts (aliases included)")

_FIXED_LABELS = {"criteo": "label", "avazu": "click", "libsvm": "label", "mind": MIND_LABEL,
                 "movielens": MOVIELENS_LABEL}


@tfmec_export("tfmec.data.open_reader", "tfmec.data.readers.open_reader")
def open_reader(paths, format: str, label: str | None = None, field_map=None, engine: str | None = None,
                **kw) -> Reader:
    """Creates the reader for ``format`` over ``paths``.

    Args:
        paths: one path or a list of paths (all must exist; checked before anything is read).
        format: one of :data:`FORMATS` (case-insensitive): ``criteo``, ``avazu``, ``csv``, ``libsvm``
            (alias ``libfm``), ``mind``, ``movielens``, ``parquet``, ``tfrecord``.
        label: the label column for ``csv``, ``parquet`` and ``tfrecord`` (default ``"label"``). The
            other formats have a fixed label (``label`` for criteo, libsvm and movielens, ``click`` for
            avazu and mind);
            passing a different name for them is an error.
        field_map: field map file, for ``libsvm`` only.
        engine: for ``parquet`` only: ``"pyarrow"`` (default) or ``"tfio"`` (tensorflow-io; see
            :class:`ParquetReader`). ``None`` is the format's default.
        **kw: further arguments of the reader class (``on_error``, ``numeric``, ``sep``, ...).

    Raises:
        ValueError: unknown format, or an argument that the format does not take
            (:class:`TfioUnavailableError` for ``engine="tfio"`` where tensorflow-io cannot run).
        FileNotFoundError: a path that does not exist.
        DataError: a path that is not a regular file (a folder, a named pipe, a device such as
            ``/dev/zero``, a socket, or a link to one): refused before it is opened.
    """
    if not isinstance(format, str):
        raise ValueError(f"format must be a string, one of {FORMATS}; got {format!r}")
    fmt = FORMAT_ALIASES.get(format.strip().lower(), format.strip().lower())
    if fmt not in READERS:
        raise ValueError(f"unknown data format {format!r}; valid formats are {FORMATS}")
    paths = resolve_paths(paths)
    cls = READERS[fmt]
    if field_map is not None:
        if fmt != "libsvm":
            raise ValueError(f"field_map applies to the libsvm format only, not {fmt!r}")
        kw["field_map"] = field_map
    if engine is not None:
        if fmt != "parquet":
            raise ValueError(f"engine applies to the parquet format only, not {fmt!r}")
        kw["engine"] = engine
    if fmt in _FIXED_LABELS:
        if label is not None and label != _FIXED_LABELS[fmt]:
            raise ValueError(f"the {fmt} format's label is always {_FIXED_LABELS[fmt]!r}; got label={label!r}")
        return cls(paths, **kw)
    return cls(paths, label=label if label is not None else "label", **kw)


__all__ = public_names(globals(), tfio_engine)
