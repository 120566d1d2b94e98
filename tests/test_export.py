"""tfmec.export: SavedModel (two signatures, vocabulary assets, atomic versions), ONNX, REST requests."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmec import afm, export
from tfmec.data import CATEGORICAL, NUMERIC, Field, FeatureEncoder, Schema, SyntheticCTR, Vocabulary, load
from tfmec.data import load_vocabularies
from tfmec.evaluation import model_bytes
from tfmec.export.parity import keras_probabilities, raw_from_ids
from tfmec.layers import QuantizedEmbedding
from tfmec.mec import compress_embeddings, learn_codes
from tfmec.models import DeepFM, LR

SM_TOL, ONNX_TOL = 1e-6, 1e-5
MEC_FIELDS = ["C3", "C4", "C5", "linear_C5"]
# Criteo's layout in small (few fields keep the ONNX conversions quick): counts bucketised in-graph
CRITEO_LIKE = Schema([Field(f"I{i}", NUMERIC, "log_square") for i in (1, 2, 3)]
                     + [Field(f"C{i}", CATEGORICAL) for i in range(1, 6)])


def _raw_rows(reader, schema, n):
    """The first ``n`` raw rows as serving inputs ``{field: array}`` and as reader columns."""
    chunk = next(reader.chunks(n))
    raw = {f.name: (chunk.features[f.source].astype(np.float32) if f.kind == NUMERIC
                    else chunk.features[f.source].astype(str).astype(object)) for f in schema}
    return raw, chunk.features


@pytest.fixture(scope="module")
def criteo_like():
    """Criteo-shaped synthetic data (I1-I3 bucketised in-graph, C1-C5 strings) and six models."""
    reader = SyntheticCTR(rows=1500, seed=0, vocab_sizes=[10, 100, 1000, 3000, 10**5], num_numeric=3)
    data = load(reader, CRITEO_LIKE, batch_size=256, progress=False)
    base = DeepFM(data.schema, embedding_dim=8, hidden_units=(32, 16), seed=0)
    base.compile("adam", "binary_crossentropy")
    base.fit(data.train, epochs=1, verbose=0)
    codes = learn_codes(base, data.frequencies, num_subspaces=4, num_codewords=16, epochs=0, fields=MEC_FIELDS,
                        progress=False)
    mec = compress_embeddings(base, codes)
    mec4 = compress_embeddings(base, codes, bits=4)
    mec5 = compress_embeddings(base, codes, bits=5)  # codes straddle bytes: the byte-window unpacking
    small, _ = afm.compress(base, data.train.take(2), energy=0.9)
    both, _ = afm.compress(mec4, data.train.take(2), energy=0.9)
    models = {"baseline": base, "mec": mec, "mec_bits4": mec4, "mec_bits5": mec5, "afm": small, "mec+afm": both}
    raw, columns = _raw_rows(reader, data.schema, 300)
    return data, models, raw, data.encoder.encode(columns)


@pytest.fixture(scope="module")
def exported(criteo_like, tmp_path_factory):
    """The baseline exported once (SavedModel version 1 + ONNX), shared by several tests."""
    data, models, _, _ = criteo_like
    base_dir = str(tmp_path_factory.mktemp("export") / "ctr")
    path = export.saved_model(models["baseline"], base_dir, data.encoder)
    return path


@pytest.mark.parametrize("kind", ["baseline", "mec", "mec_bits4", "mec_bits5", "afm", "mec+afm"])
def test_saved_model_and_onnx_match_keras(criteo_like, kind, tmp_path):
    data, models, raw, ids = criteo_like
    model = models[kind]
    path = export.saved_model(model, str(tmp_path / "sm"), data.encoder)
    assert path == str(tmp_path / "sm" / "1")
    onnx_path = export.onnx(model, str(tmp_path / "model.onnx"), data.encoder)
    # serving_default on the raw rows (strings / raw counts, preprocessing in-graph) against Keras on
    # the NumPy encoding of the same rows; ids and ONNX on the encoded rows
    report = export.check_parity(model, ids, saved_model_path=path, onnx_path=onnx_path, encoder=data.encoder,
                                 raw=raw)
    assert report["parity_rows"] == len(raw["C1"])
    assert report["saved_model_serving_default_max_abs_diff"] <= SM_TOL
    assert report["saved_model_ids_max_abs_diff"] <= SM_TOL
    assert report["saved_model_max_abs_diff"] <= SM_TOL
    assert report["onnx_max_abs_diff"] <= ONNX_TOL


def _checkpoint_bytes(path):
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return {k: (int(np.prod(shapes[k])) * dtypes[k].size, dtypes[k], shapes[k]) for k in shapes
            if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _largest_constant(path) -> int:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        proto.ParseFromString(fh.read())
    graph = proto.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    sizes = [int(np.prod([d.size for d in n.attr["value"].tensor.tensor_shape.dim] or [1]))
             for n in nodes if n.op == "Const" and n.attr["dtype"].type != tf.string.as_datatype_enum]
    return max(sizes)


def test_packed_codes_stay_packed_and_nothing_is_folded_into_constants(criteo_like, tmp_path):
    data, models, _, _ = criteo_like
    model = models["mec_bits4"]
    path = export.saved_model(model, str(tmp_path / "sm"), data.encoder)
    stored = _checkpoint_bytes(path)
    # the checkpoint holds exactly the model's weights at their stored dtypes (no optimizer state)
    assert sum(b for b, _, _ in stored.values()) == model_bytes(model)
    layer = model.get_layer("embedding_C5")
    assert isinstance(layer, QuantizedEmbedding) and layer.bits == 4
    codes = [(dtype, shape) for key, (_, dtype, shape) in stored.items() if "embedding_C5" in key and "codes" in key]
    assert codes == [(tf.uint8, [layer.input_dim, 2])]  # M=4 codes of 4 bits in 2 bytes per id
    # the graph reads variables; no table (or anything of a table's size) is a numeric constant
    assert _largest_constant(path) < min(layer.input_dim * layer.num_subspaces, 64)


def test_unknown_values_go_to_oov(criteo_like, exported):
    data, models, raw, _ = criteo_like
    n = 4
    request = {k: v[:n].copy() for k, v in raw.items()}
    request["C1"] = np.asarray(["never-seen", "", "x\ty", "\u00e9\n"], dtype=object)
    request["I1"] = np.asarray([np.nan, np.inf, -5.0, 1e30], dtype=np.float32)
    got = export.predict_saved_model(exported, request)
    ids = export.encode_raw(data.encoder, request)
    assert ids["C1"].tolist() == [0, 0, 0, 0]
    want = keras_probabilities(models["baseline"], ids)
    assert export.max_abs_diff(got, want) <= SM_TOL
    # and the OOV row really is id 0
    oov = dict(ids, C1=np.zeros(n, np.int32))
    np.testing.assert_allclose(got, keras_probabilities(models["baseline"], oov), atol=SM_TOL)


TRICKY = ["", "a\tb", "x\ny", "cr\r", "\u00e9t\u00e9", "plain", " spaced ", "k", "=="]


@pytest.fixture(scope="module")
def tiny():
    """An LR model on one string field whose vocabulary holds awkward tokens, and one numeric field."""
    vocab = Vocabulary("c", min_count=1)
    vocab.update(np.asarray(TRICKY * 2, dtype=object))
    vocab.finalize()
    schema = Schema([Field("c", CATEGORICAL, vocab_size=vocab.size), Field("x", NUMERIC, "log1p")])
    encoder = FeatureEncoder(schema, {"c": vocab})
    encoder.numeric_stats["x"].update(np.asarray([0.0, 1.0, 10.0, 100.0]))
    request = {"c": np.asarray(TRICKY + ["unseen"], dtype=object),
               "x": np.asarray([0, 1, -2, 3.5, np.nan, 1e6, -1e-3, 7, 8, 9], dtype=np.float32)}
    return LR(schema, seed=0), encoder, request


def test_tricky_tokens_round_trip_through_the_asset_files(tiny, tmp_path):
    model, encoder, request = tiny
    vocab = encoder.vocabularies["c"]
    path = export.saved_model(model, str(tmp_path / "m"), encoder)
    ids = export.encode_raw(encoder, request)
    assert ids["c"][:-1].tolist() == vocab.lookup(np.asarray(TRICKY, dtype=object)).tolist()
    assert sorted(ids["c"][:-1].tolist()) == list(range(1, len(TRICKY) + 1)) and ids["c"][-1] == 0
    got = export.predict_saved_model(path, request)
    assert export.max_abs_diff(got, keras_probabilities(model, ids)) <= SM_TOL
    # the vocabulary given as a {field: Vocabulary} dict: numeric inputs pass through unchanged
    path2 = export.saved_model(model, str(tmp_path / "m"), {"c": vocab})
    assert path2.endswith(os.sep + "2")
    plain = {"c": request["c"], "x": np.asarray(ids["x"], np.float32)}
    assert export.max_abs_diff(export.predict_saved_model(path2, plain), keras_probabilities(model, ids)) <= SM_TOL
    # no vocabulary: serving_default is the ids signature
    path3 = export.saved_model(model, str(tmp_path / "m"))
    assert export.max_abs_diff(export.predict_saved_model(path3, ids), keras_probabilities(model, ids)) <= SM_TOL


def test_numeric_fields_are_transformed_and_standardised_in_graph(tmp_path):
    reader = SyntheticCTR(rows=600, seed=3, vocab_sizes=[7, 60], num_numeric=3)
    data = load(reader, batch_size=128, progress=False)
    assert [f.transform for f in data.schema.numeric] == ["log1p"] * 3
    model = DeepFM(data.schema, embedding_dim=4, hidden_units=(8,), seed=1)
    raw, columns = _raw_rows(reader, data.schema, 200)
    raw["I1"][:3] = [np.nan, -4.0, 1e7]
    columns = dict(columns, I1=raw["I1"].astype(np.float64))
    path = export.saved_model(model, str(tmp_path / "sm"), data.encoder)
    want = keras_probabilities(model, data.encoder.encode(columns))
    assert export.max_abs_diff(export.predict_saved_model(path, raw), want) <= SM_TOL
    # raw values rebuilt from ids encode back to the same ids (what `tfmec run` checks on test rows)
    ids = data.encoder.encode(columns)
    back = export.encode_raw(data.encoder, raw_from_ids(data.encoder, ids))
    for f in data.schema.categorical:
        np.testing.assert_array_equal(back[f.name], ids[f.name])
    for f in data.schema.numeric:
        np.testing.assert_allclose(back[f.name], ids[f.name], atol=1e-5)


def test_versions_are_atomic_and_a_failed_export_leaves_no_trace(tiny, tmp_path, monkeypatch):
    model, encoder, request = tiny
    base_dir = str(tmp_path / "ctr")
    os.makedirs(os.path.join(base_dir, "notes"))  # not a version: ignored
    first = export.saved_model(model, base_dir, encoder)
    assert first == os.path.join(base_dir, "1") and export.existing_versions(base_dir) == [1]
    before = export.predict_saved_model(first, request)
    files_before = sorted(os.listdir(first))

    real_save = tf.saved_model.save

    def save_then_fail(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)  # half the work is on disk ...
        assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
        raise OSError("disk full")  # ... when the export dies

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.saved_model(model, base_dir, encoder)
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    assert sorted(os.listdir(base_dir)) == ["1", "notes"]  # no partial version, no temporary folder
    assert sorted(os.listdir(first)) == files_before
    np.testing.assert_array_equal(export.predict_saved_model(first, request), before)

    assert export.saved_model(model, base_dir, encoder) == os.path.join(base_dir, "2")
    with pytest.raises(FileExistsError):
        export.saved_model(model, base_dir, encoder, version=1)
    assert export.saved_model(model, base_dir, encoder, version=7).endswith("7")
    assert export.next_version(base_dir) == 8
    assert not [n for n in os.listdir(base_dir) if n.startswith(".")]


def _row_payload(raw, rows):
    def value(v):
        return v if isinstance(v, str) else (None if math.isnan(v) else float(v))

    instances = []
    for i in rows:
        inst = {}
        for name, col in raw.items():
            v = value(col[i])
            inst[name] = "NaN" if v is None else v
        instances.append(inst)
    # NaN as the JSON literal NaN (TF Serving accepts it); json.dumps writes it for float('nan')
    text = json.dumps({"instances": instances}).replace('"NaN"', "NaN")
    return text


def test_rest_row_and_column_requests_like_tf_serving(criteo_like, exported):
    data, models, raw, ids = criteo_like
    loaded = tf.saved_model.load(exported)
    rows = range(5)
    p_keras = keras_probabilities(models["baseline"], {k: v[:5] for k, v in ids.items()})
    # row form, as JSON text with NaN literals for missing counts
    body = _row_payload(raw, rows)
    assert '"C1": "' in body
    response = export.predict_request(loaded.signatures, body)
    preds = np.asarray(response["predictions"], np.float64)
    assert preds.shape == (5, 1)
    np.testing.assert_allclose(preds[:, 0], p_keras, atol=SM_TOL)
    # column form
    columns = {k: [(x if isinstance(x, str) else float(x)) for x in v[:5]] for k, v in raw.items()}
    response = export.predict_request(loaded.signatures, {"inputs": columns})
    np.testing.assert_allclose(np.asarray(response["outputs"])[:, 0], p_keras, atol=SM_TOL)
    # the ids signature by name, integers for the ids
    id_rows = [{k: int(v[i]) for k, v in ids.items()} for i in rows]
    response = export.predict_request(loaded.signatures, {"signature_name": "ids", "instances": id_rows})
    np.testing.assert_allclose(np.asarray(response["predictions"])[:, 0], p_keras, atol=SM_TOL)
    # binary strings as {"b64": ...}
    specs = {"c": tf.TensorSpec([None], tf.string)}
    arrays, form = export.request_to_inputs({"instances": [{"c": {"b64": "aGk="}}, {"c": "yo"}]}, specs)
    assert form == "row" and arrays["c"].tolist() == [b"hi", b"yo"]


@pytest.mark.parametrize("payload, message", [
    ({"instances": [{"a": "x", "n": 1.0, "i": 1}], "inputs": {"a": ["x"], "n": [1.0], "i": [1]}}, "exactly one of"),
    ({}, "exactly one of"),
    ({"instances": [{"a": "x", "i": 1}]}, "missing inputs ['n']"),
    ({"instances": [{"a": "x", "n": 1.0, "i": 1, "z": 2}]}, "unknown inputs ['z']"),
    ({"instances": [{"a": 5, "n": 1.0, "i": 1}]}, "expected a string"),
    ({"instances": [{"a": "x", "n": "1.0", "i": 1}]}, "expected a number"),
    ({"instances": [{"a": "x", "n": 1.0, "i": 2.0}]}, "expected an integer"),
    ({"instances": [{"a": "x", "n": True, "i": 2}]}, "expected a number"),
    ({"instances": [{"a": {"b64": "%%"}, "n": 1.0, "i": 2}]}, "invalid base64"),
    ({"instances": []}, "non-empty list"),
    ({"inputs": {"a": ["x", "y"], "n": [1.0], "i": [1, 2]}}, "different batch sizes"),
    ({"inputs": {"a": "x", "n": 1.0, "i": 1}}, "does not fit"),
    ({"instances": [{"a": ["x"], "n": 1.0, "i": 1}]}, "does not fit"),
    ("{not json", "not valid JSON"),
])
def test_rest_requests_tf_serving_would_reject(payload, message):
    specs = {"a": tf.TensorSpec([None], tf.string), "n": tf.TensorSpec([None], tf.float32),
             "i": tf.TensorSpec([None], tf.int32)}
    with pytest.raises(export.RequestError) as err:
        export.request_to_inputs(payload, specs)
    assert message in str(err.value)


def test_rest_response_formats():
    out = {"probability": np.asarray([[0.25], [0.5]], np.float32)}
    assert export.format_response(out, "row") == {"predictions": [[0.25], [0.5]]}
    assert export.format_response(out, "column") == {"outputs": [[0.25], [0.5]]}
    two = dict(out, logit=np.asarray([[1.0], [2.0]], np.float32))
    assert export.format_response(two, "row")["predictions"][1] == {"probability": [0.5], "logit": [2.0]}


def _saved_model_cli():
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [script] if os.path.exists(script) else [shutil.which("saved_model_cli") or "saved_model_cli"]


def test_saved_model_cli_lists_both_signatures(exported):
    result = subprocess.run([*_saved_model_cli(), "show", "--all", "--dir", exported], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)(?=\nsignature_def\[|\nThe MetaGraph|\Z)", text, re.S))
    assert {"serving_default", "ids"} <= set(blocks)

    def tensor(block, kind, name):
        m = re.search(rf"{kind}\['{re.escape(name)}'\] tensor_info:\n\s+dtype: (\w+)\n\s+shape: (.+)", block)
        assert m, f"{kind} {name} not listed"
        return m.group(1), m.group(2)

    raw, ids = blocks["serving_default"], blocks["ids"]
    assert tensor(raw, "inputs", "C1") == ("DT_STRING", "(-1)")
    assert tensor(raw, "inputs", "I1") == ("DT_FLOAT", "(-1)")  # raw count, bucketised in-graph
    assert tensor(ids, "inputs", "C1") == ("DT_INT32", "(-1)")
    assert tensor(ids, "inputs", "I1") == ("DT_INT32", "(-1)")
    for block in (raw, ids):
        assert len(re.findall(r"inputs\['", block)) == len(CRITEO_LIKE)
        assert tensor(block, "outputs", "probability") == ("DT_FLOAT", "(-1, 1)")


def test_onnx_vocabulary_beside_the_model(criteo_like, tmp_path):
    import onnxruntime as ort

    data, models, _, _ = criteo_like
    path = export.onnx(models["mec_bits4"], str(tmp_path / "ctr.onnx"), data.encoder)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in session.get_inputs()} == {f.name: "tensor(int32)" for f in data.schema}
    assert [o.name for o in session.get_outputs()] == ["probability"]
    vocab_file = export.vocabulary_path(path)
    assert vocab_file == str(tmp_path / "ctr.vocabulary.json")
    vocabs, _ = load_vocabularies(vocab_file)
    assert {k: v.tokens for k, v in vocabs.items()} == {k: v.tokens for k, v in data.encoder.vocabularies.items()}
    assert json.load(open(vocab_file))["schema"]["fields"][0]["transform"] == "log_square"


def test_tfmec_run_exports_every_method(tmp_path):
    from tfmec.cli import main

    out = tmp_path / "run"
    args = ["run", "--data", "synthetic", "--rows", "800", "--model", "lr", "--method", "none", "--epochs", "1",
            "--batch-size", "256", "--quiet", "--out", str(out)]
    assert main(args) == 0
    (run,) = json.loads((out / "metrics.json").read_text())["runs"]
    assert (out / "baseline" / "saved_model" / "1" / "saved_model.pb").exists()
    assert (out / "baseline" / "model.onnx").exists() and (out / "baseline" / "model.vocabulary.json").exists()
    assert run["saved_model_bytes"] > 0 and run["onnx_bytes"] > 0 and run["parity_rows"] > 0
    assert run["saved_model_max_abs_diff"] <= SM_TOL and run["onnx_max_abs_diff"] <= ONNX_TOL
    assert run["saved_model_path"] == os.path.join("saved_model", "1")
    # --no-export turns it off
    from tfmec.cli import build_parser

    assert build_parser().parse_args([*args, "--no-export"]).no_export is True
    assert build_parser().parse_args(args).no_export is False
