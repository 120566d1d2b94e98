"""tfmec.export on models users write: their own input structure and shapes, preprocessing layers inside.

Each model is exported as it is (no encoder): the SavedModel's ``serving_default`` takes the model's own
inputs (raw strings where the model takes strings) and must equal ``model.predict`` within 1e-6; ONNX
within 1e-5 from the same raw values (lookups applied directly to inputs are moved out of the graph and
applied from the JSON beside it), or a refusal naming the layer. Signatures refuse wrong ranks and
mismatched batch sizes in-graph.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.backend import keras

SM_TOL, ONNX_TOL = 1e-6, 1e-5
N = 48
VOCAB = ["red", "green", "blue", "cyan", "teal"]


def _rng():
    return np.random.RandomState(0)


def _strings(rng, shape, pool=VOCAB + ["never-seen", ""]):
    return np.asarray(rng.choice(pool, size=shape), dtype=object)


def _tutorial(shape):
    """The tutorials' model: string inputs -> StringLookup -> Embedding, plus a float input."""
    keras.utils.set_random_seed(0)
    color = keras.Input(shape=shape, dtype="string", name="color")
    shop = keras.Input(shape=shape, dtype="string", name="shop")
    price = keras.Input(shape=shape or (1,), dtype="float32", name="price")
    e1 = keras.layers.Embedding(len(VOCAB) + 1, 4, name="emb_color")(
        keras.layers.StringLookup(vocabulary=VOCAB, name="lookup_color")(color))
    e2 = keras.layers.Embedding(len(VOCAB) + 2, 4, name="emb_shop")(
        keras.layers.StringLookup(vocabulary=VOCAB, mask_token="", name="lookup_shop")(shop))
    if shape:
        e1, e2 = keras.layers.Flatten()(e1), keras.layers.Flatten()(e2)
    x = keras.layers.Concatenate()([e1, e2, price])
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8, activation="relu")(x))
    model = keras.Model({"color": color, "shop": shop, "price": price}, out)
    rng = _rng()
    data = {"color": _strings(rng, (N, *shape)), "shop": _strings(rng, (N, *shape)),
            "price": rng.normal(size=(N, *(shape or (1,)))).astype(np.float32)}
    return model, data


def _integer_lookup():
    keras.utils.set_random_seed(1)
    item = keras.Input(shape=(), dtype="int64", name="item_id")
    slot = keras.Input(shape=(), dtype="int32", name="slot")
    e1 = keras.layers.Embedding(6, 4)(keras.layers.IntegerLookup(vocabulary=[101, 205, 307, 999, 42], name="items")(item))
    e2 = keras.layers.Embedding(4, 4)(slot)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Concatenate()([e1, e2]))
    model = keras.Model({"item_id": item, "slot": slot}, out)
    rng = _rng()
    data = {"item_id": rng.choice([101, 205, 307, 999, 42, 7, -1, 0], size=N).astype(np.int64),
            "slot": rng.randint(0, 4, size=N).astype(np.int32)}
    return model, data


def _hashing():
    keras.utils.set_random_seed(2)
    query = keras.Input(shape=(1,), dtype="string", name="query")
    ids = keras.layers.Hashing(num_bins=16, name="hash_query")(query)
    x = keras.layers.Flatten()(keras.layers.Embedding(16, 4)(ids))
    model = keras.Model(query, keras.layers.Dense(1, activation="sigmoid")(x))
    return model, {"query": _strings(_rng(), (N, 1), VOCAB + [f"q{i}" for i in range(20)])}


def _deepctr():
    """DeepCTR style: a list of [batch, 1] inputs, user layer names (sparse_emb_C1, ...)."""
    keras.utils.set_random_seed(3)
    sparse = [keras.Input(shape=(1,), dtype="int32", name=f"C{i}") for i in (1, 2)]
    dense = keras.Input(shape=(1,), dtype="float32", name="I1")
    embs = [keras.layers.Flatten()(keras.layers.Embedding(10, 4, name=f"sparse_emb_C{i}")(x))
            for i, x in zip((1, 2), sparse)]
    x = keras.layers.Concatenate()(embs + [dense])
    out = keras.layers.Dense(1, activation="sigmoid", name="prediction_layer")(
        keras.layers.Dense(8, activation="relu", name="dnn_0")(x))
    model = keras.Model(sparse + [dense], out)
    rng = _rng()
    data = {"C1": rng.randint(0, 10, (N, 1)).astype(np.int32), "C2": rng.randint(0, 10, (N, 1)).astype(np.int32),
            "I1": rng.normal(size=(N, 1)).astype(np.float32)}
    return model, data


def _history():
    """A padded click history [batch, 20] (0 = padding, masked) averaged, plus the user id."""
    keras.utils.set_random_seed(4)
    hist = keras.Input(shape=(20,), dtype="int32", name="hist")
    user = keras.Input(shape=(), dtype="int32", name="user")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4, mask_zero=True, name="items")(hist))
    x = keras.layers.Concatenate()([pooled, keras.layers.Embedding(7, 4)(user)])
    model = keras.Model({"hist": hist, "user": user}, keras.layers.Dense(1, activation="sigmoid")(x))
    rng = _rng()
    h = rng.randint(1, 50, (N, 20)).astype(np.int32)
    h[np.arange(20)[None, :] >= rng.randint(1, 21, (N, 1))] = 0  # histories of 1-20 items, padded
    return model, {"hist": h, "user": rng.randint(0, 7, N).astype(np.int32)}


MODELS = {"tutorial_batch": lambda: _tutorial(()), "tutorial_batch_1": lambda: _tutorial((1,)),
          "integer_lookup": _integer_lookup, "hashing": _hashing, "deepctr": _deepctr, "history": _history}
# ONNX: None = parity from raw values; else the refusal's message
ONNX_REFUSAL = {"hashing": r"layer 'hash_query' \(Hashing\).*saved_model"}


def _predict(model, data):
    """model.predict on the inputs in the structure the model was built with."""
    tensors = {k: tf.constant(v) for k, v in data.items()}
    if isinstance(model.input, (list, tuple)):
        x = [tensors[export.signature.input_name(t)] for t in model.inputs]
    elif isinstance(model.input, dict):
        x = tensors
    else:
        (x,) = tensors.values()
    return model.predict(x, verbose=0).reshape(-1)


@pytest.fixture(scope="module")
def built():
    return {name: make() for name, make in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_saved_model_serves_the_models_own_inputs(built, name, tmp_path):
    model, data = built[name]
    want = _predict(model, data)
    path = export.saved_model(model, str(tmp_path / "sm"))
    signature = tf.saved_model.load(path).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    # the signature is the model's own inputs: names, dtypes, shapes as declared with batch None
    assert {k: (s.dtype, s.shape.as_list()) for k, s in specs.items()} == {
        name: (tf.as_dtype(t.dtype), [None, *t.shape[1:]]) for name, t in export.signature.named_inputs(model)}
    got = signature(**{k: tf.constant(v) for k, v in data.items()})["probability"].numpy()
    assert got.shape == (N, 1)
    assert np.abs(got[:, 0] - want).max() <= SM_TOL
    assert export.max_abs_diff(export.predict_saved_model(path, data, batch_size=20), want) <= SM_TOL
    if len(data) == 1:  # a one-input model: the bare array
        assert export.max_abs_diff(export.predict_saved_model(path, next(iter(data.values()))), want) <= SM_TOL
    meta = json.load(open(os.path.join(path, "assets.extra", "tfmec.json")))
    assert meta["signatures"]["serving_default"] == {k: {"dtype": s.dtype.name, "shape": s.shape.as_list()}
                                                     for k, s in specs.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_from_raw_values_or_a_clear_refusal(built, name, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    model, data = built[name]
    path = str(tmp_path / "m.onnx")
    if name in ONNX_REFUSAL:
        with pytest.raises(ValueError, match=ONNX_REFUSAL[name]):
            export.onnx(model, path)
        assert not os.listdir(tmp_path)  # nothing written
        return
    assert export.onnx(model, path) == path
    want = _predict(model, data)
    got = export.predict_onnx(path, data)  # raw values: moved lookups applied from the JSON
    assert export.max_abs_diff(got, want) <= ONNX_TOL
    lookups, order = export.read_lookups(path)
    session = export.onnx_session(path)
    names = [t.name for t in session.get_inputs()]
    assert names == [n for n in export.input_specs(model)]
    if lookups:
        assert order == names
        # the lookups really left the graph: the ONNX inputs are their int ids, not strings
        moved = {i.name: i.type for i in session.get_inputs() if i.name in lookups}
        assert set(moved.values()) == {"tensor(int64)"}
        ids = export.apply_lookups(lookups, data)
        assert export.max_abs_diff(export.predict_onnx(path, ids, lookups=False), want) <= ONNX_TOL
    else:
        assert not os.path.exists(export.vocabulary_path(path))
    if isinstance(model.input, (list, tuple)):  # a list model: the arrays in its input order
        arrays = [data[n] for n in export.input_specs(model)]
        assert export.max_abs_diff(export.predict_onnx(path, arrays), want) <= ONNX_TOL
    # check_parity on the model's own inputs (no encoder)
    sm = export.saved_model(model, str(tmp_path / "sm"))
    report = export.check_parity(model, data, saved_model_path=sm, onnx_path=path)
    assert report["saved_model_max_abs_diff"] <= SM_TOL and report["onnx_max_abs_diff"] <= ONNX_TOL


def test_lookup_json_follows_the_layers_mask_and_oov(built, tmp_path):
    pytest.importorskip("tf2onnx")
    model, _ = built["tutorial_batch"]
    path = export.onnx(model, str(tmp_path / "t.onnx"))
    lookups, _ = export.read_lookups(path)
    assert lookups["shop"]["mask_token"] == "" and lookups["shop"]["mask_id"] == 0
    assert lookups["shop"]["oov_id"] == 1 and lookups["color"]["oov_id"] == 0
    raw = {"color": np.asarray(["red", "teal", "nope", "", b"blue"], dtype=object),
           "shop": np.asarray(["", "red", "nope", "teal", "[UNK]"], dtype=object)}
    ids = export.apply_lookups(lookups, raw)
    for name in ("color", "shop"):
        want = model.get_layer(f"lookup_{name}")(tf.constant([v.decode() if isinstance(v, bytes) else v
                                                              for v in raw[name]]))
        np.testing.assert_array_equal(ids[name], want.numpy())


def test_history_masks_padding(built, tmp_path):
    """Padding (id 0) is masked in both exports: [5, 5, 0, ...] and [5, 0, ...] average to the same."""
    model, _ = built["history"]
    rows = {"hist": np.zeros((2, 20), np.int32), "user": np.asarray([3, 3], np.int32)}
    rows["hist"][0, :2] = 5
    rows["hist"][1, :1] = 5
    want = _predict(model, rows)
    assert abs(want[0] - want[1]) <= 1e-6
    p = export.predict_saved_model(export.saved_model(model, str(tmp_path / "sm")), rows)
    assert export.max_abs_diff(p, want) <= SM_TOL
    if export.onnx_export.onnx_available():
        path = export.onnx(model, str(tmp_path / "h.onnx"))
        assert export.max_abs_diff(export.predict_onnx(path, rows), want) <= ONNX_TOL


@pytest.mark.parametrize("make, layer, message", [
    ("nested", "inner_lookup", r"'inner_lookup' \(StringLookup\).*not applied directly to a model input"),
    ("shared_input", "lookup", r"input 'c' feeds layer 'lookup' \(StringLookup\) and also \['hash'\]"),
    ("oov_buckets", "lookup", r"'lookup' \(StringLookup\) cannot be moved out.*num_oov_indices=2"),
])
def test_onnx_refuses_lookups_it_cannot_move_out(make, layer, message, tmp_path):
    pytest.importorskip("tf2onnx")
    c = keras.Input(shape=(), dtype="string", name="c")
    if make == "nested":
        inner_in = keras.Input(shape=(), dtype="string")
        inner = keras.Model(inner_in, keras.layers.Embedding(6, 2)(
            keras.layers.StringLookup(vocabulary=VOCAB, name="inner_lookup")(inner_in)), name="inner")
        x = inner(c)
    elif make == "shared_input":
        x = keras.layers.Concatenate()([
            keras.layers.Embedding(6, 2)(keras.layers.StringLookup(vocabulary=VOCAB, name="lookup")(c)),
            keras.layers.Embedding(8, 2)(keras.layers.Hashing(8, name="hash")(c))])
    else:
        x = keras.layers.Embedding(8, 2)(keras.layers.StringLookup(vocabulary=VOCAB, num_oov_indices=2,
                                                                   name="lookup")(c))
    model = keras.Model(c, keras.layers.Dense(1, activation="sigmoid")(x))
    with pytest.raises(ValueError, match=message) as err:
        export.onnx(model, str(tmp_path / "m.onnx"))
    assert "saved_model" in str(err.value)
    assert not os.listdir(tmp_path)
    # the SavedModel takes it as it is
    raw = np.asarray(["red", "x", "teal"], dtype=object)
    got = export.predict_saved_model(export.saved_model(model, str(tmp_path / "sm")), {"c": raw})
    assert export.max_abs_diff(got, model.predict(tf.constant(raw), verbose=0)) <= SM_TOL


def test_onnx_runtime_refusal_and_custom_ops_are_caught():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from tfmec.export.onnx_export import check_onnx_model

    def model(domain, op):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g", [x], [y])
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        return helper.make_model(graph, opset_imports=opsets)

    check_onnx_model(model("", "Relu"))
    with pytest.raises(ValueError, match="ONNX Runtime cannot load the converted model"):
        check_onnx_model(model("", "LookupTableFindV2"))
    with pytest.raises(ValueError, match=r"custom ONNX ops \['ai.onnx.contrib.StringRegexReplace'\]"):
        check_onnx_model(model("ai.onnx.contrib", "StringRegexReplace"))


@pytest.fixture(scope="module")
def history_export(built, tmp_path_factory):
    model, data = built["history"]
    return export.saved_model(model, str(tmp_path_factory.mktemp("hist") / "sm")), data


@pytest.mark.parametrize("change, message", [
    (lambda d: dict(d, user=d["user"][:, None]), r"input user must have shape \[batch\], got shape\] \[48,1\]"),
    (lambda d: dict(d, hist=d["hist"][:, :19]), r"input hist must have shape \[batch, 20\], got shape\] \[48,19\]"),
    (lambda d: dict(d, hist=d["hist"][0]), r"input hist must have shape \[batch, 20\], got shape\] \[20\]"),
    (lambda d: dict(d, user=d["user"][:5]), r"inputs hist and user have different batch sizes\] \[48\] \[5\]"),
])
def test_signature_refuses_wrong_shapes_in_graph(history_export, change, message):
    path, data = history_export
    bad = change(data)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signature(**{k: tf.constant(v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=r"has shape|different batch sizes"):
        export.predict_saved_model(path, bad)


def test_session_feed_path_refuses_too(history_export):
    """TF Serving runs the MetaGraph with Session::Run, feeding tensors without shape checks: the
    signature's asserts refuse there too (fed here through the same C API, past Python's own check)."""
    path, data = history_export
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        feeds = {k: graph.get_tensor_by_name(v.name) for k, v in sig.inputs.items()}
        out = graph.get_tensor_by_name(sig.outputs["probability"].name)

        def run(values):
            feed = {feeds[k]._as_tf_output(): np.asarray(v) for k, v in values.items()}
            return sess._call_tf_sessionrun(None, feed, [out._as_tf_output()], [], None)[0]

        assert run(data).shape == (N, 1)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"input user must have shape \[batch\]"):
            run(dict(data, user=data["user"][:, None]))
        with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
            run(dict(data, user=data["user"][:3]))


def test_raw_value_signature_of_a_tfmec_model_refuses_n_by_1(tmp_path):
    from tfmec.data import CATEGORICAL, Field, FeatureEncoder, Schema, Vocabulary
    from tfmec.models import LR

    vocab = Vocabulary("c", min_count=1)
    vocab.update(np.asarray(VOCAB, dtype=object))
    vocab.finalize()
    encoder = FeatureEncoder(Schema([Field("c", CATEGORICAL, vocab_size=vocab.size)]), {"c": vocab})
    path = export.saved_model(LR(encoder.schema, seed=0), str(tmp_path / "sm"), encoder)
    signatures = tf.saved_model.load(path).signatures
    raw = np.asarray(["red", "blue", "x"], dtype=object)
    assert signatures["serving_default"](c=tf.constant(raw))["probability"].shape == (3, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input c must have shape \[batch\], got shape\] \[3,1\]"):
        signatures["serving_default"](c=tf.constant(raw[:, None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input c must have shape \[batch\]"):
        signatures["ids"](c=tf.constant([[1], [2]], tf.int32))
    with pytest.raises(ValueError, match=r"input 'c' has shape \(3, 1\); the signature takes \[batch\]"):
        export.predict_saved_model(path, {"c": raw[:, None]})


def _saved_model_cli():
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [script] if os.path.exists(script) else [shutil.which("saved_model_cli") or "saved_model_cli"]


def test_saved_model_cli_shows_and_runs_a_user_model(built, tmp_path):
    model, data = built["tutorial_batch_1"]
    path = export.saved_model(model, str(tmp_path / "sm"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    show = subprocess.run([*_saved_model_cli(), "show", "--dir", path, "--tag_set", "serve", "--signature_def",
                           "serving_default"], capture_output=True, text=True, env=env, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    listed = {name: (dtype, shape) for name, dtype, shape in re.findall(
        r"inputs\['(\w+)'\] tensor_info:\n\s+dtype: (\w+)\n\s+shape: (\(.*?\))", show.stdout)}
    assert listed == {"color": ("DT_STRING", "(-1, 1)"), "shop": ("DT_STRING", "(-1, 1)"),
                      "price": ("DT_FLOAT", "(-1, 1)")}
    # python literals (saved_model_cli evaluates nothing else): [3, 1] strings and floats
    exprs = ";".join(f"{k}={data[k][:3].tolist()!r}" for k in ("color", "shop", "price"))
    run = subprocess.run([*_saved_model_cli(), "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                          "serving_default", "--input_exprs", exprs], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.asarray([float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?", run.stdout.split("probability")[-1])])
    want = _predict(model, {k: v[:3] for k, v in data.items()})
    np.testing.assert_allclose(got, want, atol=1e-6)
