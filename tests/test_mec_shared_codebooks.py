"""Shared codebooks across fields (issue 4, 5a): grouping in stage 1, SharedQuantizedEmbedding,
compress -> save -> load -> predict, memory accounting; in both Keras modes."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.data.schema import Field, Schema
from tfmec.layers import QuantizedEmbedding, SharedQuantizedEmbedding
from tfmec.layers.bitpack import pack_codes
from tfmec.mec import CodeSet, FieldCodes, compress_embeddings, learn_codes, memory_report
from tfmec.graph.functional import rebuild_functional
from tfmec.mec.stage1 import default_share_max_vocab, share_groups
from tfmec.evaluation import embedding_bytes
from tfmec.models import DeepFM

M, K, SUB = 4, 16, 2
D = M * SUB


def _tables(seed=0):
    rng = np.random.default_rng(seed)
    sizes = {"big": (1500, D), "s1": (60, D), "s2": (300, D), "s3": (3, D), "linear_a": (50, 1), "linear_b": (400, 1)}
    return {n: rng.normal(size=s).astype(np.float32) for n, s in sizes.items()}


def _group_codes(sizes=(6, 40, 11), seed=0):
    """FieldCodes of three fields holding ONE codebook array (a stage-1 sharing group)."""
    rng = np.random.default_rng(seed)
    books = rng.normal(size=(M, K, SUB)).astype(np.float32)
    return [FieldCodes(f"f{i}", rng.integers(0, K, size=(v, M)), books, group="g") for i, v in enumerate(sizes)]


def _weight(layer, name):
    return next(w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == name)


def _codebook_variables(model):
    return [w for w in model.weights if w.name.split("/")[-1].split(":")[0] == "codebooks"]


# ----------------------------------------------------------------------------- stage 1


def test_default_share_max_vocab_is_the_ten_percent_rule():
    for d, m, k in ((16, 4, 256), (16, 4, 16), (1, 4, 256), (8, 2, 300)):
        v = default_share_max_vocab(d, m, k)
        mm = 1 if d == 1 else m
        width = 1 if k <= 256 else 2
        assert k * d * 4 > 0.1 * v * mm * width  # a private codebook is > 10% of the codes
        assert not k * d * 4 > 0.1 * (v + 1) * mm * width
    assert default_share_max_vocab(16, 4, 256) == 40959


def test_small_tables_share_large_ones_do_not():
    tables = _tables()
    kw = dict(num_subspaces=M, num_codewords=K, epochs=1, batch_size=2048, kmeans_iterations=3, progress=False, seed=0)
    private = learn_codes(tables, **kw)
    assert private.groups == {} and all(fc.group is None for fc in private.values())
    assert "s3" not in private  # 3 rows: a private codebook would make it larger
    codes = learn_codes(tables, share_codebooks=True, **kw)
    # width 8 (M=4): the rule keeps tables up to 1279 rows; width 1 (scalar, M=1): up to 2559
    assert codes.groups == {"shared_d8": ["s1", "s2", "s3"], "shared_d1": ["linear_a", "linear_b"]}
    assert codes.config["groups"] == codes.groups and codes.config["share_codebooks"] is True
    assert codes["big"].group is None and codes["big"].codebooks is not codes["s1"].codebooks
    for group, names in codes.groups.items():
        books = codes[names[0]].codebooks
        for n in names:
            fc = codes[n]
            assert fc.codebooks is books and fc.group == group and fc.stats["group"] == group
            assert fc.codes.shape == (tables[n].shape[0], fc.num_subspaces)
            assert fc.stats["vocab_size"] == tables[n].shape[0]  # statistics per field
    assert codes["linear_a"].codebooks.shape == (1, K, 1)
    # the private table learns exactly what it learns without sharing
    np.testing.assert_array_equal(codes["big"].codes, private["big"].codes)
    # an explicit limit: s2 (300 rows) keeps a private codebook
    limited = learn_codes(tables, share_codebooks=True, share_max_vocab=100, **kw)
    assert limited.groups["shared_d8"] == ["s1", "s3"] and limited["s2"].group is None


def test_group_forms_only_when_it_saves_bytes():
    tiny = {"a": np.zeros((3, D), np.float32), "b": np.zeros((4, D), np.float32)}
    # 7 rows of codes + one 512-byte codebook > 7 float rows: no group, nothing compressed
    assert share_groups(tiny, ["a", "b"], set(), M, K, False) == {}
    one = {"a": np.zeros((60, D), np.float32), "big": np.zeros((5000, D), np.float32)}
    assert share_groups(one, ["a", "big"], {"a", "big"}, M, K, False) == {}  # a group of one is no group


def test_group_codes_reconstruct_every_field():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, D))
    tables = {n: (centres[rng.integers(0, 12, v)] + 0.05 * rng.normal(size=(v, D))).astype(np.float32)
              for n, v in (("a", 200), ("b", 120), ("c", 30))}
    codes = learn_codes(tables, num_subspaces=M, num_codewords=K, epochs=3, batch_size=64, seed=0, progress=False,
                        share_codebooks=True)
    assert list(codes.groups) == ["shared_d8"]
    for n, t in tables.items():
        mse = float(((codes[n].decode() - t) ** 2).mean())
        assert mse < 0.05 * float((t ** 2).mean()), n
        assert codes[n].stats["reconstruction_mse"] == pytest.approx(mse, rel=1e-4)


def test_codeset_saves_a_groups_codebooks_once(tmp_path):
    fcs = _group_codes()
    extra = FieldCodes("solo", np.zeros((5, M), np.uint8), np.ones((M, K, SUB), np.float32))
    codes = CodeSet({fc.field: fc for fc in fcs} | {"solo": extra}, config={"num_codewords": K})
    path = str(tmp_path / "codes")
    codes.save(path)
    with np.load(path + ".npz") as arrays:
        keys = sorted(arrays.files)
    assert [k for k in keys if "codebooks" in k] == ["codebooks_3", "group_codebooks_0"]
    again = CodeSet.load(path)
    assert again.groups == {"g": ["f0", "f1", "f2"]} and again["solo"].group is None
    assert again["f0"].codebooks is again["f2"].codebooks
    for fc in fcs:
        np.testing.assert_array_equal(again[fc.field].codes, fc.codes)
        np.testing.assert_array_equal(again[fc.field].codebooks, fc.codebooks)
    broken = CodeSet({"a": fcs[0], "b": FieldCodes("b", fcs[1].codes, fcs[1].codebooks + 1, group="g")})
    with pytest.raises(ValueError, match="different codebooks"):
        broken.save(str(tmp_path / "bad"))


# ----------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("bits", [None, 4, 5])
def test_layer_lookup_per_field_matches_numpy(bits):
    fcs = _group_codes()
    layer = SharedQuantizedEmbedding.from_codes(fcs, bits=bits, name="shared")
    for i, fc in enumerate(fcs):
        ids = np.arange(fc.vocab_size, dtype="int32")
        out = np.asarray(layer(ids, field=i))
        assert out.shape == (fc.vocab_size, D)
        np.testing.assert_allclose(out, fc.decode(ids), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(layer(ids, field=fc.field)), out)  # by name too
        np.testing.assert_array_equal(np.asarray(layer.lookup_codes(ids, field=i)), fc.codes.astype("int32"))
    assert layer.input_dims == [6, 40, 11] and layer.offsets == [0, 6, 46]
    codes_w = _weight(layer, "codes")
    assert codes_w.dtype in ("uint8", tf.uint8) and not codes_w.trainable
    all_codes = np.concatenate([fc.codes for fc in fcs])
    np.testing.assert_array_equal(codes_w.numpy(), all_codes if bits is None else pack_codes(all_codes, bits))
    held = sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)
    assert held == layer.storage_bytes == int(np.prod(codes_w.shape)) + M * K * SUB * 4
    assert SharedQuantizedEmbedding.is_embedding_table is True


def test_oov_ids_go_to_their_fields_oov_row():
    fcs = _group_codes()
    layer = SharedQuantizedEmbedding.from_codes(fcs, oov_ids=[0, 7, 3])
    for i, (fc, oov) in enumerate(zip(fcs, (0, 7, 3))):
        v = fc.vocab_size
        out = np.asarray(layer(np.array([-1, v, v + 50, 2**31 - 1], dtype="int64"), field=i))
        np.testing.assert_allclose(out, fc.decode([oov] * 4), rtol=1e-6)
    with pytest.raises(ValueError, match=r"oov_ids must hold one id in \[0, V_f\) per field, got \[0, 40, 0\]"):
        SharedQuantizedEmbedding.from_codes(fcs, oov_ids=[0, 40, 0])
    with pytest.raises(ValueError, match=r"field 3 out of range \[0, 3\)"):
        layer(np.array([0], "int32"), field=3)
    with pytest.raises(ValueError, match="unknown field 'nope'"):
        layer(np.array([0], "int32"), field="nope")


def test_layer_config_round_trip_and_invalid_arguments():
    fcs = _group_codes()
    layer = SharedQuantizedEmbedding.from_codes(fcs, bits=4, contrastive_weight=0.1, seed=2, name="sh")
    ids = np.array([0, 1, 5], "int32")
    out = np.asarray(layer(ids, field=2))
    config = layer.get_config()
    assert "codes" not in config and "codebooks" not in config and "input_dim" not in config
    assert config["input_dims"] == [6, 40, 11] and config["field_names"] == ["f0", "f1", "f2"]
    clone = SharedQuantizedEmbedding.from_config(config)
    clone(ids, field=2)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(ids, field=2)), out)
    assert clone.get_config() == config
    other = FieldCodes("x", np.zeros((3, M), np.uint8), fcs[0].codebooks + 1.0)
    with pytest.raises(ValueError, match="do not share codebooks"):
        SharedQuantizedEmbedding.from_codes([fcs[0], other])
    with pytest.raises(ValueError, match=r"input_dims must be >= 1 each, got \[3, 0\]"):
        SharedQuantizedEmbedding([3, 0], M, K, SUB)
    with pytest.raises(ValueError, match="field_names must be 2 distinct names"):
        SharedQuantizedEmbedding([3, 4], M, K, SUB, field_names=["a", "a"])


def _two_field_model(layer):
    a = keras.Input(shape=(), dtype="int32", name="a")
    b = keras.Input(shape=(), dtype="int32", name="b")
    x = keras.layers.Concatenate(name="cat")([layer(a, field=0), layer(b, field=1)])
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(1, activation="sigmoid", name="head")(x))


def test_one_codebook_variable_trains_every_field_and_survives_keras_save(tmp_path):
    fcs = _group_codes(sizes=(30, 20))
    layer = SharedQuantizedEmbedding.from_codes(fcs, contrastive_weight=0.1, seed=0, name="shared")
    model = _two_field_model(layer)
    assert len(_codebook_variables(model)) == 1
    x = {"a": np.arange(30, dtype="int32") % 30, "b": np.arange(30, dtype="int32") % 20}
    y = (np.arange(30) % 2).astype("float32")[:, None]
    before = [np.asarray(layer(x["a"], field=0)), np.asarray(layer(x["b"], field=1))]
    pred = np.asarray(model(x))
    # save / load: one layer, one codebook variable, the same predictions
    path = str(tmp_path / "shared.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(again(x)), pred)
    shared = [lyr for lyr in again.layers if isinstance(lyr, SharedQuantizedEmbedding)]
    assert len(shared) == 1 and len(_codebook_variables(again)) == 1
    # the contrastive term: one per field call
    model(x, training=True)
    assert len(model.losses) == 2 and all(float(v) > 0 for v in model.losses)
    # one training step moves both fields' embeddings (through the one codebook)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    after = [np.asarray(layer(x["a"], field=0)), np.asarray(layer(x["b"], field=1))]
    for b, a in zip(before, after):
        assert not np.allclose(a, b)
    np.testing.assert_array_equal(_weight(layer, "codes").numpy(), np.concatenate([fc.codes for fc in fcs]))
    # the reloaded model trains too
    again.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    again.fit(x, y, batch_size=30, epochs=1, verbose=0)
    assert not np.allclose(np.asarray(again(x)), pred)


def test_saved_model_serving_is_identical(tmp_path):
    fcs = _group_codes(sizes=(30, 20))
    model = _two_field_model(SharedQuantizedEmbedding.from_codes(fcs, bits=4, name="shared"))
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda a, b: {"prob": model({"a": a, "b": b}, training=False)},
                               input_signature=[tf.TensorSpec([None], tf.int32, name="a"),
                                                tf.TensorSpec([None], tf.int32, name="b")])
    a, b = np.array([0, 29, -1, 30], "int32"), np.array([19, 0, 20, -7], "int32")
    expected = np.asarray(module.serve(tf.constant(a), tf.constant(b))["prob"])
    path = str(tmp_path / "sm")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    served = tf.saved_model.load(path).signatures["serving_default"](a=tf.constant(a), b=tf.constant(b))["prob"]
    np.testing.assert_array_equal(np.asarray(served), expected)
    # rows 2 and 3 are OOV in both fields: the same prediction
    np.testing.assert_array_equal(np.asarray(served)[2], np.asarray(served)[3])


# ----------------------------------------------------------------------------- stage 2 on a model

FRAPPE_LIKE = {"user": 958, "item": 4083, "daytime": 8, "weekday": 8, "isweekend": 3, "homework": 4, "cost": 3,
               "weather": 10, "country": 81, "city": 234}


def _frappe_schema():
    return Schema([Field(n, vocab_size=v) for n, v in FRAPPE_LIKE.items()])


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = {f: rng.integers(0, v, n).astype("int32") for f, v in FRAPPE_LIKE.items()}
    y = ((x["item"] % 5 + x["weekday"] % 2) > 3).astype("float32")
    return x, y


@pytest.fixture(scope="module")
def frappe_like():
    keras.utils.set_random_seed(0)
    model = DeepFM(_frappe_schema(), embedding_dim=8, hidden_units=(16,), seed=0)
    kw = dict(num_subspaces=M, num_codewords=K, epochs=0, kmeans_iterations=3, seed=0, progress=False)  # k-means PQ
    return model, learn_codes(model, **kw), learn_codes(model, share_codebooks=True, **kw)


def test_sharing_takes_fewer_bytes_on_many_small_fields(frappe_like):
    model, private, shared = frappe_like
    assert set(shared.groups) == {"shared_d8", "shared_d1"}
    assert "item" not in shared.groups["shared_d8"]  # 4083 rows: its codebook is < 10% of its codes
    small_private = compress_embeddings(model, private, bits=4)
    small_shared = compress_embeddings(model, shared, bits=4)
    rp, rs = memory_report(small_private), memory_report(small_shared)
    assert rs["embedding_bytes"] < rp["embedding_bytes"]
    assert rs["compression_ratio_embeddings"] > rp["compression_ratio_embeddings"]
    assert rs["original_embedding_bytes"] == rp["original_embedding_bytes"] == memory_report(model)["embedding_bytes"]
    assert embedding_bytes(small_shared) == rs["embedding_bytes"]  # the shared codebooks counted once
    table = next(t for t in rs["tables"] if t["layer"] == "shared_d8")
    fields = shared.groups["shared_d8"]
    assert table["kind"] == "shared_quantized" and table["fields"] == fields
    v = sum(FRAPPE_LIKE[f] for f in fields)
    # 4-bit codes: 2 bytes a row; + the negatives' 8-byte step counter (contrastive term on by default)
    assert table["vocab_size"] == v and table["bytes"] == v * 2 + K * D * 4 + 8
    # one shared layer per group, every grouped field's Embedding gone
    names = {lyr.name for lyr in small_shared.layers}
    assert {"shared_d8", "shared_d1"} <= names
    assert not any(f"embedding_{f}" in names for f in fields)
    assert isinstance(small_shared.get_layer("embedding_item"), QuantizedEmbedding)


def test_compress_save_load_predict_is_exact_and_keeps_sharing(frappe_like, tmp_path):
    model, _, shared = frappe_like
    small = compress_embeddings(model, shared, bits=4, contrastive_weight=0.01)
    x, y = _data()
    # each grouped field reads its own codes through the shared layer
    layer = small.get_layer("shared_d8")
    for i, f in enumerate(shared.groups["shared_d8"]):
        np.testing.assert_allclose(np.asarray(layer(x[f], field=i)), shared[f].decode(x[f]), rtol=1e-6, atol=1e-6)
    path = str(tmp_path / "shared.keras")
    small.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(small(x)), np.asarray(again(x)))
    tables = len([f for f in shared if shared[f].group is None]) + len(shared.groups)  # item, linear_item, ...
    assert len(_codebook_variables(again)) == len(_codebook_variables(small)) == tables == 5
    assert memory_report(again)["embedding_bytes"] == memory_report(small)["embedding_bytes"]
    # OOV ids of every field go to that field's OOV row
    oov = {f: np.full(4, -1, "int32") for f in FRAPPE_LIKE}
    oov["weekday"] = np.array([0, 8, 99, -5], "int32")
    out = np.asarray(again(oov))
    np.testing.assert_array_equal(out, np.repeat(out[:1], 4, axis=0))
    # training: one contrastive term per grouped field call (d > 1), logged as a metric
    again.compile("adam", "binary_crossentropy")
    history = again.fit(x, y, batch_size=128, epochs=1, verbose=0).history
    assert history["contrastive_loss"][0] > 0
    again(x, training=True)
    calls = len(shared.groups["shared_d8"]) + 1  # grouped fields + the private 'item'
    assert len(again.losses) == calls


def test_rebuild_keeps_a_layer_called_twice():
    a = keras.Input(shape=(), dtype="int32", name="a")
    b = keras.Input(shape=(), dtype="int32", name="b")
    table = keras.layers.Embedding(2000, D, name="item_table")
    x = keras.layers.Concatenate(name="cat")([table(a), table(b)])
    user = keras.Model({"a": a, "b": b}, keras.layers.Dense(1, name="head")(x))
    codes = learn_codes({"item": user.get_layer("item_table").get_weights()[0]}, num_subspaces=M, num_codewords=K,
                        epochs=0, progress=False)
    small = compress_embeddings(user, codes, mapping={"item_table": "item"})
    quantized = [lyr for lyr in small.layers if isinstance(lyr, QuantizedEmbedding)]
    assert len(quantized) == 1 and len(_codebook_variables(small)) == 1
    ids = {"a": np.arange(4, dtype="int32"), "b": np.arange(4, 8, dtype="int32")}
    emb = codes["item"].decode(np.arange(8))
    expected = np.concatenate([emb[:4], emb[4:]], axis=1) @ user.get_layer("head").get_weights()[0]
    np.testing.assert_allclose(np.asarray(small(ids)), expected + user.get_layer("head").get_weights()[1], atol=1e-5)
    # an identity rebuild gives the same function
    same = rebuild_functional(user, lambda lyr: lyr)
    np.testing.assert_array_equal(np.asarray(same(ids)), np.asarray(user(ids)))


def test_cli_flag_reaches_the_run_config():
    from tfmec.cli import build_parser
    from tfmec.experiment import RunConfig

    assert RunConfig().share_codebooks is False
    assert build_parser().parse_args(["run", "--share-codebooks"]).share_codebooks is True
    assert build_parser().parse_args(["run"]).share_codebooks is False

