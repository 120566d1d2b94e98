"""Tests of the file readers in tfmec.data.readers (CPU only, fast)."""
from __future__ import annotations

import ast
import gzip
import math
import pathlib

import numpy as np
import pytest

from tfmec.data.errors import DataError
from tfmec.data.readers import (
    AVAZU_FEATURE_COLUMNS,
    CRITEO_CATEGORICAL_COLUMNS,
    CRITEO_NUMERIC_COLUMNS,
    FORMATS,
    AvazuReader,
    CriteoReader,
    CSVReader,
    LibSVMReader,
    MindReader,
    ParquetReader,
    TFRecordReader,
    open_reader,
    sniff_separator,
    split_hour,
)

CRITEO_NAMES = CRITEO_NUMERIC_COLUMNS + CRITEO_CATEGORICAL_COLUMNS
READERS_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfmec" / "data" / "readers"


# --------------------------------------------------------------------------------------------------
# helpers
def read_all(reader, chunk_size=8192):
    """Concatenates every chunk: (features dict, labels, row_index, n_chunks)."""
    chunks = list(reader.chunks(chunk_size))
    feats = {name: np.concatenate([c.features[name] for c in chunks]) for name in reader.column_names}
    labels = np.concatenate([c.labels for c in chunks])
    rows = np.concatenate([c.row_index for c in chunks])
    return feats, labels, rows, len(chunks)


def criteo_lines(shared_data, n):
    """The first n raw lines of the Criteo sample (without newline)."""
    out = []
    with open(shared_data / "criteo" / "criteo_dac_train_first10k.txt", encoding="utf-8") as fh:
        for line in fh:
            out.append(line.rstrip("\n"))
            if len(out) == n:
                break
    return out


def write(path, text: str | bytes):
    path = pathlib.Path(path)
    if isinstance(text, str):
        text = text.encode("utf-8")
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(text)
    else:
        path.write_bytes(text)
    return path


def expect_error(make_reader, path, line, match=None):
    """The reader raises DataError naming ``path`` and ``line``; returns the error."""
    with pytest.raises(DataError) as info:
        read_all(make_reader("raise"))
    err = info.value
    msg = str(err)
    assert str(path) in msg
    assert err.path == str(path)
    if line is not None:
        assert f"line {line}:" in msg, msg
        assert err.line == line
    if match is not None:
        assert match in msg, msg
    return err


def expect_skip(make_reader, rows, skipped):
    """With on_error='skip' the reader keeps ``rows`` rows and counts ``skipped`` skips."""
    reader = make_reader("skip")
    feats, labels, row_index, _ = read_all(reader)
    assert len(labels) == rows
    assert reader.stats.skipped == skipped
    assert reader.stats.rows == rows
    assert len(reader.stats.examples) == skipped
    np.testing.assert_array_equal(row_index, np.arange(rows))
    return feats, labels


# --------------------------------------------------------------------------------------------------
# real samples
def test_criteo_sample(shared_data):
    reader = CriteoReader(shared_data / "criteo" / "criteo_dac_train_first10k.txt")
    assert reader.label == "label"
    assert len(reader.columns) == 39
    assert reader.columns[:13] == [(c, "numeric") for c in CRITEO_NUMERIC_COLUMNS]
    assert reader.columns[13:] == [(c, "categorical") for c in CRITEO_CATEGORICAL_COLUMNS]
    assert "criteo_dac_train_first10k.txt" in reader.description
    feats, labels, rows, _ = read_all(reader)
    assert len(labels) == 10_000 and reader.stats.rows == 10_000 and reader.stats.skipped == 0
    assert labels.dtype == np.float32 and set(np.unique(labels)) == {0.0, 1.0}
    assert round(float(labels.mean()), 4) == 0.2182
    np.testing.assert_array_equal(rows, np.arange(10_000))
    for c in CRITEO_NUMERIC_COLUMNS:
        assert feats[c].dtype == np.float64
    for c in CRITEO_CATEGORICAL_COLUMNS:
        assert feats[c].dtype == object and isinstance(feats[c][0], str)
    assert any(np.isnan(feats[c]).any() for c in CRITEO_NUMERIC_COLUMNS)
    assert any((feats[c] == "").any() for c in CRITEO_CATEGORICAL_COLUMNS)
    # First line: 0  1 1 5 0 1382 4 15 2 181 1 2 <empty> 2  68fd1e64 ...
    np.testing.assert_array_equal(
        [feats[c][0] for c in CRITEO_NUMERIC_COLUMNS], [1, 1, 5, 0, 1382, 4, 15, 2, 181, 1, 2, np.nan, 2]
    )
    assert feats["C1"][0] == "68fd1e64" and feats["C22"][0] == "" and feats["C26"][0] == "9727dd16"


def test_criteo_chunking(shared_data):
    reader = CriteoReader(shared_data / "criteo" / "criteo_dac_train_first10k.txt")
    chunks = list(reader.chunks(chunk_size=1000))
    assert len(chunks) == 10
    assert all(len(c) == 1000 for c in chunks)
    for k, c in enumerate(chunks):
        np.testing.assert_array_equal(c.row_index, np.arange(k * 1000, (k + 1) * 1000))
        assert all(len(v) == 1000 for v in c.features.values())
    np.testing.assert_array_equal(np.concatenate([c.row_index for c in chunks]), np.arange(10_000))
    # every pass starts afresh
    assert sum(len(c) for c in reader.chunks(3000)) == 10_000 and reader.stats.rows == 10_000



def test_criteo_gzip_and_multiple_files(shared_data, tmp_path):
    src = shared_data / "criteo" / "criteo_dac_train_first10k.txt"
    gz = write(tmp_path / "part.txt.gz", src.read_bytes())
    feats_a, labels_a, _, _ = read_all(CriteoReader(src))
    feats_b, labels_b, _, _ = read_all(CriteoReader(gz))
    np.testing.assert_array_equal(labels_a, labels_b)
    for c in CRITEO_NAMES:
        np.testing.assert_array_equal(feats_a[c], feats_b[c])
    reader = CriteoReader([src, gz])
    feats, labels, rows, _ = read_all(reader, chunk_size=3000)
    assert len(labels) == 20_000
    np.testing.assert_array_equal(rows, np.arange(20_000))
    assert src.name in reader.description and gz.name in reader.description


def test_deepctr_criteo_csv(shared_data):
    reader = CSVReader(shared_data / "criteo" / "deepctr_criteo_sample.csv", label="label", numeric=CRITEO_NUMERIC_COLUMNS)
    assert reader.sep == ","
    assert reader.column_names == CRITEO_NAMES
    assert reader.columns[:13] == [(c, "numeric") for c in CRITEO_NUMERIC_COLUMNS]
    feats, labels, rows, _ = read_all(reader)
    assert len(labels) == 200
    assert feats["I3"].dtype == np.float64 and feats["I3"][0] == 260.0 and math.isnan(feats["I1"][0])
    assert feats["C1"][0] == "05db9164" and feats["C26"][0] == ""


def test_avazu_sample(shared_data):
    reader = AvazuReader(shared_data / "avazu" / "avazu_train_first10k.csv")
    assert reader.label == "click"
    assert reader.column_names == AVAZU_FEATURE_COLUMNS
    assert all(kind == "categorical" for _, kind in reader.columns)
    assert "id" not in reader.column_names and "hour" not in reader.column_names
    feats, labels, rows, _ = read_all(reader)
    assert len(labels) == 9_999
    assert round(float(labels.mean()), 4) == 0.1706
    # every row is from hour 14102100: 2014-10-21 (a Tuesday) 00:00
    assert set(feats["hour_of_day"]) == {"00"} and set(feats["weekday"]) == {"1"}
    assert feats["C1"][0] == "1005" and feats["site_id"][0] == "1fbe01fe" and feats["C21"][0] == "79"


def test_avazu_columns_constant():
    assert AVAZU_FEATURE_COLUMNS[:3] == ["hour_of_day", "weekday", "C1"]
    assert AVAZU_FEATURE_COLUMNS[-1] == "C21" and len(AVAZU_FEATURE_COLUMNS) == 23
    assert split_hour("14102100") == ("00", "1")
    assert split_hour("14102623") == ("23", "6")  # a Sunday
    for bad, message in (("1410210", "is not YYMMDDHH"), ("14102124", "has hour of day 24 > 23"),
                         ("14133100", "is not a valid date YYMMDD"), ("abcdefgh", "is not YYMMDDHH")):
        with pytest.raises(ValueError, match=f"hour '{bad}' {message}"):
            split_hour(bad)


@pytest.mark.parametrize("name,rows", [("frappe.validation.libfm", 57_722), ("frappe.test.libfm", 28_860)])
def test_frappe_libfm(shared_data, name, rows):
    reader = LibSVMReader(shared_data / "frappe" / name)
    assert reader.column_names == [f"f{k}" for k in range(10)]
    assert all(kind == "categorical" for _, kind in reader.columns)
    feats, labels, row_index, _ = read_all(reader)
    assert len(labels) == rows
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert 0.32 < labels.mean() < 0.34  # 2 sampled negatives per positive


def test_frappe_first_row(shared_data):
    reader = LibSVMReader(shared_data / "frappe" / "frappe.test.libfm", field_names=[
        "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"])
    chunk = next(iter(reader.chunks(10)))
    # -1 204:1 4798:1 5041:1 5046:1 5053:1 5055:1 5058:1 5060:1 5073:1 5183:1
    assert chunk.labels[0] == 0.0
    assert [chunk.features[n][0] for n in reader.column_names] == [
        "204", "4798", "5041", "5046", "5053", "5055", "5058", "5060", "5073", "5183"]


def test_movielens_100k_recbole(shared_data):
    reader = CSVReader(shared_data / "movielens-100k" / "ml-100k.inter", label="rating:float", label_threshold=4,
                       drop=["timestamp:float"])
    assert reader.sep == "\t"
    assert reader.columns == [("user_id:token", "categorical"), ("item_id:token", "categorical")]
    feats, labels, _, _ = read_all(reader)
    assert len(labels) == 100_000
    assert round(float(labels.mean()), 4) == 0.5537
    assert feats["user_id:token"][0] == "196" and feats["item_id:token"][0] == "242" and labels[0] == 0.0


def test_movielens_1m_dat_gz(shared_data):
    reader = CSVReader(shared_data / "movielens-1m-part" / "ratings.dat.gz", names=["user_id", "movie_id", "rating", "ts"],
                       sep="::", label="rating", label_threshold=4, drop=["ts"])
    assert reader.column_names == ["user_id", "movie_id"]
    n = pos = 0
    first = None
    for chunk in reader.chunks(65536):
        if first is None:
            first = (chunk.features["user_id"][0], chunk.features["movie_id"][0], chunk.labels[0])
        n += len(chunk)
        pos += int(chunk.labels.sum())
    assert n == 487_650
    assert pos == 279_124
    assert first == ("1", "1193", 1.0)  # 1::1193::5::978300760


def test_movielens_1m_sniffs_double_colon(shared_data):
    reader = CSVReader(shared_data / "movielens-1m-part" / "ratings.dat.gz", names=["user_id", "movie_id", "rating", "ts"],
                       label="rating", label_threshold=4, numeric=["ts"])
    assert reader.sep == "::"
    chunk = next(iter(reader.chunks(100)))
    assert chunk.features["ts"][0] == 978300760.0


# --------------------------------------------------------------------------------------------------
# Parquet and TFRecord round trips
def test_parquet_roundtrip(shared_data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = write(tmp_path / "src.txt", "\n".join(criteo_lines(shared_data, 500)) + "\n")
    feats, labels, _, _ = read_all(CriteoReader(src))
    table = {"label": pa.array(labels.astype(np.int64))}
    for c in CRITEO_NUMERIC_COLUMNS:
        table[c] = pa.array([None if math.isnan(v) else int(v) for v in feats[c]], type=pa.int64())
    for c in CRITEO_CATEGORICAL_COLUMNS:
        table[c] = pa.array([v if v else None for v in feats[c]], type=pa.string())
    path = tmp_path / "criteo.parquet"
    pq.write_table(pa.table(table), path, row_group_size=128)

    reader = ParquetReader(path, label="label")
    assert reader.columns == [(c, "numeric") for c in CRITEO_NUMERIC_COLUMNS] + [
        (c, "categorical") for c in CRITEO_CATEGORICAL_COLUMNS]
    got, got_labels, rows, n_chunks = read_all(reader, chunk_size=100)
    assert n_chunks == 5
    np.testing.assert_array_equal(rows, np.arange(500))
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.float32
    for c in CRITEO_NAMES:
        assert got[c].dtype == feats[c].dtype
        np.testing.assert_array_equal(got[c], feats[c])

    # overrides: an int column as categorical, a dropped column, the whole-list numeric form
    reader = ParquetReader(path, label="label", categorical=["I1"], drop=["C26"])
    assert ("I1", "categorical") in reader.columns and "C26" not in reader.column_names
    got, _, _, _ = read_all(reader)
    assert got["I1"][0] == "1" and got["I12"].dtype == np.float64
    reader = ParquetReader(path, label="label", numeric=["I1", "I2"])
    assert [c for c, k in reader.columns if k == "numeric"] == ["I1", "I2"]
    assert read_all(reader)[0]["I3"][0] == "5"


def test_parquet_bad_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({
        "y": pa.array([0, 1, 1, None, 0, 2]),
        "x": pa.array([1.0, None, float("inf"), 3.0, float("nan"), 4.0]),
        "c": pa.array(["a", None, "b", "c", "d", "e"]),
    }), path)
    make = lambda on_error: ParquetReader(path, label="y", on_error=on_error)  # noqa: E731
    expect_error(make, path, 3, match="'x'")  # inf: row 3 comes before the null label on row 4
    feats, labels = expect_skip(make, rows=2, skipped=4)
    np.testing.assert_array_equal(labels, [0.0, 1.0])
    assert math.isnan(feats["x"][1]) and feats["c"][1] == ""
    with pytest.raises(DataError, match="not found"):
        ParquetReader(path, label="click")
    with pytest.raises(DataError, match="not found"):
        ParquetReader(path, label="y", drop=["nope"])


def _criteo_example(tf, feats, labels, i, omit_missing):
    feature = {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))}
    for c in CRITEO_NUMERIC_COLUMNS:
        v = feats[c][i]
        if math.isnan(v):
            if omit_missing:
                continue
            feature[c] = tf.train.Feature(int64_list=tf.train.Int64List(value=[]))
        else:
            feature[c] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
    for c in CRITEO_CATEGORICAL_COLUMNS:
        v = feats[c][i]
        if v == "" and omit_missing:
            continue
        feature[c] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


@pytest.mark.parametrize("suffix", [".tfrecord", ".tfrecord.gz"])
def test_tfrecord_roundtrip(shared_data, tmp_path, suffix):
    tf = pytest.importorskip("tensorflow")
    src = write(tmp_path / "src.txt", "\n".join(criteo_lines(shared_data, 500)) + "\n")
    feats, labels, _, _ = read_all(CriteoReader(src))
    path = tmp_path / ("criteo" + suffix)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if suffix.endswith(".gz") else "")
    with tf.io.TFRecordWriter(str(path), options) as w:
        for i in range(500):
            # the first example lists every feature (empty lists for missing values); later ones
            # leave missing values out, which must read back as NaN / ""
            w.write(_criteo_example(tf, feats, labels, i, omit_missing=i > 0).SerializeToString())

    reader = TFRecordReader(path, label="label")
    assert sorted(reader.column_names) == sorted(CRITEO_NAMES)
    assert reader.column_names[:3] == ["C1", "C2", "C3"]  # natural order
    assert dict(reader.columns) == {**{c: "numeric" for c in CRITEO_NUMERIC_COLUMNS},
                                     **{c: "categorical" for c in CRITEO_CATEGORICAL_COLUMNS}}
    got, got_labels, rows, n_chunks = read_all(reader, chunk_size=128)
    assert n_chunks == 4
    np.testing.assert_array_equal(rows, np.arange(500))
    np.testing.assert_array_equal(got_labels, labels)
    for c in CRITEO_NAMES:
        assert got[c].dtype == feats[c].dtype
        np.testing.assert_array_equal(got[c], feats[c])

    ordered = TFRecordReader(path, label="label", features=CRITEO_NAMES)
    assert ordered.column_names == CRITEO_NAMES


def test_tfrecord_bad_rows(tmp_path):
    tf = pytest.importorskip("tensorflow")

    def example(label, x, c):
        return tf.train.Example(features=tf.train.Features(feature={
            "y": tf.train.Feature(int64_list=tf.train.Int64List(value=label)),
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
            "c": tf.train.Feature(bytes_list=tf.train.BytesList(value=c)),
        })).SerializeToString()

    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(example([1], [0.5], [b"a"]))
        w.write(b"\x0a\xff\x01")  # record 2: not an Example (truncated length-delimited field)
        w.write(example([0], [1.0, 2.0], [b"b"]))  # record 3: two values
        w.write(example([3], [1.0], [b"b"]))  # record 4: label not 0/1
        w.write(example([0], [float("inf")], [b"b"]))  # record 5: not finite
        w.write(example([0], [2.0], [b"\xff"]))  # record 6: not UTF-8
        w.write(example([0], [], [b"z"]))  # record 7: fine, empty x
    make = lambda on_error: TFRecordReader(path, label="y", on_error=on_error)  # noqa: E731
    expect_error(make, path, 2, match="tf.train.Example")
    feats, labels = expect_skip(make, rows=2, skipped=5)
    np.testing.assert_array_equal(labels, [1.0, 0.0])
    assert feats["x"][0] == 0.5 and math.isnan(feats["x"][1]) and list(feats["c"]) == ["a", "z"]

    with pytest.raises(DataError, match="label feature 'label' not found"):
        TFRecordReader(path, label="label")
    clean = tmp_path / "clean.tfrecord"
    with tf.io.TFRecordWriter(str(clean)) as w:
        for label in (1, 0, 1):
            w.write(example([label], [1.0], [b"a"]))
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(clean.read_bytes()[:-5])  # truncated last record
    make = lambda on_error: TFRecordReader(corrupt, label="y", on_error=on_error)  # noqa: E731
    expect_error(make, corrupt, 3, "corrupted")
    expect_skip(make, rows=2, skipped=1)
    empty = write(tmp_path / "empty.tfrecord", b"")
    with pytest.raises(DataError, match="no data rows"):
        TFRecordReader(empty, label="y")


# --------------------------------------------------------------------------------------------------
# bad input: Criteo
def test_criteo_bad_rows(shared_data, tmp_path):
    lines = criteo_lines(shared_data, 6)
    cases = {
        "wrong_count": (lambda ls: ls.__setitem__(1, "\t".join(ls[1].split("\t")[:30])), 2, "expected 40"),
        "text_numeric": (lambda ls: ls.__setitem__(2, _set_field(ls[2], 5, "abc")), 3, "'I5'"),
        "inf_numeric": (lambda ls: ls.__setitem__(2, _set_field(ls[2], 5, "inf")), 3, "'I5'"),
        "label": (lambda ls: ls.__setitem__(3, _set_field(ls[3], 0, "2")), 4, "label '2'"),
    }
    for name, (mutate, line, match) in cases.items():
        ls = list(lines)
        mutate(ls)
        path = write(tmp_path / f"{name}.txt", "\n".join(ls) + "\n")
        make = lambda on_error, path=path: CriteoReader(path, on_error=on_error)  # noqa: E731
        expect_error(make, path, line, match)
        expect_skip(make, rows=5, skipped=1)


def _set_field(line, k, value):
    fields = line.split("\t")
    fields[k] = value
    return "\t".join(fields)


def test_criteo_non_utf8(shared_data, tmp_path):
    lines = [ln.encode() for ln in criteo_lines(shared_data, 4)]
    lines[2] = lines[2].replace(b"68fd1e64", b"68fd\xff\xfe64", 1) if b"68fd1e64" in lines[2] else lines[2] + b"\xff"
    path = write(tmp_path / "bytes.txt.gz", b"\n".join(lines) + b"\n")
    make = lambda on_error: CriteoReader(path, on_error=on_error)  # noqa: E731
    expect_error(make, path, 3, "UTF-8")
    expect_skip(make, rows=3, skipped=1)


def test_criteo_line_numbers_in_second_file(shared_data, tmp_path):
    lines = criteo_lines(shared_data, 3)
    good = write(tmp_path / "a.txt", "\n".join(lines) + "\n")
    bad = write(tmp_path / "b.txt", "\n".join([lines[0], "1\t2\t3"]) + "\n")
    make = lambda on_error: CriteoReader([good, bad], on_error=on_error)  # noqa: E731
    expect_error(make, bad, 2)
    expect_skip(make, rows=4, skipped=1)


def test_empty_inputs(tmp_path):
    empty = write(tmp_path / "empty.txt", b"")
    with pytest.raises(DataError, match="no data rows") as info:
        read_all(CriteoReader(empty))
    assert str(empty) in str(info.value)
    blank = write(tmp_path / "blank.txt", "\n\n")
    with pytest.raises(DataError, match="no data rows"):
        read_all(CriteoReader(blank))
    # every row bad + skip: still an error, which says how many rows were skipped
    junk = write(tmp_path / "junk.txt", "a\tb\nc\n")
    with pytest.raises(DataError, match="2 rows skipped"):
        read_all(CriteoReader(junk, on_error="skip"))
    with pytest.raises(DataError, match="no data rows"):
        LibSVMReader(empty)
    with pytest.raises(ValueError, match="on_error"):
        CriteoReader(junk, on_error="ignore")


# --------------------------------------------------------------------------------------------------
# bad input: CSV
CSV_TEXT = "label,n,c\n1,1.5,a\n0,,b\n1,2,\n"


def test_csv_basic_and_options(tmp_path):
    path = write(tmp_path / "d.csv", CSV_TEXT)
    reader = CSVReader(path, label="label", numeric=["n"])
    assert reader.columns == [("n", "numeric"), ("c", "categorical")]
    feats, labels, _, _ = read_all(reader)
    np.testing.assert_array_equal(labels, [1, 0, 1])
    np.testing.assert_array_equal(feats["n"], [1.5, np.nan, 2.0])
    assert list(feats["c"]) == ["a", "b", ""]
    assert CSVReader(path, label="label", drop=["n"]).columns == [("c", "categorical")]
    assert CSVReader(path, label="label", categorical=["c"]).columns == [("c", "categorical")]
    assert CSVReader(path, label="label", numeric="n", categorical=[]).columns == [("n", "numeric")]
    # threshold labels
    thr = CSVReader(path, label="n", label_threshold=1.8, categorical=["c"])
    with pytest.raises(DataError, match="line 3"):  # empty rating
        read_all(thr)


def test_csv_quoting_and_separators(tmp_path):
    quoted = write(tmp_path / "q.csv", 'y,title,genre\n1,"Toy Story, (1995)",x\n0,"two\nlines",y\n1,plain,"z"\n1,a,b,c\n')
    make = lambda on_error: CSVReader(quoted, label="y", on_error=on_error)  # noqa: E731
    expect_error(make, quoted, 6, "expected 3 columns, got 4")  # line numbers count the quoted newline
    feats, labels = expect_skip(make, rows=3, skipped=1)
    assert list(feats["title"]) == ["Toy Story, (1995)", "two\nlines", "plain"]
    assert sniff_separator("a\tb,c") == "\t"
    assert sniff_separator("a::b") == "::"
    assert sniff_separator("a,b") == ","
    assert sniff_separator("a;b") == ";"
    tsv = write(tmp_path / "t.tsv", "label\tx:token\n1\tq\n")
    assert CSVReader(tsv, label="label").column_names == ["x:token"]
    dat = write(tmp_path / "r.dat", "1::10::5\n2::20::3\n")
    reader = CSVReader(dat, names=["u", "i", "r"], label="r", label_threshold=4)
    assert reader.sep == "::"
    feats, labels, _, _ = read_all(reader)
    assert list(feats["i"]) == ["10", "20"] and list(labels) == [1.0, 0.0]
    comma = write(tmp_path / "nohdr.csv", "1,a\n0,b\n")
    assert len(read_all(CSVReader(comma, names=["y", "a"], label="y"))[1]) == 2


@pytest.mark.parametrize("case,line,match,rows", [
    ("label,n,c\n1,1.5,a\n0,2\n1,2,x\n", 3, "expected 3 columns, got 2", 2),  # wrong column count
    ("label,n,c\n1,1.5,a\n0,abc,b\n1,2,x\n", 3, "'n'", 2),  # text in a numeric column
    ("label,n,c\n1,1.5,a\n0,nan,b\n1,2,x\n", 3, "finite", 2),  # NaN text in a numeric column
    ("label,n,c\n1,1.5,a\n1,2,x\n5,1,b\n", 4, "not 0/1", 2),  # label not 0/1
    ("label,n,c\n1,1.5,a\nyes,1,b\n1,2,x\n", 3, "not a number", 2),  # label text
])
def test_csv_bad_rows(tmp_path, case, line, match, rows):
    path = write(tmp_path / "bad.csv", case)
    make = lambda on_error: CSVReader(path, label="label", numeric=["n"], on_error=on_error)  # noqa: E731
    expect_error(make, path, line, match)
    expect_skip(make, rows=rows, skipped=1)


def test_csv_non_utf8(tmp_path):
    path = write(tmp_path / "bad.csv", b"label,c\n1,a\n0,caf\xe9\n1,b\n")
    make = lambda on_error: CSVReader(path, label="label", on_error=on_error)  # noqa: E731
    expect_error(make, path, 3, "UTF-8")
    feats, _ = expect_skip(make, rows=2, skipped=1)
    assert list(feats["c"]) == ["a", "b"]


def test_csv_header_problems(tmp_path):
    empty = write(tmp_path / "empty.csv", b"")
    with pytest.raises(DataError, match="empty.*header") as info:
        CSVReader(empty, label="label")
    assert str(empty) in str(info.value)
    header_only = write(tmp_path / "header.csv", "label,a,b\n")
    reader = CSVReader(header_only, label="label")
    with pytest.raises(DataError, match="no data rows") as info:
        read_all(reader)
    assert str(header_only) in str(info.value)
    path = write(tmp_path / "d.csv", CSV_TEXT)
    with pytest.raises(DataError) as info:
        CSVReader(path, label="click")
    msg = str(info.value)
    assert str(path) in msg and "'click'" in msg and "['label', 'n', 'c']" in msg
    with pytest.raises(DataError, match="numeric column"):
        CSVReader(path, label="label", numeric=["nope"])
    with pytest.raises(DataError, match="duplicate"):
        CSVReader(write(tmp_path / "dup.csv", "label,a,a\n1,2,3\n"), label="label")
    with pytest.raises(ValueError, match="label"):
        CSVReader(path, label="label", drop=["label"])
    other = write(tmp_path / "other.csv", "label,c,n\n1,a,1\n")
    with pytest.raises(DataError, match="differs") as info:
        read_all(CSVReader([path, other], label="label"))
    assert str(other) in str(info.value)
    gz = write(tmp_path / "d.csv.gz", CSV_TEXT)
    feats, labels, rows, _ = read_all(CSVReader([path, gz], label="label"))
    assert len(labels) == 6 and list(rows) == list(range(6))


# --------------------------------------------------------------------------------------------------
# bad input: Avazu
AVAZU_HEADER = ",".join(["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                         "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                         "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"])


def _avazu_row(click="0", hour="14102100", rest=None):
    rest = rest or ["1005", "0"] + ["x"] * 13 + ["1"] * 6
    return ",".join(["123", click, hour] + rest)


def test_avazu_bad_rows(tmp_path):
    for name, bad, match in [
        ("count", _avazu_row() + ",extra", "expected 24 columns"),
        ("hour", _avazu_row(hour="14102125"), "hour"),
        ("label", _avazu_row(click="x"), "label"),
    ]:
        path = write(tmp_path / f"{name}.csv", "\n".join([AVAZU_HEADER, _avazu_row(), bad, _avazu_row("1")]) + "\n")
        make = lambda on_error, path=path: AvazuReader(path, on_error=on_error)  # noqa: E731
        expect_error(make, path, 3, match)
        _, labels = expect_skip(make, rows=2, skipped=1)
        assert list(labels) == [0.0, 1.0]


def test_avazu_missing_label(tmp_path):
    path = write(tmp_path / "test.csv", AVAZU_HEADER.replace("click,", "") + "\n")
    with pytest.raises(DataError, match="'click' not found") as info:
        AvazuReader(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="empty"):
        AvazuReader(write(tmp_path / "empty.csv", ""))


# --------------------------------------------------------------------------------------------------
# bad input: libSVM
def test_libsvm_bad_rows(tmp_path):
    good = ["1 1:1 10:1 20:1", "-1 2:1 11:1 21:1", "0 3:1 12:1 22:1"]
    for name, bad, match in [
        ("count", "1 4:1 13:1", "expected 3 features"),
        ("label", "2 4:1 13:1 23:1", "not 0/1"),
        ("token", "1 4:1 abc 23:1", "malformed feature"),
    ]:
        path = write(tmp_path / f"{name}.libfm", "\n".join(good[:2] + [bad] + good[2:]) + "\n")
        make = lambda on_error, path=path: LibSVMReader(path, on_error=on_error)  # noqa: E731
        expect_error(make, path, 3, match)
        feats, labels = expect_skip(make, rows=3, skipped=1)
        np.testing.assert_array_equal(labels, [1, 0, 0])
        assert list(feats["f1"]) == ["10", "11", "12"]


def test_libsvm_field_map(tmp_path):
    fmap = write(tmp_path / "fields.txt", "user:a\t1\nuser:b\t2\nitem:x\t10\nitem:y\t11\nday:mon\t20\n")
    data = write(tmp_path / "d.libfm", "1 20:1 1:1 10:1\n0 2:1 11:1 20:1\n1 2:1 99:1 20:1\n0 1:1 2:1 20:1\n")
    make = lambda on_error: LibSVMReader(data, field_map=fmap, on_error=on_error)  # noqa: E731
    assert make("raise").column_names == ["user", "item", "day"]
    expect_error(make, data, 3, "not in the field map")
    feats, labels = expect_skip(make, rows=2, skipped=2)  # unknown index 99, two 'user' features
    assert list(feats["user"]) == ["1", "2"] and list(feats["item"]) == ["10", "11"] and list(feats["day"]) == ["20", "20"]
    assert open_reader(data, "libfm", field_map=fmap).column_names == ["user", "item", "day"]
    bad_map = write(tmp_path / "bad_map.txt", "user:a\t1\nitem:x\t1\n")
    with pytest.raises(DataError, match="line 2"):
        LibSVMReader(data, field_map=bad_map)
    with pytest.raises(DataError, match="field:value"):
        LibSVMReader(data, field_map=write(tmp_path / "junk_map.txt", "nonsense\n"))
    named = LibSVMReader(data, field_names=["a", "b", "c"])
    assert named.column_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="not both"):
        LibSVMReader(data, field_map=fmap, field_names=["a", "b", "c"])


# --------------------------------------------------------------------------------------------------
# MIND impression logs
MIND_BEHAVIORS = (
    "1\tU1\t11/12/2019 2:14:46 PM\tN1 N2 N3\tN10-1 N11-0\n"
    "2\tU2\t11/13/2019 5:53:12 AM\t\tN11-0\n"
    "3\tU1\t11/9/2019 11:00:00 PM\tN1\tN12-0 N10-0 N13-1\n"
)
MIND_NEWS = "N10\tsports\tgolf\ttitle\tabstract\turl\t[]\t[]\nN11\tnews\tpolitics\tt\ta\tu\t[]\t[]\n"


def test_mind_rows_one_per_shown_article(tmp_path):
    write(tmp_path / "behaviors.tsv", MIND_BEHAVIORS)
    reader = MindReader(tmp_path / "behaviors.tsv")  # no news.tsv beside it: no category columns
    assert reader.column_names == ["user_id", "news_id", "hour", "weekday", "history_len", "history"]
    assert dict(reader.columns)["history"] == "list" and reader.shared_tables == {"history": "news_id"}
    assert reader.label == "click" and reader.news_path is None
    feats, labels, rows, n_chunks = read_all(reader, chunk_size=2)
    assert n_chunks == 3  # a line's impressions may straddle chunks
    np.testing.assert_array_equal(labels, [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(rows, np.arange(6))
    assert list(feats["user_id"]) == ["U1", "U1", "U2", "U1", "U1", "U1"]
    assert list(feats["news_id"]) == ["N10", "N11", "N11", "N12", "N10", "N13"]
    assert list(feats["hour"]) == ["14", "14", "5", "23", "23", "23"]
    assert list(feats["weekday"]) == ["1", "1", "2", "5", "5", "5"]  # 2019-11-12 was a Tuesday
    assert list(feats["history_len"]) == ["2", "2", "0", "1", "1", "1"]  # floor(log2(len + 1))
    assert list(feats["history"]) == ["N1 N2 N3", "N1 N2 N3", "", "N1", "N1", "N1"]  # as read, oldest first


def test_mind_news_file_beside_adds_categories(tmp_path):
    write(tmp_path / "behaviors.tsv", MIND_BEHAVIORS)
    write(tmp_path / "news.tsv", MIND_NEWS)
    reader = MindReader(tmp_path / "behaviors.tsv")
    assert reader.column_names == ["user_id", "news_id", "hour", "weekday", "category", "subcategory", "history_len",
                                   "history"]
    assert "news.tsv" in reader.description
    feats, _, _, _ = read_all(reader)
    assert list(feats["category"]) == ["sports", "news", "news", "", "sports", ""]
    assert list(feats["subcategory"]) == ["golf", "politics", "politics", "", "golf", ""]
    assert MindReader(tmp_path / "behaviors.tsv", news=None).column_names[-2:] == ["history_len", "history"]
    reader = open_reader(tmp_path / "behaviors.tsv", "MIND")
    assert isinstance(reader, MindReader) and reader.news_path is not None


@pytest.mark.parametrize(
    "line, message",
    [
        ("4\tU3\t11/12/2019 2:14:46 PM\tN1\n", "expected 5 tab-separated columns"),
        ("4\tU3\t2019-11-12 14:14\tN1\tN10-1\n", "is not 'M/D/YYYY h:mm:ss AM/PM'"),
        ("4\tU3\t11/12/2019 2:14:46 PM\tN1\tN10-2\n", "impression 'N10-2' is not 'NewsID-0' or 'NewsID-1'"),
        ("4\tU3\t11/12/2019 2:14:46 PM\tN1\tN10\n", "impression 'N10' is not"),
        ("4\tU3\t11/12/2019 2:14:46 PM\tN1\t \n", "lists no impressions"),
    ],
)
def test_mind_bad_lines(tmp_path, line, message):
    path = write(tmp_path / "behaviors.tsv", MIND_BEHAVIORS + line)
    with pytest.raises(DataError, match="line 4: ") as info:
        read_all(MindReader(path, news=None))
    assert message in str(info.value)
    reader = MindReader(path, news=None, on_error="skip")
    _, labels, _, _ = read_all(reader)
    assert len(labels) == 6 and reader.stats.skipped == 1


def test_mind_news_file_errors(tmp_path):
    write(tmp_path / "behaviors.tsv", MIND_BEHAVIORS)
    bad = write(tmp_path / "other_news.tsv", "N10\tsports\n")
    with pytest.raises(DataError, match="expected 'news_id<TAB>category<TAB>subcategory"):
        MindReader(tmp_path / "behaviors.tsv", news=bad)
    with pytest.raises(FileNotFoundError, match="no such data file: .*missing.tsv"):
        MindReader(tmp_path / "behaviors.tsv", news=tmp_path / "missing.tsv")


def test_mind_sample(shared_data):
    reader = MindReader(shared_data / "mind-small-5k" / "behaviors.tsv")
    assert reader.news_path is not None  # news.tsv sits beside behaviors.tsv
    _, labels, _, _ = read_all(reader, chunk_size=50_000)
    assert len(labels) == 189_359 and int(labels.sum()) == 7_542  # SOURCE.md


# --------------------------------------------------------------------------------------------------
# open_reader
def test_open_reader(shared_data, tmp_path):
    criteo = shared_data / "criteo" / "criteo_dac_train_first10k.txt"
    assert isinstance(open_reader(criteo, "criteo"), CriteoReader)
    assert isinstance(open_reader(str(criteo), "Criteo", label="label"), CriteoReader)
    assert isinstance(open_reader(shared_data / "avazu" / "avazu_train_first10k.csv", "avazu"), AvazuReader)
    assert isinstance(open_reader(shared_data / "frappe" / "frappe.test.libfm", "libfm"), LibSVMReader)
    assert isinstance(open_reader(shared_data / "frappe" / "frappe.test.libfm", "libsvm"), LibSVMReader)
    csv_reader = open_reader(shared_data / "criteo" / "deepctr_criteo_sample.csv", "csv", numeric=CRITEO_NUMERIC_COLUMNS)
    assert isinstance(csv_reader, CSVReader) and csv_reader.label == "label"
    skipping = open_reader(criteo, "criteo", on_error="skip")
    assert skipping.on_error == "skip"
    assert set(FORMATS) == {"criteo", "avazu", "csv", "libsvm", "libfm", "mind", "movielens", "parquet", "tfrecord"}

    with pytest.raises(ValueError, match="unknown data format 'orc'") as info:
        open_reader(criteo, "orc")
    for fmt in ("criteo", "avazu", "csv", "libsvm", "parquet", "tfrecord"):
        assert fmt in str(info.value)
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        open_reader(missing, "criteo")
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such data file: .*nope.txt"):
        open_reader([criteo, missing], "criteo")
    with pytest.raises(FileNotFoundError, match="no such data file: .*nope.txt"):
        CriteoReader(missing)
    with pytest.raises(ValueError, match="always 'click'"):
        open_reader(shared_data / "avazu" / "avazu_train_first10k.csv", "avazu", label="label")
    with pytest.raises(ValueError, match="field_map"):
        open_reader(criteo, "criteo", field_map=criteo)


def test_open_reader_parquet_and_tfrecord(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"label": [0, 1], "a": ["x", "y"]}), path)
    reader = open_reader(path, "parquet")
    assert isinstance(reader, ParquetReader) and reader.columns == [("a", "categorical")]
    tf = pytest.importorskip("tensorflow")
    rec = tmp_path / "t.tfrecord"
    with tf.io.TFRecordWriter(str(rec)) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "click": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
            "a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        })).SerializeToString())
    reader = open_reader(rec, "tfrecord", label="click")
    assert isinstance(reader, TFRecordReader)
    feats, labels, _, _ = read_all(reader)
    assert list(labels) == [1.0] and list(feats["a"]) == ["x"]


# --------------------------------------------------------------------------------------------------
# hygiene
def test_readers_do_not_import_tensorflow_or_keras_at_module_level():
    """Reading must stay light: tensorflow only inside TFRecordReader, keras nowhere."""
    for path in sorted(READERS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                root = mod.split(".")[0]
                assert root not in ("keras", "tf_keras"), f"{path.name} imports {mod}"
                if root == "tensorflow":
                    assert node.col_offset > 0, f"{path.name} imports tensorflow at module level"


def test_public_docstrings():
    import tfmec.data.readers as readers

    for name in readers.__all__:
        obj = getattr(readers, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
