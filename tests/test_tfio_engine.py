"""The ``tfio`` Parquet engine (tensorflow-io) against the default ``pyarrow`` engine.

tensorflow-io 0.37.1 runs only on TensorFlow 2.16.x, so the tests that read through it run in the io
profile (``make test-io``, which sets ``TFMEC_IO_PROFILE=1``): there they must run, and a missing or
broken tensorflow-io fails them loudly. In the main profile (TensorFlow 2.21) they are skipped, and the
tests of the clear error that ``--engine tfio`` gives there run instead.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tfmec.cli import main as cli_main
from tfmec.data import DataError, ParquetReader, SyntheticCTR, load, open_reader
from tfmec.data.readers import tfio_engine
from tfmec.data.readers.tfio_engine import TfioUnavailableError, check_tfio_file, tfio_status

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

IO_PROFILE = os.environ.get("TFMEC_IO_PROFILE", "").strip() == "1"


def _tfio_usable() -> bool:
    ok, reason = tfio_status()
    if IO_PROFILE and not ok:
        pytest.fail(f"!!! TFMEC_IO_PROFILE=1 but the tfio engine cannot run: {reason} !!!", pytrace=False)
    return ok


@pytest.fixture
def tfio():
    """Runs the test only where tensorflow-io works; in the io profile it must work (never skipped)."""
    if not _tfio_usable():
        pytest.skip("tensorflow-io 0.37.1 needs TensorFlow 2.16.x; this test runs in `make test-io`")


@pytest.fixture
def no_tfio():
    """Runs the test only where tensorflow-io cannot run (the main profile)."""
    if _tfio_usable():
        pytest.skip("tensorflow-io works here; the error path is tested in the main profile")


@pytest.fixture
def fresh_probe():
    """Forgets the cached tensorflow-io probe before and after the test."""
    saved = tfio_engine._STATUS
    tfio_engine._STATUS = None
    yield
    tfio_engine._STATUS = saved


def write_synthetic_parquet(path, rows=3000, seed=0, row_group_size=700):
    """tfmec's synthetic Criteo-shaped rows as Parquet without nulls: I* as int64 (missing -> -1),
    C* as strings (missing -> ""), the label as int8; several row groups."""
    gen = SyntheticCTR(rows=rows, seed=seed)
    cols: dict = {}
    labels = []
    for chunk in gen.chunks(1000):
        labels.append(chunk.labels)
        for name, kind in gen.columns:
            cols.setdefault(name, []).append(chunk.features[name])
    table = {"label": pa.array(np.concatenate(labels).astype(np.int8))}
    for name, kind in gen.columns:
        v = np.concatenate(cols[name])
        if kind == "numeric":
            table[name] = pa.array(np.where(np.isnan(v), -1, v).astype(np.int64))
        else:
            table[name] = pa.array(v.tolist(), pa.string())
    pq.write_table(pa.table(table), path, row_group_size=row_group_size)
    return path


def write_mixed_parquet(path):
    """Every column type both engines read, with bad rows (inf, label 2, invalid UTF-8)."""
    n = 23
    rng = np.random.default_rng(3)
    f32 = rng.normal(size=n).astype(np.float32)
    f32[4] = np.inf
    y = rng.integers(0, 2, n).astype(np.int64)
    y[9] = 2
    binary = [f"b{i % 5}".encode() for i in range(n)]
    binary[13] = b"\xff\xfe"
    pq.write_table(pa.table({
        "y": pa.array(y),
        "i8": pa.array(rng.integers(-100, 100, n), pa.int8()),
        "u32": pa.array(rng.integers(2**31, 2**32 - 1, n), pa.uint32()),
        "u64": pa.array(rng.integers(2**40, 2**53, n), pa.uint64()),  # float64-exact (pyarrow's cast checks)
        "i16": pa.array(rng.integers(-3000, 3000, n), pa.int16()),
        "f32": pa.array(f32),
        "f64": pa.array(rng.normal(size=n)),
        "flag": pa.array(rng.integers(0, 2, n).astype(bool)),
        "s": pa.array([f"v{i % 7}" for i in range(n)], pa.string()),
        "ls": pa.array([f"w{i % 3}" for i in range(n)], pa.large_string()),
        "dict": pa.array([["x", "y", "z"][i % 3] for i in range(n)]).dictionary_encode(),
        "bin": pa.array(binary, pa.binary()),
        "num_text": pa.array([str(i * 0.5) for i in range(n)], pa.string()),
        "unread": pa.array([[i] for i in range(n)]),  # a list column, dropped
    }), path, row_group_size=5)
    return path


def read_all(reader, chunk_size):
    """All rows of a reader as ``(features, labels, row_index)``, the chunks concatenated (chunk
    boundaries are not part of the contract: pyarrow may end a chunk at a row-group boundary)."""
    chunks = list(reader.chunks(chunk_size))
    assert chunks and all(0 < len(c) <= chunk_size for c in chunks)
    feats = {name: np.concatenate([c.features[name] for c in chunks]) for name in chunks[0].features}
    return feats, np.concatenate([c.labels for c in chunks]), np.concatenate([c.row_index for c in chunks])


def assert_same_rows(a, b):
    """Two readers' rows are identical: dtypes and every value (NaN where NaN), labels, row_index."""
    (fa, la, ra), (fb, lb, rb) = a, b
    assert la.dtype == lb.dtype == np.float32
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(ra, rb)
    assert list(fa) == list(fb)
    for name in fa:
        assert fa[name].dtype == fb[name].dtype, name
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


def batches(ds):
    """A tf.data split as a list of ``({field: ndarray}, labels)`` numpy batches."""
    return [({k: v.numpy() for k, v in x.items()}, y.numpy()) for x, y in ds]


# ------------------------------------------------------------------------------------------------
# io profile: both engines, same file, same batches
def test_engines_give_identical_batches(tfio, tmp_path):
    path = write_synthetic_parquet(tmp_path / "synthetic.parquet")
    kw = dict(format="parquet", seed=1, batch_size=256, fractions=(0.7, 0.15, 0.15), progress=False,
              chunk_size=500)
    a = load(str(path), engine="pyarrow", **kw)
    b = load(str(path), engine="tfio", **kw)
    assert isinstance(b, type(a)) and a.rows == b.rows and sum(a.rows.values()) == 3000
    assert a.schema.names == b.schema.names and len(a.schema.names) == 39
    for name in a.frequencies:
        np.testing.assert_array_equal(a.frequencies[name], b.frequencies[name])
    for split in ("train", "valid", "test"):
        got_a, got_b = batches(getattr(a, split)), batches(getattr(b, split))
        assert len(got_a) == len(got_b) > 0
        for (xa, ya), (xb, yb) in zip(got_a, got_b):
            assert sorted(xa) == sorted(xb)
            np.testing.assert_array_equal(ya, yb)
            for k in xa:
                assert xa[k].dtype == xb[k].dtype, k
                np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{split}/{k}")


@pytest.mark.parametrize("options", [
    {},
    {"numeric": ["f32", "num_text", "i8"]},  # forced kinds: numbers as strings and strings parsed
    {"categorical": ["i8", "flag", "f64"]},
    {"label_threshold": 0.5},
])
@pytest.mark.parametrize("chunk_size", [4, 7, 1000])
def test_engines_give_identical_rows(tfio, tmp_path, options, chunk_size):
    path = write_mixed_parquet(tmp_path / "mixed.parquet")
    make = lambda engine, on_error: ParquetReader(  # noqa: E731
        path, label="y", drop=["unread"], on_error=on_error, engine=engine, **options)
    a, b = make("pyarrow", "skip"), make("tfio", "skip")
    assert a.columns == b.columns
    chunks_a, chunks_b = read_all(a, chunk_size), read_all(b, chunk_size)
    assert_same_rows(chunks_a, chunks_b)
    assert a.stats == b.stats and b.stats.skipped >= 2  # row 5 (inf), row 14 (bad UTF-8), row 10 (label 2)
    assert b.stats.rows + b.stats.skipped == 23
    # raise mode: the same first error, naming the same row
    with pytest.raises(DataError) as ea:
        read_all(make("pyarrow", "raise"), chunk_size)
    with pytest.raises(DataError) as eb:
        read_all(make("tfio", "raise"), chunk_size)
    assert str(ea.value) == str(eb.value) and eb.value.line is not None


def test_engines_agree_on_unsigned_and_multiple_files(tfio, tmp_path):
    big = tmp_path / "unsigned.parquet"  # stored as signed physical ints: the tfio engine reinterprets them
    pq.write_table(pa.table({
        "y": pa.array([0, 1, 1], pa.int32()),
        "u32": pa.array([2**32 - 1, 2**31, 7], pa.uint32()),
        "u64": pa.array([2**64 - 1, 2**63 + 5, 1], pa.uint64()),
    }), big)
    a = read_all(ParquetReader(big, label="y", categorical=["u64"]), 10)
    b = read_all(ParquetReader(big, label="y", categorical=["u64"], engine="tfio"), 10)
    assert_same_rows(a, b)
    assert b[0]["u32"].tolist() == [2.0**32 - 1, 2.0**31, 7.0]
    assert b[0]["u64"].tolist() == [str(2**64 - 1), str(2**63 + 5), "1"]
    # two files, row_index continuing across them
    two = write_synthetic_parquet(tmp_path / "syn.parquet", rows=50)
    a = read_all(open_reader([two, two], "parquet", engine="pyarrow"), 30)
    b = read_all(open_reader([two, two], "parquet", engine="tfio"), 30)
    assert_same_rows(a, b)
    np.testing.assert_array_equal(b[2], np.arange(100))


def test_tfio_refuses_nulls_decimals_and_float16(tfio, tmp_path):
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"y": [0, 1, 0], "x": pa.array([1.0, None, 2.0]), "c": ["a", "b", "c"]}), nulls)
    assert math.isnan(read_all(ParquetReader(nulls, label="y"), 10)[0]["x"][1])  # pyarrow: NaN
    with pytest.raises(DataError, match=r"'x' has 1 null\(s\).*engine='pyarrow'"):
        ParquetReader(nulls, label="y", engine="tfio")
    assert read_all(ParquetReader(nulls, label="y", drop=["x"], engine="tfio"), 10)[1].tolist() == [0, 1, 0]
    null_label = tmp_path / "null_label.parquet"
    pq.write_table(pa.table({"y": pa.array([0, None]), "c": ["a", "b"]}), null_label)
    with pytest.raises(DataError, match="'y' has 1 null"):
        ParquetReader(null_label, label="y", engine="tfio", on_error="skip")
    no_stats = tmp_path / "no_stats.parquet"
    pq.write_table(pa.table({"y": [0, 1], "c": ["a", "b"]}), no_stats, write_statistics=False)
    with pytest.raises(DataError, match="no null-count statistics"):
        ParquetReader(no_stats, label="y", engine="tfio")
    required = tmp_path / "required.parquet"  # non-nullable columns need no statistics
    schema = pa.schema([pa.field("y", pa.int64(), nullable=False), pa.field("c", pa.string(), nullable=False)])
    pq.write_table(pa.table({"y": [0, 1], "c": ["a", "b"]}, schema=schema), required, write_statistics=False)
    assert read_all(ParquetReader(required, label="y", engine="tfio"), 10)[0]["c"].tolist() == ["a", "b"]
    dec = tmp_path / "decimal.parquet"
    pq.write_table(pa.table({"y": [0, 1], "d": pa.array([1, 2], pa.int8()).cast(pa.decimal128(5, 2))}), dec)
    with pytest.raises(DataError, match="decimal"):
        ParquetReader(dec, label="y", engine="tfio")


def test_float16_file_is_refused_before_tfio_reads_it(tmp_path):
    """tensorflow-io crashes the process on a float16 column, so the check runs on metadata only."""
    path = tmp_path / "half.parquet"
    pq.write_table(pa.table({"y": [0, 1], "h": pa.array(np.array([1.5, 2.0], np.float16))}), path)
    with pytest.raises(DataError, match="float16"):
        check_tfio_file(pq.ParquetFile(path), ["y"], str(path))
    fine = tmp_path / "fine.parquet"
    pq.write_table(pa.table({"y": [0, 1], "c": ["a", "b"]}), fine)
    check_tfio_file(pq.ParquetFile(fine), ["y", "c"], str(fine))  # no error


def test_cli_run_through_tfio_engine(tfio, tmp_path):
    """End to end: the ``tfmec`` console script of this environment, in a fresh process."""
    path = write_synthetic_parquet(tmp_path / "run.parquet", rows=2000, row_group_size=500)
    out = tmp_path / "out"
    script = os.path.join(os.path.dirname(sys.executable), "tfmec")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "tfmec.cli"]
    proc = subprocess.run(
        [*command, "run", "--data", str(path), "--format", "parquet", "--engine", "tfio", "--model", "deepfm",
         "--method", "none", "--epochs", "1", "--batch-size", "256", "--embedding-dim", "4", "--no-export",
         "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    (run,) = metrics["runs"]
    assert sum(metrics["rows"].values()) == 2000
    assert 0.0 < run["test_auc"] < 1.0 and math.isfinite(run["test_logloss"])


# ------------------------------------------------------------------------------------------------
# main profile: a clear error instead of a stack trace
def test_tfio_engine_unavailable_gives_a_clear_error(no_tfio, tmp_path, capsys):
    path = write_synthetic_parquet(tmp_path / "x.parquet", rows=100)
    with pytest.raises(TfioUnavailableError) as err:
        load(str(path), format="parquet", engine="tfio", progress=False)
    message = str(err.value)
    for part in ("tensorflow-io 0.37.1 needs TensorFlow 2.16.x", "numpy<2", "pyarrow<17", "make test-io",
                 "engine='pyarrow'"):
        assert part in message
    assert "Traceback" not in message
    rc = cli_main(["run", "--data", str(path), "--format", "parquet", "--engine", "tfio", "--method", "none",
                   "--epochs", "1", "--out", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert rc == 2 and stderr.startswith("tfmec: error: engine 'tfio' is not available")
    assert "TensorFlow 2.16.x" in stderr and "make test-io" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_kernels_that_fail_to_load_are_reported(fresh_probe, monkeypatch, tmp_path):
    """What tensorflow-io 0.37.1 does on TensorFlow 2.21: imports, then its first op raises
    NotImplementedError naming an undefined symbol. The probe turns that into the clear error."""
    fake = types.ModuleType("tensorflow_io")
    fake.__version__ = "0.37.1"

    class IODataset:
        @staticmethod
        def from_parquet(*args, **kwargs):
            raise NotImplementedError(
                "unable to open file: libtensorflow_io.so, from paths: ['/x/libtensorflow_io.so']\ncaused by: "
                "['/x/libtensorflow_io.so: undefined symbol: _ZNK10tensorflow4data11DatasetBase8FinalizeE']")

    fake.IODataset = IODataset
    monkeypatch.setitem(sys.modules, "tensorflow_io", fake)
    ok, reason = tfio_status(refresh=True)
    assert not ok and "kernels do not load" in reason and "undefined symbol: _ZNK10tensorflow" in reason
    with pytest.raises(TfioUnavailableError, match=r"undefined symbol.*tensorflow-io 0\.37\.1 needs TensorFlow 2\.16"):
        ParquetReader(write_mixed_parquet(tmp_path / "m.parquet"), label="y", engine="tfio")


def test_missing_tensorflow_io_is_reported(fresh_probe, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_io", None)  # makes `import tensorflow_io` fail
    ok, reason = tfio_status(refresh=True)
    assert not ok and reason == "tensorflow_io is not installed"
    with pytest.raises(TfioUnavailableError, match="not installed. tensorflow-io 0.37.1 needs"):
        tfio_engine.require_tfio()


def test_engine_option_validation(tmp_path):
    path = write_synthetic_parquet(tmp_path / "v.parquet", rows=50)
    with pytest.raises(ValueError, match="unknown Parquet engine 'arrow'"):
        ParquetReader(path, label="label", engine="arrow")
    csv = tmp_path / "t.csv"
    csv.write_text("label,a\n0,x\n1,y\n")
    with pytest.raises(ValueError, match="engine applies to the parquet format only"):
        open_reader(csv, "csv", engine="pyarrow")
    with pytest.raises(ValueError, match="engine applies when reading Parquet files"):
        load("synthetic", rows=100, engine="tfio", progress=False)
    # the default engine is pyarrow, explicitly or not
    assert ParquetReader(path, label="label").engine == "pyarrow"
    assert open_reader(path, "parquet", engine="pyarrow").engine == "pyarrow"


def test_cli_engine_flag_checks(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    csv.write_text("label,a\n" + "".join(f"{i % 2},x{i}\n" for i in range(20)))
    rc = cli_main(["run", "--data", str(csv), "--format", "csv", "--engine", "tfio", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--engine applies to --format parquet only, not csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["run", "--data", str(csv), "--format", "parquet", "--engine", "arrow"])
    assert "invalid choice: 'arrow'" in capsys.readouterr().err
