"""Issue 10, bad input everywhere it enters: the readers, the command line and the serving signature.

Each bad input gets a clear error naming what is wrong (the file and line, the flag, the request field)
or the documented fallback (unseen and unknown values -> the OOV id 0, missing numerics -> NaN), never
a stack trace from inside TensorFlow. Property-based tests (hypothesis) on the readers and on
``QuantizedEmbedding``.
"""
import csv
import gzip
import io

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfmec import export
from tfmec.cli import main
from tfmec.data import CATEGORICAL, NUMERIC, DataError, Field, Schema, SyntheticCTR, load, open_reader
from tfmec.export import RequestError, predict_request
from tfmec.export.parity import keras_probabilities
from tfmec.layers import QuantizedEmbedding
from tfmec.layers.quantized_embedding import decode_codes
from tfmec.mec import compress_embeddings, learn_codes
from tfmec.models import DeepFM

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TF_INTERNALS = ("{{function_node", "[Op:", "Traceback", "tensorflow.python")


def criteo_line(label="1", ints=None, cats=None) -> str:
    ints = ["3"] * 13 if ints is None else ints
    cats = ["68fd1e64"] * 26 if cats is None else cats
    return "\t".join([label, *ints, *cats])


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _read_all(reader, chunk_size=64):
    return [c for c in reader.chunks(chunk_size)]


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _tfrecord_file(path: str, rows) -> str:
    with tf.io.TFRecordWriter(path) as writer:
        for label, value, x in rows:
            ex = tf.train.Example(features=tf.train.Features(feature={
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[value])),
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
            }))
            writer.write(ex.SerializeToString())
    return path


GARBAGE = np.random.default_rng(0).bytes(4096)
GOOD = (criteo_line() + "\n").encode()


def _bad_files(tmp_path):
    """``(case, path, format, reader kwargs, what the message must say, line or None)``."""
    import pyarrow as pa

    good_parquet = _parquet_bytes(pa.table({"label": [0, 1, 1], "a": ["x", "y", "z"], "x": [1.0, 2.0, 3.0]}))
    tfr = _tfrecord_file(str(tmp_path / "good.tfrecord"), [(1, b"x", 1.0)] * 5)
    tfr_bytes = open(tfr, "rb").read()
    cases = [
        ("criteo truncated last line", "t.txt", GOOD * 3 + GOOD[:40], "criteo", {}, "expected 40", 4),
        ("criteo wrong column count", "w.txt", GOOD + b"1\t2\t3\n", "criteo", {}, "got 3", 2),
        ("criteo binary garbage", "g.txt", GARBAGE, "criteo", {}, "not valid UTF-8", 1),
        ("criteo non-UTF-8 cell", "u.txt", GOOD + criteo_line(cats=["\udcff"] * 26).encode("utf-8", "surrogateescape")
         + b"\n", "criteo", {}, "not valid UTF-8", 2),
        ("criteo NaN count", "n.txt", (criteo_line(ints=["nan"] * 13) + "\n").encode(), "criteo", {},
         "'nan' is not a finite number", 1),
        ("criteo inf count", "i.txt", (criteo_line(ints=["inf"] * 13) + "\n").encode(), "criteo", {},
         "'inf' is not a finite number", 1),
        ("criteo text count", "x.txt", (criteo_line(ints=["abc"] * 13) + "\n").encode(), "criteo", {},
         "'abc' is not a number", 1),
        ("criteo label 2", "l.txt", (criteo_line(label="2") + "\n").encode(), "criteo", {}, "label '2' is not 0/1", 1),
        ("criteo empty label", "e.txt", (criteo_line(label="") + "\n").encode(), "criteo", {}, "label", 1),
        ("criteo empty file", "z.txt", b"", "criteo", {}, "no data rows", None),
        ("criteo gzip truncated", "t.txt.gz", gzip.compress(GOOD * 50)[:-30], "criteo", {},
         "truncated or corrupt compressed file", None),
        ("csv garbage after header", "g.csv", b"label,a,x\n" + GARBAGE, "csv", {"numeric": ["x"]}, "", 2),
        ("csv wrong column count", "w.csv", b"label,a,x\n1,q,2\n0,q\n", "csv", {"numeric": ["x"]}, "got 2", 3),
        ("csv NaN numeric", "n.csv", b"label,a,x\n1,q,NaN\n", "csv", {"numeric": ["x"]}, "not a finite number", 2),
        ("csv -inf numeric", "i.csv", b"label,a,x\n1,q,-inf\n", "csv", {"numeric": ["x"]}, "not a finite number", 2),
        ("csv label 0.5", "l.csv", b"label,a,x\n0.5,q,1\n", "csv", {"numeric": ["x"]}, "label '0.5' is not 0/1", 2),
        ("csv non-UTF-8 cell", "u.csv", b"label,a,x\n1,\xff\xfe,1\n", "csv", {"numeric": ["x"]}, "UTF-8", 2),
        ("csv header only", "h.csv", b"label,a,x\n", "csv", {"numeric": ["x"]}, "no data rows", None),
        ("avazu garbage", "g.av.csv", GARBAGE, "avazu", {}, "", None),
        ("avazu bad hour", "h.av.csv", b"id,click,hour,C1\n1,0,14102199,a\n", "avazu", {}, "hour", 2),
        ("avazu label 7", "l.av.csv", b"id,click,hour,C1\n1,7,14102100,a\n", "avazu", {}, "label '7'", 2),
        ("libsvm garbage", "g.svm", GARBAGE, "libsvm", {}, "", None),
        ("libsvm label 3", "l.svm", b"3 1:1 2:1\n", "libsvm", {}, "label '3'", 1),
        ("parquet garbage", "g.parquet", GARBAGE, "parquet", {}, "cannot read as Parquet", None),
        ("parquet truncated", "t.parquet", good_parquet[: len(good_parquet) // 2], "parquet", {},
         "cannot read as Parquet", None),
        ("parquet NaN float", "n.parquet", _parquet_bytes(pa.table({"label": [1], "a": ["x"], "x": [float("nan")]})),
         "parquet", {}, "not a finite number", 1),
        ("parquet label 2", "l.parquet", _parquet_bytes(pa.table({"label": [2], "a": ["x"], "x": [1.0]})), "parquet",
         {}, "not 0/1", 1),
        ("tfrecord garbage", "g.tfrecord", GARBAGE, "tfrecord", {}, "corrupted TFRecord", 1),
        ("tfrecord truncated", "t.tfrecord", tfr_bytes[:-7], "tfrecord", {}, "truncated record", 5),
    ]
    return [(name, _write(tmp_path, fname, data), fmt, kw, msg, line)
            for name, fname, data, fmt, kw, msg, line in cases]


def test_bad_files_raise_a_data_error_naming_file_and_line(tmp_path):
    cases = _bad_files(tmp_path)
    for name, path, fmt, kwargs, message, line in cases:
        with pytest.raises(DataError) as info:
            _read_all(open_reader(path, fmt, **kwargs))
        text = str(info.value)
        assert path in text, name
        assert message in text, (name, text)
        if line is not None:
            assert info.value.line == line, (name, text)
        assert not any(s in text for s in TF_INTERNALS), (name, text)


def test_bad_rows_are_skipped_and_counted_with_on_error_skip(tmp_path):
    lines = [criteo_line(), criteo_line(label="2"), "1\t2", criteo_line(ints=["nan"] * 13), criteo_line()]
    path = _write(tmp_path, "mixed.txt", ("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    reader = open_reader(path, "criteo", on_error="skip")
    assert sum(len(c) for c in _read_all(reader)) == 2
    assert reader.stats.skipped == 4 and len(reader.stats.examples) == 4


def test_documented_fallbacks_empty_strings_huge_values_and_long_strings(tmp_path):
    huge = ["1e308", "-1e308", "99999999999999999999999999", "0", "-5", "", "7", "3", "2", "1", "0", "0", "0"]
    long_value = "v" * 100_000
    lines = [criteo_line(ints=huge, cats=[""] * 25 + [long_value]), criteo_line(ints=[""] * 13)]
    path = _write(tmp_path, "edge.txt", ("\n".join(lines * 20) + "\n").encode())
    (chunk,) = _read_all(open_reader(path, "criteo"), chunk_size=1000)
    assert chunk.features["I1"][0] == 1e308 and chunk.features["I3"][0] == 1e26
    assert np.isnan(chunk.features["I6"][0]) and np.isnan(chunk.features["I1"][1])  # empty count -> NaN
    assert chunk.features["C1"][0] == "" and chunk.features["C26"][0] == long_value  # kept as values
    data = load(path, format="criteo", progress=False, min_count=1, fractions=(1.0, 0.0, 0.0), batch_size=40)
    features, labels = next(iter(data.train))
    for name, values in features.items():
        v = values.numpy()
        assert np.all(np.isfinite(v)), name
        if data.schema[name].is_categorical:
            assert v.min() >= 0 and v.max() < data.schema[name].vocab_size, name


def test_csv_values_with_quotes_separators_and_newlines_round_trip(tmp_path):
    rows = [["1", 'a "quoted", value', "x"], ["0", "line\nbreak", ""], ["1", "tab\there", "\u00e9\u4e2d"]]
    buf = io.StringIO()
    csv.writer(buf).writerows([["label", "a", "b"], *rows])
    path = _write(tmp_path, "q.csv", buf.getvalue().encode())
    (chunk,) = _read_all(open_reader(path, "csv", sep=","))
    assert list(chunk.features["a"]) == [r[1] for r in rows] and list(chunk.features["b"]) == [r[2] for r in rows]


# ----------------------------------------------------------------------------------- property-based: readers
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=12)


@PROPERTY
@given(rows=st.lists(st.tuples(st.sampled_from(["0", "1"]), SAFE_TEXT, st.floats(allow_nan=False,
                                                                                 allow_infinity=False)),
                     min_size=1, max_size=30))
def test_csv_reader_round_trips_any_text_and_finite_numbers(tmp_path_factory, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "a", "x"])
    writer.writerows([[y, a, repr(x)] for y, a, x in rows])
    path = _write(tmp_path_factory.mktemp("csv"), "p.csv", buf.getvalue().encode("utf-8"))
    chunks = _read_all(open_reader(path, "csv", sep=",", numeric=["x"]), chunk_size=7)
    assert [float(y) for y, _, _ in rows] == [float(v) for c in chunks for v in c.labels]
    assert [a for _, a, _ in rows] == [v for c in chunks for v in c.features["a"]]
    assert [x for _, _, x in rows] == [v for c in chunks for v in c.features["x"]]


@PROPERTY
@given(ints=st.lists(st.one_of(st.integers(-10**30, 10**30).map(str), st.just("")), min_size=13, max_size=13),
       cats=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x0b\x0c\x1c"
                                            "\x1d\x1e\x85\u2028\u2029"), max_size=10), min_size=26, max_size=26),
       label=st.sampled_from(["0", "1", "-1"]))
def test_criteo_reader_parses_any_valid_row_exactly(tmp_path_factory, ints, cats, label):
    path = _write(tmp_path_factory.mktemp("criteo"), "p.txt", (criteo_line(label, ints, cats) + "\n").encode())
    (chunk,) = _read_all(open_reader(path, "criteo"))
    assert chunk.labels[0] == (1.0 if label == "1" else 0.0)
    for i, text in enumerate(ints):
        value = chunk.features[f"I{i + 1}"][0]
        assert (np.isnan(value) if text == "" else value == float(text))
    assert [chunk.features[f"C{i + 1}"][0] for i in range(26)] == cats


@PROPERTY
@given(blob=st.binary(max_size=600), fmt=st.sampled_from(["criteo", "csv", "avazu", "libsvm", "parquet", "tfrecord"]))
def test_any_bytes_give_rows_or_a_data_error_never_another_exception(tmp_path_factory, blob, fmt):
    path = _write(tmp_path_factory.mktemp("bytes"), "blob", blob)
    kwargs = {"label": "label"} if fmt in ("csv", "parquet", "tfrecord") else {}
    try:
        reader = open_reader(path, fmt, **kwargs)
        chunks = _read_all(reader)
    except DataError as err:
        assert not any(s in str(err) for s in TF_INTERNALS)
        return
    for chunk in chunks:  # accepted: well-formed rows only
        assert set(np.unique(chunk.labels)) <= {0.0, 1.0}
        for name, kind in reader.columns:
            if kind == "numeric":
                values = chunk.features[name]
                assert np.all(np.isfinite(values) | np.isnan(values))


# ----------------------------------------------------------------------------------- property-based: QuantizedEmbedding
V, M, K, SUB = 7, 2, 4, 3


@pytest.fixture(scope="module")
def quantized_layers():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, size=(V, M))
    books = rng.normal(size=(M, K, SUB)).astype(np.float32)
    table = np.asarray(decode_codes(codes, books))
    layers = {"plain": QuantizedEmbedding(V, M, K, SUB, codes=codes, codebooks=books),
              "packed": QuantizedEmbedding(V, M, K, SUB, codes=codes, codebooks=books, bits=2),
              "oov3": QuantizedEmbedding(V, M, K, SUB, codes=codes, codebooks=books, oov_id=3)}
    return layers, table


@PROPERTY
@given(ids=st.one_of(
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
               elements=st.integers(-2**63, 2**63 - 1)),
    hnp.arrays(np.int32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
               elements=st.integers(-2**31, 2**31 - 1) | st.integers(-2, V + 2))),
    which=st.sampled_from(["plain", "packed", "oov3"]))
def test_quantized_embedding_any_int_id_any_batch_shape(quantized_layers, ids, which):
    layers, table = quantized_layers
    layer = layers[which]
    out = np.asarray(layer(tf.constant(ids)))
    assert out.shape == ids.shape + (M * SUB,)
    rows = np.where((ids >= 0) & (ids < V), ids, layer.oov_id)
    np.testing.assert_allclose(out, table[rows], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/missing.txt", "--format", "criteo"], "data file not found"),
    (["--data", "{tmp}", "--format", "criteo"], "is a folder"),
    (["--model", "deepfmm"], "unknown model 'deepfmm'"),
    (["--method", "none,mecc"], "unknown method 'mecc'"),
    (["--data", "synthetic", "--format", "criteo"], "--format criteo applies to data files"),
    (["--data", "{garbage}", "--format", "criteo", "--numeric", "I1"], "--numeric applies to --format csv only"),
    (["--data", "{garbage}", "--format", "avazu", "--label-threshold", "3"],
     "--label-threshold applies to --format csv"),
    (["--data", "{garbage}", "--format", "criteo", "--field-map", "{garbage}"],
     "--field-map applies to --format libsvm"),
    (["--method", "mec", "--subspaces", "3"], "--embedding-dim 16 is not divisible by --subspaces 3"),
    (["--method", "mec", "--codewords", "256", "--bits", "4"], "--bits 4 cannot hold 256 codewords"),
    (["--method", "afm", "--afm-energy", "1.5"], "--afm-energy must be in (0, 1]"),
    (["--hash-bytes", "1000"], "--hash-bytes applies to --method hash"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--checkpoint-dir", "{garbage}"], "--checkpoint-dir {garbage} is a file"),
    (["--data", "{garbage}", "--format", "criteo"], "line 1: line is not valid UTF-8"),
    (["--data", "{garbage}", "--format", "parquet", "--label", "y"], "cannot read as Parquet"),
    (["--data", "{garbage}", "--format", "tfrecord"], "corrupted TFRecord data"),
])
def test_cli_answers_bad_arguments_with_one_clear_line(args, message, tmp_path, capsys):
    garbage = _write(tmp_path, "garbage.bin", GARBAGE)
    fill = {"tmp": str(tmp_path), "garbage": garbage}
    code = main(["run", "--out", str(tmp_path / "out"), "--quiet", *[a.format(**fill) for a in args]])
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(**fill) in err
    assert err.startswith("tfmec: error: ") and not any(s in err for s in TF_INTERNALS)


# ----------------------------------------------------------------------------------- the serving signature
SERVING_SCHEMA = Schema([Field("I1", NUMERIC, "log_square"), Field("I2", NUMERIC)]
                        + [Field(f"C{i}", CATEGORICAL) for i in range(1, 5)])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A MEC-compressed DeepFM exported with its vocabularies, the loaded signatures and the encoder."""
    reader = SyntheticCTR(rows=1500, seed=0, vocab_sizes=[10, 100, 1000, 3000], num_numeric=2)
    data = load(reader, SERVING_SCHEMA, batch_size=256, progress=False)
    base = DeepFM(data.schema, embedding_dim=4, hidden_units=(8,), seed=0)
    codes = learn_codes(base, data.frequencies, num_subspaces=2, num_codewords=8, epochs=0,
                        fields=["C3", "C4"], progress=False)
    model = compress_embeddings(base, codes)
    path = export.saved_model(model, str(tmp_path_factory.mktemp("served") / "ctr"), data.encoder)
    loaded = tf.saved_model.load(path)
    return model, data.encoder, path, loaded


def _raw_row(categorical="68fd1e64", numeric=1.5) -> dict:
    return {f.name: (categorical if f.kind == CATEGORICAL else numeric) for f in SERVING_SCHEMA}


def _expected(model, encoder, rows: list) -> np.ndarray:
    """What the Keras model says on the rows encoded by the training-time encoder (NumPy path)."""
    columns = {f.source: np.asarray([r[f.name] for r in rows], dtype=object if f.kind == CATEGORICAL else np.float64)
               for f in SERVING_SCHEMA}
    return keras_probabilities(model, encoder.encode(columns))


def _predictions(response) -> np.ndarray:
    values = response.get("predictions", response.get("outputs"))
    return np.asarray(values, dtype=np.float32).reshape(-1)


def test_serving_batch_of_one_and_fallbacks_match_the_encoder(served):
    model, encoder, _, loaded = served
    known = encoder.vocabularies["C1"].token(1)
    cases = {
        "batch of one": _raw_row(known),
        "empty strings": _raw_row(""),
        "10 kB strings": _raw_row("x" * 10_240),
        "unseen values": _raw_row("never-seen-before"),
        "non-ASCII": _raw_row("\u00e9\u4e2d\U0001f600"),
        "missing numerics (NaN)": _raw_row(known, float("nan")),
        "huge numerics": _raw_row(known, 3.0e38),
    }
    for name, row in cases.items():
        got = _predictions(predict_request(loaded.signatures, {"instances": [row]}))
        assert got.shape == (1,) and np.isfinite(got).all(), name
        np.testing.assert_allclose(got, _expected(model, encoder, [row]), atol=1e-5, err_msg=name)
    unseen = _predictions(predict_request(loaded.signatures, {"instances": [cases["unseen values"]]}))
    long = _predictions(predict_request(loaded.signatures, {"instances": [cases["10 kB strings"]]}))
    assert unseen[0] == long[0]  # both are the OOV id everywhere


def test_serving_empty_batch_and_100k_rows(served):
    model, encoder, path, loaded = served
    empty = predict_request(loaded.signatures, {"inputs": {f.name: [] for f in SERVING_SCHEMA}})
    assert empty == {"outputs": []}
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    out = fn(**{k: tf.zeros([0], s.dtype) for k, s in specs.items()})["probability"]
    assert out.shape == (0, 1)
    with pytest.raises(RequestError, match="non-empty list"):
        predict_request(loaded.signatures, {"instances": []})
    rows = [_raw_row(encoder.vocabularies["C1"].token(1 + i % 3), float(i % 7)) for i in range(3)]
    n = 100_000
    columns = {f.name: [rows[i % 3][f.name] for i in range(n)] for f in SERVING_SCHEMA}
    got = _predictions(predict_request(loaded.signatures, {"inputs": columns}))
    assert got.shape == (n,)
    expected = _expected(model, encoder, rows)
    np.testing.assert_allclose(got, np.tile(expected, n // 3 + 1)[:n], atol=1e-5)
    raw = {k: np.asarray(v, dtype=object if specs[k].dtype == tf.string else np.float32) for k, v in columns.items()}
    np.testing.assert_allclose(export.predict_saved_model(path, raw, batch_size=32_768), got, atol=1e-6)


def test_serving_missing_or_unknown_fields_are_named(served):
    _, _, path, loaded = served
    row = _raw_row()
    del row["C2"]
    with pytest.raises(RequestError, match=r"missing inputs \['C2'\]"):
        predict_request(loaded.signatures, {"instances": [row]})
    with pytest.raises(RequestError, match=r"unknown inputs \['C9'\]"):
        predict_request(loaded.signatures, {"instances": [{**_raw_row(), "C9": "x"}]})
    columns = {f.name: ["a"] if f.kind == CATEGORICAL else [1.0] for f in SERVING_SCHEMA if f.name != "I2"}
    with pytest.raises(RequestError, match="missing inputs"):
        predict_request(loaded.signatures, {"inputs": columns})
    with pytest.raises(ValueError, match=r"missing \['I2'\]"):
        export.predict_saved_model(path, {k: np.asarray(v, dtype=object if k.startswith("C") else np.float32)
                                          for k, v in columns.items()})


def test_ids_signature_answers_unknown_ids_as_oov(served):
    model, encoder, _, loaded = served
    fn = loaded.signatures["ids"]
    specs = fn.structured_input_signature[1]
    oov = {k: tf.zeros([3], s.dtype) for k, s in specs.items()}
    bad = {k: (tf.constant([-1, 10**9, -(2**31)], s.dtype) if s.dtype.is_integer else tf.zeros([3], s.dtype))
           for k, s in specs.items()}
    np.testing.assert_array_equal(fn(**bad)["probability"].numpy(), fn(**oov)["probability"].numpy())
    response = predict_request(loaded.signatures, {"signature_name": "ids", "instances": [
        {k: (2**31 - 1 if s.dtype.is_integer else 0.0) for k, s in specs.items()}]})
    np.testing.assert_allclose(_predictions(response), fn(**oov)["probability"].numpy()[:1, 0], atol=1e-6)


def test_serving_errors_never_leak_tensorflow_internals(served):
    _, _, _, loaded = served
    bad_requests = [
        "not json", [], {"instances": [{**_raw_row(), "I1": "text for a float"}]},
        {"instances": [{**_raw_row(), "C1": 17}]}, {"instances": [_raw_row()], "inputs": {}},
        {"instances": [_raw_row()], "signature_name": "nope"},
        {"inputs": {f.name: [] for f in list(SERVING_SCHEMA)[:2]}},
    ]
    for body in bad_requests:
        with pytest.raises(RequestError) as info:
            predict_request(loaded.signatures, body)
        assert not any(s in str(info.value) for s in TF_INTERNALS), body
