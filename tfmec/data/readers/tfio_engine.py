"""The ``tfio`` engine of :class:`~tfmec.data.readers.parquet.ParquetReader`: Parquet read through
``tensorflow_io.IODataset.from_parquet``.

tensorflow-io 0.37.1 (the last release) ships kernels built against TensorFlow 2.16: on another
TensorFlow ``import tensorflow_io`` succeeds but every native op fails to load (``undefined symbol``).
:func:`tfio_status` finds that out once per process by running one tiny read, and
:func:`require_tfio` turns a failure into :class:`TfioUnavailableError`, a one-paragraph message
instead of a stack trace. ``make test-io`` builds an environment where the engine works.

tensorflow-io's Parquet kernel reads the physical values only: it does not see nulls (an optional
column with nulls comes back shifted, silently), returns decimals as raw bytes and crashes the
process on a file with a float16 column. :func:`check_tfio_file` refuses such files up front, from
the Parquet metadata, so that the engine either returns exactly what the ``pyarrow`` engine returns
or raises a :class:`~tfmec.data.errors.DataError` that says why.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Iterator, Sequence

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError

#: The versions the engine works with, as the error messages name them.
TFIO_REQUIREMENT = "tensorflow-io 0.37.1 needs TensorFlow 2.16.x, numpy<2 and pyarrow<17"
_HINT = ("use the default engine (engine='pyarrow', --engine pyarrow), or an environment with those pins: "
         "`make test-io` builds one in .venv-io (requirements-io.txt)")

_STATUS: tuple[bool, str] | None = None  # the cached probe result: (usable, reason when not)


@tfmec_export("tfmec.data.readers.TfioUnavailableError")
class TfioUnavailableError(ValueError):
    """``engine="tfio"`` was asked for where tensorflow-io cannot run (missing, or its kernels do not
    load on this TensorFlow). The message names the version constraint and the alternatives."""


def _first_lines(text: str, limit: int = 300) -> str:
    """The gist of a long loader message: the ``undefined symbol`` part when there is one."""
    text = " ".join(str(text).split())
    at = text.find("undefined symbol")
    if at >= 0:
        text = text[at:].split("'")[0].split("]")[0].strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _probe() -> tuple[bool, str]:
    """Imports tensorflow_io and reads a 2-row Parquet file through it; ``(ok, reason)``."""
    try:
        import tensorflow as tf
    except Exception as exc:  # pragma: no cover - tfmec needs tensorflow anyway
        return False, f"tensorflow cannot be imported ({_first_lines(exc)})"
    try:
        with warnings.catch_warnings():  # tensorflow_io warns about every plugin it cannot load
            warnings.simplefilter("ignore")
            import tensorflow_io as tfio
    except ImportError:
        return False, "tensorflow_io is not installed"
    except Exception as exc:
        return False, f"tensorflow_io cannot be imported ({type(exc).__name__}: {_first_lines(exc)})"
    version = getattr(tfio, "__version__", "?")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="tfmec-tfio-probe-") as tmp:
            path = os.path.join(tmp, "probe.parquet")
            pq.write_table(pa.table({"x": pa.array([1, 2], pa.int64())}), path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = [int(v) for v in tfio.IODataset.from_parquet(path, columns=["x"]).map(lambda r: r["x"])]
        if got != [1, 2]:
            return False, f"tensorflow_io {version} read {got} instead of [1, 2] from a test file"
    except Exception as exc:  # NotImplementedError (undefined symbol), NotFoundError, ...
        return False, (f"tensorflow_io {version} is installed but its kernels do not load on TensorFlow "
                       f"{tf.__version__} ({type(exc).__name__}: {_first_lines(exc)})")
    return True, ""


@tfmec_export("tfmec.data.readers.tfio_status")
def tfio_status(refresh: bool = False) -> tuple[bool, str]:
    """Whether the tfio engine can run here: ``(True, "")`` or ``(False, reason)``.

    The probe (import plus one 2-row read) runs once per process; ``refresh=True`` runs it again.
    """
    global _STATUS
    if _STATUS is None or refresh:
        _STATUS = _probe()
    return _STATUS


def require_tfio() -> None:
    """Raises :class:`TfioUnavailableError` unless the tfio engine can run in this process."""
    ok, reason = tfio_status()
    if not ok:
        raise TfioUnavailableError(f"engine 'tfio' is not available: {reason}. {TFIO_REQUIREMENT}; {_HINT}.")


def _has_float16(pa, typ) -> bool:
    t = pa.types
    if t.is_float16(typ):
        return True
    if t.is_dictionary(typ):
        return _has_float16(pa, typ.value_type)
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ):
        return _has_float16(pa, typ.value_type)
    if t.is_map(typ):
        return _has_float16(pa, typ.key_type) or _has_float16(pa, typ.item_type)
    if t.is_struct(typ):
        return any(_has_float16(pa, typ.field(i).type) for i in range(typ.num_fields))
    return False


def check_tfio_file(pf, columns: Sequence[str], path: str) -> None:
    """Refuses what tensorflow-io's Parquet kernel cannot read the way the pyarrow engine does.

    Args:
        pf: the ``pyarrow.parquet.ParquetFile`` (only its metadata is used).
        columns: the columns that will be read (label and features).
        path: the file name, for the messages.

    Raises:
        DataError: a float16 column anywhere in the file (tensorflow-io crashes on it), a decimal
            column among ``columns`` (read as raw bytes), or a null in one of ``columns`` (or no
            null-count statistics to rule nulls out): tensorflow-io does not see nulls.
    """
    import pyarrow as pa

    use_pyarrow = "; read this file with engine='pyarrow' (--engine pyarrow)"
    arrow = pf.schema_arrow
    for field in arrow:
        if _has_float16(pa, field.type):
            raise DataError(f"column {field.name!r} holds float16 values, on which tensorflow-io's Parquet reader "
                            f"crashes the process (even when the column is not read){use_pyarrow}", path)
    for name in columns:
        typ = arrow.field(name).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if pa.types.is_decimal(typ):
            raise DataError(f"column {name!r} is {typ}; tensorflow-io returns decimals as raw bytes{use_pyarrow} "
                            f"or drop the column", path)
    leaves = {pf.schema.column(j).path: j for j in range(pf.metadata.num_columns)}
    meta = pf.metadata
    for name in columns:
        j = leaves.get(name)
        if j is None:  # pragma: no cover - flat columns of supported types are always leaves
            raise DataError(f"column {name!r} is not a flat Parquet column; tensorflow-io cannot read it{use_pyarrow}",
                            path)
        if pf.schema.column(j).max_definition_level == 0:
            continue  # a required column: no nulls possible
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(j).statistics
            if stats is None or not stats.has_null_count:
                raise DataError(f"column {name!r} has no null-count statistics (row group {g}), so nulls cannot be "
                                f"ruled out, and tensorflow-io silently misreads nulls{use_pyarrow}", path)
            if stats.null_count:
                raise DataError(f"column {name!r} has {stats.null_count} null(s) in row group {g}; tensorflow-io's "
                                f"Parquet reader does not support nulls (the pyarrow engine reads them as "
                                f"NaN / \"\" / a bad label){use_pyarrow}", path)


def _to_arrow(pa, values: np.ndarray, typ):
    """One column of a tensorflow-io batch as an arrow array of the file's type ``typ``."""
    t = pa.types
    if t.is_dictionary(typ):
        typ = typ.value_type
    if t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ):
        arr = pa.array(values, type=pa.binary())
        if t.is_string(typ) or t.is_large_string(typ):
            try:
                return arr.cast(pa.string())
            except pa.ArrowInvalid:
                return arr  # invalid UTF-8: the binary path flags the rows
        return arr
    if t.is_unsigned_integer(typ):
        # unsigned columns are stored as signed physical ints: reinterpret the bits
        values = values.view(np.uint32 if values.dtype.itemsize == 4 else np.uint64)
    arr = pa.array(values)
    return arr if arr.type == typ else arr.cast(typ)


def tfio_batches(pf, path: str, columns: Sequence[str], chunk_size: int) -> Iterator[dict]:
    """Streams a Parquet file through ``tfio.IODataset.from_parquet`` as ``{column: pyarrow.Array}``
    batches of ``chunk_size`` rows (the last one shorter), typed like ``pf``'s arrow schema, so that
    the pyarrow engine's conversion applies unchanged. Call :func:`require_tfio` and
    :func:`check_tfio_file` first.

    tensorflow-io caches an opened file by its name for the life of the process: a file rewritten
    under the same name is not seen again by the same process.
    """
    import pyarrow as pa
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_io as tfio

    arrow = pf.schema_arrow
    types = {name: arrow.field(name).type for name in columns}
    source = path if "://" in path else os.path.abspath(path)  # tensorflow-io caches by this name
    try:
        ds = tfio.IODataset.from_parquet(source, columns=list(columns)).batch(chunk_size)
        for batch in ds:
            yield {name: _to_arrow(pa, batch[name].numpy(), types[name]) for name in columns}
    except tf.errors.OpError as exc:
        raise DataError(f"tensorflow-io could not read the file: {_first_lines(exc.message)}", path) from None
