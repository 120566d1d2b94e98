"""List (multi-valued) columns in the Parquet and TFRecord readers (issue 20)."""
from __future__ import annotations

import numpy as np
import pytest

from tfmec.data import DataError, load
from tfmec.data.readers import ParquetReader, TFRecordReader

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
tf = pytest.importorskip("tensorflow")


def _cells(reader, column):
    return [cell for chunk in reader.chunks(chunk_size=3) for cell in chunk.features[column]]


def _history(i: int) -> list:
    """Row ``i``'s history, oldest first: 0 to 3 of the items h0..h5 (rows 0 and 4 empty)."""
    return [f"h{(i + k) % 6}" for k in range(i % 4)]


def _check_end_to_end(data):
    """The default schema has the list field with max_length 50; batches are [batch, 50] int32 holding
    each row's history most recent first (checked row by row, through the vocabularies, on the training
    split, whose ``uid`` values are all in the vocabulary)."""
    (field,) = [f for f in data.schema.fields if f.name == "hist"]
    assert field.max_length == 50
    hist, uid = data.vocabularies[field.table], data.vocabularies["uid"]
    seen = 0
    for feats, _ in data.train:
        ids = feats["hist"].numpy()
        assert ids.dtype == np.int32 and ids.shape[1:] == (50,)
        for row, u in zip(ids, feats["uid"].numpy()):
            want = _history(int(uid.token(int(u))))[::-1]  # most recent first
            assert [hist.token(int(t)) for t in row[:len(want)]] == want
            assert not row[len(want):].any()
            seen += 1
    assert seen == data.rows["train"] > 20


# --------------------------------------------------------------------------------------------------
# Parquet
def _parquet(path, columns: dict, rows: int):
    table = pa.table({"label": pa.array([i % 2 for i in range(rows)], type=pa.int64()), **columns})
    pq.write_table(table, str(path), row_group_size=4)
    return path


def test_parquet_list_columns_are_lists_of_str_in_order(tmp_path):
    path = _parquet(tmp_path / "l.parquet", {
        "tags": pa.array([["a", "b"], None, [], ["c", None, "d"], ["a", "a"]], type=pa.list_(pa.string())),
        "ids": pa.array([[12, 7], [3], None, [None], [1, 2]], type=pa.list_(pa.int64())),
        "big": pa.array([["x"], ["y", "z"], [], None, ["w"]], type=pa.large_list(pa.string())),
        "n": pa.array([12, 7, 3, 4, 5], type=pa.int64()),
    }, 5)
    reader = ParquetReader(path, label="label")
    assert reader.columns == [("tags", "list"), ("ids", "list"), ("big", "list"), ("n", "numeric")]
    assert _cells(reader, "tags") == [["a", "b"], [], [], ["c", "d"], ["a", "a"]]
    assert _cells(reader, "ids") == [["12", "7"], ["3"], [], [], ["1", "2"]]  # ints as categorical ints are
    assert _cells(reader, "big") == [["x"], ["y", "z"], [], [], ["w"]]
    as_cat = ParquetReader(path, label="label", categorical=["n", "tags"])
    assert dict(as_cat.columns) == {"tags": "list", "ids": "list", "big": "list", "n": "categorical"}
    assert _cells(as_cat, "n")[:2] == ["12", "7"]  # the same rendering as the list items
    assert dict(ParquetReader(path, label="label", numeric=["n"]).columns)["tags"] == "list"
    with pytest.raises(ValueError, match="'tags' is a list column"):
        ParquetReader(path, label="label", numeric=["tags"])


def test_parquet_list_of_floats_is_refused_naming_the_column(tmp_path):
    path = _parquet(tmp_path / "f.parquet", {
        "c": pa.array(["a", "b"]),
        "scores": pa.array([[0.5, 1.0], [2.0]], type=pa.list_(pa.float64())),
    }, 2)
    with pytest.raises(DataError, match=r"column 'scores' is a list of double: only lists of strings.*drop=\['scores'\]"):
        ParquetReader(path, label="label")
    assert ParquetReader(path, label="label", drop=["scores"]).columns == [("c", "categorical")]


def test_parquet_list_item_too_long_or_not_utf8_is_a_bad_row(tmp_path):
    path = _parquet(tmp_path / "b.parquet", {
        "tags": pa.array([[b"a"], [b"ok", b"\xff"], [b"z"]], type=pa.list_(pa.binary())),
    }, 3)
    with pytest.raises(DataError, match=r"line 2: column 'tags': value is not valid UTF-8"):
        _cells(ParquetReader(path, label="label"), "tags")
    reader = ParquetReader(path, label="label", on_error="skip")
    assert _cells(reader, "tags") == [["a"], ["z"]] and reader.stats.skipped == 1


def test_parquet_tfio_engine_refuses_list_columns(tmp_path, monkeypatch):
    from tfmec.data.readers import tfio_engine

    monkeypatch.setattr(tfio_engine, "require_tfio", lambda: None)  # the message comes before any tfio use
    path = _parquet(tmp_path / "t.parquet", {"tags": pa.array([["a"]], type=pa.list_(pa.string()))}, 1)
    with pytest.raises(ValueError, match=r"list column\(s\) \['tags'\] need engine='pyarrow'"):
        ParquetReader(path, label="label", engine="tfio")


def test_parquet_load_end_to_end(tmp_path):
    rows = 40
    path = _parquet(tmp_path / "e.parquet", {
        "uid": pa.array([str(i) for i in range(rows)]),
        "hist": pa.array([_history(i) for i in range(rows)], type=pa.list_(pa.string())),
    }, rows)
    data = load(str(path), format="parquet", batch_size=8, min_count=1, progress=False)
    _check_end_to_end(data)


# --------------------------------------------------------------------------------------------------
# TFRecord
def _feature(values):
    if values is None:
        return None
    if values and isinstance(values[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if values and isinstance(values[0], int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def _tfrecord(path, records: list):
    with tf.io.TFRecordWriter(str(path)) as w:
        for rec in records:
            feats = {k: _feature(v) for k, v in rec.items() if v is not None}
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return path


def test_tfrecord_variable_length_features_are_lists_of_str_in_order(tmp_path):
    path = _tfrecord(tmp_path / "l.tfrecord", [
        {"label": [1], "tags": ["a"], "ids": [12], "c": ["x"], "x": [0.5]},
        {"label": [0], "tags": ["b", "c", "b"], "ids": [3, 4], "c": ["y"], "x": [1.0]},
        {"label": [1], "tags": [], "ids": None, "c": [], "x": []},  # empty / absent: [] (lists), ""/NaN
        {"label": [0], "tags": ["d"], "ids": [7], "c": ["z"], "x": [2.0]},
    ])
    reader = TFRecordReader(path, label="label")
    assert reader.columns == [("c", "categorical"), ("ids", "list"), ("tags", "list"), ("x", "numeric")]
    assert _cells(reader, "tags") == [["a"], ["b", "c", "b"], [], ["d"]]
    assert _cells(reader, "ids") == [["12"], ["3", "4"], [], ["7"]]  # as a categorical int64 renders them
    assert _cells(reader, "c") == ["x", "y", "", "z"]  # scalar features keep their rule
    declared = TFRecordReader(path, label="label", lists=["c"], categorical=["ids"])
    assert dict(declared.columns) == {"c": "list", "ids": "list", "tags": "list", "x": "numeric"}
    assert _cells(declared, "c") == [["x"], ["y"], [], ["z"]]
    with pytest.raises(ValueError, match="cannot be numeric"):
        TFRecordReader(path, label="label", lists=["c"], numeric=["c"])
    with pytest.raises(ValueError, match="'tags' holds several values in the first 4 records"):
        TFRecordReader(path, label="label", numeric=["tags"])
    with pytest.raises(ValueError, match="cannot be a list"):
        TFRecordReader(path, label="label", lists=["label"])


def test_tfrecord_list_declared_but_absent_from_the_first_example(tmp_path):
    path = _tfrecord(tmp_path / "a.tfrecord", [
        {"label": [1], "c": ["x"]},
        {"label": [0], "c": ["y"], "tags": ["p"]},
    ])
    assert TFRecordReader(path, label="label").columns == [("c", "categorical")]
    reader = TFRecordReader(path, label="label", lists=["tags"])
    assert reader.columns == [("c", "categorical"), ("tags", "list")]
    assert _cells(reader, "tags") == [[], ["p"]]
    with pytest.raises(DataError, match=r"\['nope'\] not found in the first 2 records"):
        TFRecordReader(path, label="label", lists=["nope"])


def test_tfrecord_float_list_is_refused(tmp_path):
    path = _tfrecord(tmp_path / "f.tfrecord", [
        {"label": [1], "c": ["x"], "scores": [0.5]},
        {"label": [0], "c": ["y"], "scores": [0.5, 1.5]},
    ])
    with pytest.raises(DataError, match=r"feature 'scores' is a float_list: only bytes_list and int64_list"):
        TFRecordReader(path, label="label", lists=["scores"])
    reader = TFRecordReader(path, label="label")  # several floats: never a list, a bad row
    assert dict(reader.columns)["scores"] == "numeric"
    with pytest.raises(DataError, match=r"line 2: feature 'scores' has 2 values; a float_list feature must be "
                                        r"single-valued \(only bytes_list and int64_list features can be lists\)"):
        _cells(reader, "scores")


def test_tfrecord_several_values_beyond_the_window_name_file_record_and_fix(tmp_path, monkeypatch):
    from tfmec.data.readers import tfrecord

    monkeypatch.setattr(tfrecord, "INFER_RECORDS", 2)
    path = _tfrecord(tmp_path / "w.tfrecord", [
        {"label": [1], "c": ["x"]},
        {"label": [0], "c": ["y"]},
        {"label": [1], "c": ["z", "w"]},
    ])
    reader = TFRecordReader(path, label="label")
    assert reader.columns == [("c", "categorical")]
    with pytest.raises(DataError, match=rf"{path}, line 3: feature 'c' has 2 values, but it is read as "
                                        r"single-valued .*first 2 .*lists=\['c'\]"):
        _cells(reader, "c")
    assert _cells(TFRecordReader(path, label="label", lists=["c"]), "c") == [["x"], ["y"], ["z", "w"]]
    bad_label = _tfrecord(tmp_path / "y.tfrecord", [{"label": [1], "c": ["x"]}, {"label": [0, 1], "c": ["y"]}])
    with pytest.raises(DataError, match="line 2: label feature 'label' has 2 values; the label must be single"):
        _cells(TFRecordReader(bad_label, label="label"), "c")


def test_tfrecord_load_end_to_end(tmp_path):
    rows = 40
    records = [{"label": [i % 2], "uid": [str(i)], "hist": _history(i) or None} for i in range(rows)]
    path = _tfrecord(tmp_path / "e.tfrecord", records)
    data = load(str(path), format="tfrecord", batch_size=8, min_count=1, progress=False)
    _check_end_to_end(data)
