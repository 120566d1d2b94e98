"""Competitors at the same bytes (issue 19, deliverable 3), in both Keras modes.

``QREmbedding`` (the quotient-remainder trick) gets the checks Keras's own layer tests make (shapes of
``[b]``, ``[b, 1]``, ``[b, L]`` ids, mask, config and ``.keras`` round trip, one training step, bytes);
int4 tables (``Int8Embedding(bits=4)``) their arithmetic and Keras 3's integers; ``qr_embeddings`` and
``quantize_embeddings(bits=4, budget_bytes=...)`` a user's functional model with a StringLookup inside
and one table shared by two inputs (within the budget, or a clear error); SavedModel (and ONNX, when
installed) parity of both; and a ``tfmec run --method none,qr,int4 --target-ratio 16`` smoke run.
Tiny on purpose: a few hundred rows per table, d = 8.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.baselines import (TableShape, allocate_qr, allocate_quantized, hash_embeddings, qr_embeddings,
                             quantize_embeddings, quantized_buckets)
from tfmec.baselines.qr import fewest_qr_rows, qr_buckets_for
from tfmec.evaluation import embedding_bytes
from tfmec.export.onnx_export import onnx_available
from tfmec.graph import find_tables
from tfmec.layers import HashedEmbedding, Int8Embedding
from tfmec.layers.hashed_embedding import hash_buckets_numpy
from tfmec.layers.int8_embedding import pack_int4, quantize_int8, unpack_int4
from tfmec.layers.qr_embedding import QREmbedding
from tfmec.mec.memory import memory_report

V, D, B = 50, 8, 7
N = 64
COLORS = [f"c{i}" for i in range(120)]


def _bytes_of(layer) -> int:
    return sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)


def _weight(layer, name):
    return next(w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == name)


def _tiny(layer, length=None):
    shape = () if length is None else (length,)
    inp = keras.Input(shape=shape, dtype="int32", name="ids")
    x = layer(inp)
    if length is not None:
        x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="head")(x))


# ============================================================================ QREmbedding
def test_qr_layer_shapes_values_bytes_and_dims():
    layer = QREmbedding(V, D, B, seed=1, name="qr")
    for ids in (np.array([0, 5, 49]), np.array([[3], [48]]), np.array([[0, 7, 13, 49], [1, 2, 3, 4]])):
        out = np.asarray(layer(ids.astype("int32")))
        assert out.shape == ids.shape + (D,) and out.dtype == np.float32
        assert tuple(layer.compute_output_shape(ids.shape)) == out.shape
        q, r = _weight(layer, "quotient_embeddings").numpy(), _weight(layer, "remainder_embeddings").numpy()
        np.testing.assert_array_equal(out, q[ids // B] * r[ids % B])
    assert q.shape == (-(-V // B), D) and r.shape == (B, D)
    assert layer.storage_bytes == _bytes_of(layer) == 4 * D * (8 + 7)
    assert len(layer.trainable_weights) == 2 and not layer.non_trainable_weights
    # out-of-range and negative ids read the OOV id's rows, as every tfmec table
    got = np.asarray(layer(np.array([-1, V, 10**9, 0], dtype="int64")))
    for row in got[:3]:
        np.testing.assert_array_equal(row, got[3])
    add = QREmbedding(V, D, B, combiner="add", seed=1)
    out = np.asarray(add(np.arange(V)))
    np.testing.assert_allclose(out, _weight(add, "quotient_embeddings").numpy()[np.arange(V) // B]
                               + _weight(add, "remainder_embeddings").numpy()[np.arange(V) % B], rtol=1e-6)
    # no two ids share an embedding (complementary partitions), unlike the hashing trick
    assert len({tuple(row) for row in np.round(out, 7)}) == V
    model = _tiny(QREmbedding(V, D, B, name="qr"))
    (ref,) = find_tables(model)
    assert (ref.input_dim, ref.output_dim) == (V, D)
    table = memory_report(model)["tables"][0]
    assert (table["vocab_size"], table["dim"], table["bytes"], table["original_bytes"]) == (V, D, 4 * D * 15, 4 * V * D)
    for bad, message in ((dict(num_buckets=0), r"num_buckets must be in \[1, 2\*\*31\), got 0"),
                         (dict(combiner="concat"), "combiner must be one of .*, got 'concat'"),
                         (dict(oov_id=V), rf"oov_id must be in \[0, {V}\), got {V}")):
        with pytest.raises(ValueError, match=message):
            QREmbedding(**{**dict(input_dim=V, output_dim=D, num_buckets=B), **bad})


def test_qr_mask_config_and_keras_file_round_trip(tmp_path):
    layer = QREmbedding(V, D, B, mask_zero=True, seed=3, name="qr")
    ids = np.array([[5, 5, 0, 0], [5, 0, 0, 0]], dtype="int32")
    np.testing.assert_array_equal(np.asarray(layer.compute_mask(ids)), ids != 0)
    assert QREmbedding(V, D, B).compute_mask(ids) is None
    model = _tiny(layer, length=4)
    pred = model.predict(ids, verbose=0)
    assert abs(pred[0, 0] - pred[1, 0]) < 1e-6  # the padding is masked in the average
    clone = QREmbedding.from_config(layer.get_config())
    clone.build(None)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(ids)), np.asarray(layer(ids)))
    assert clone.mask_zero and clone.combiner == "mul" and clone.num_buckets == B
    path = str(tmp_path / "qr.keras")
    model.save(path)
    back = keras.models.load_model(path)
    np.testing.assert_array_equal(back.predict(ids, verbose=0), pred)
    assert isinstance(back.get_layer("qr"), QREmbedding)


def test_qr_training_step_changes_the_touched_rows():
    layer = QREmbedding(V, D, B, seed=0, name="qr")
    model = _tiny(layer)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    before = [w.copy() for w in layer.get_weights()]
    ids = np.array([3, 11, 30], dtype="int32")
    model.fit(ids, np.array([1, 0, 1], "float32"), batch_size=3, epochs=1, verbose=0)
    q_changed = np.flatnonzero(np.any(_weight(layer, "quotient_embeddings").numpy() != before[0], axis=1))
    r_changed = np.flatnonzero(np.any(_weight(layer, "remainder_embeddings").numpy() != before[1], axis=1))
    assert set(q_changed) == set((ids // B).tolist()) and set(r_changed) == set((ids % B).tolist())


# ============================================================================ allocations
TABLES = [TableShape("a", "a", 10, 8), TableShape("b", "b", 1000, 8), TableShape("lin_b", "b", 1000, 1),
          TableShape("c", "c", 50_000, 8)]


def _qr_total(cap):
    def rows(t):
        b = qr_buckets_for(t.rows, cap)
        return t.rows if b is None else -(-t.rows // b) + b

    return sum(4 * t.dim * rows(t) for t in TABLES)


@pytest.mark.parametrize("budget", [16_864, 20_000, 60_000, 400_000, 10**8])
def test_qr_cap_is_the_largest_that_fits(budget):
    plan = allocate_qr(TABLES, budget)
    cap = plan["cap"]
    assert plan["bytes"] == _qr_total(cap) == sum(4 * t.dim * plan["rows"][t.name] for t in TABLES) <= budget
    if cap < max(t.rows for t in TABLES):
        assert _qr_total(cap + 1) > budget  # maximal
    for t in TABLES:
        b = plan["buckets"].get(t.name)
        assert b == qr_buckets_for(t.rows, cap)
        if b is not None:  # fewer rows than the table, the remainder table the larger of the two
            assert plan["rows"][t.name] == -(-t.rows // b) + b < t.rows and b >= -(-t.rows // b)
            assert plan["rows"][t.name] <= max(cap, fewest_qr_rows(t.rows)[0])
        else:
            assert t.rows <= cap
    assert plan["buckets"].get("b") == plan["buckets"].get("lin_b")  # a field's tables split alike


def test_qr_and_quantized_minimum_budget_errors():
    least = sum(4 * t.dim * min(t.rows, fewest_qr_rows(t.rows)[0]) for t in TABLES)
    assert allocate_qr(TABLES, least)["bytes"] == least
    with pytest.raises(ValueError, match=f"it needs at least {least:,} bytes"):
        allocate_qr(TABLES, least - 1)
    assert fewest_qr_rows(1000) == (32 + 32, 32) and fewest_qr_rows(10) == (4 + 3, 4)
    # int4 rows: ceil(8 / 2) + 4 bytes a row of d = 8 (a step per row), 1 byte a row plus one step for d = 1
    plan = allocate_quantized(TABLES, 10**9, 4)
    assert plan["hashed"] == [] and plan["bytes"] == 8 * (10 + 1000 + 50_000) + 1000 + 4
    one = 8 * 3 + 1 + 4
    assert allocate_quantized(TABLES, one, 4)["cap"] == 1
    with pytest.raises(ValueError, match=f"int4 budget of {one - 1:,} bytes .* at least {one:,} bytes"):
        allocate_quantized(TABLES, one - 1, 4)


# ============================================================================ int4 tables
@pytest.mark.parametrize("d", [8, 5, 1])
def test_int4_layer_rows_within_half_a_step(d, tmp_path):
    table = np.random.default_rng(d).normal(scale=0.1, size=(V, d)).astype("float32")
    table[4] = 0.0
    q, step = quantize_int8(table, bits=4)
    assert np.abs(q).max() == 7 and step[4] == 1.0 and not q[4].any()
    np.testing.assert_array_equal(unpack_int4(pack_int4(q), d), q)
    layer = Int8Embedding.from_table(table, bits=4, name="int4")
    ids = np.array([[0, 4, 49], [7, 7, 1]], dtype="int32")
    out = np.asarray(layer(ids))
    assert out.shape == ids.shape + (d,)
    np.testing.assert_array_equal(out, layer.dequantized_table()[ids])
    assert np.all(np.abs(layer.dequantized_table() - table) <= step[:, None] / 2 + 1e-7)
    assert _weight(layer, "embeddings").dtype in ("uint8", tf.uint8)
    assert layer.storage_bytes == _bytes_of(layer) == V * ((d + 1) // 2) + 4 * V
    model = _tiny(layer)
    path = str(tmp_path / "int4.keras")
    model.save(path)
    back = keras.models.load_model(path)
    np.testing.assert_array_equal(back.predict(ids.reshape(-1), verbose=0), model.predict(ids.reshape(-1), verbose=0))
    assert back.get_layer("int4").bits == 4


def test_int4_integers_equal_keras3_per_row_int4_and_old_int8_configs_load():
    table = np.random.default_rng(3).normal(size=(V, D)).astype("float32")
    ours = Int8Embedding.from_table(table, bits=4)
    ours.build(None)
    # an Int8Embedding config written before `bits` existed loads as int8 with one row per id
    old = {"name": "int8", "trainable": True, "dtype": "float32", "input_dim": V, "output_dim": D,
           "per_row_scale": True, "oov_id": 0, "mask_zero": False}
    legacy = Int8Embedding.from_config(old)
    assert legacy.bits == 8 and legacy.num_buckets is None
    legacy.build(None)
    q8, s8 = quantize_int8(table)
    legacy.set_weights([q8, s8])
    np.testing.assert_allclose(np.asarray(legacy(np.arange(V))), q8 * s8[:, None], rtol=1e-6)
    if IS_LEGACY_KERAS:  # tf-keras has no quantize
        return
    from keras import quantizers as kq
    from keras.quantizers import Int4QuantizationConfig

    ref = keras.layers.Embedding(V, D)
    ref.build((None,))
    ref.set_weights([table])
    ref.quantize("int4", config=Int4QuantizationConfig(block_size=-1))
    np.testing.assert_array_equal(ours.quantized_values(), kq.unpack_int4(ref._embeddings, D, axis=-1).numpy())
    ids = np.arange(V, dtype="int32")
    np.testing.assert_allclose(np.asarray(ours(ids)), np.asarray(ref(ids)), rtol=1e-5, atol=1e-6)


# ============================================================================ a user's model
def _user_model():
    """Functional: a string input through a StringLookup inside the model, and one table shared by two
    integer inputs (as a user writes it)."""
    keras.utils.set_random_seed(0)
    color = keras.Input(shape=(), dtype="string", name="color")
    a = keras.Input(shape=(), dtype="int32", name="a")
    b = keras.Input(shape=(), dtype="int32", name="b")
    lookup = keras.layers.StringLookup(vocabulary=COLORS, name="lookup")
    e_color = keras.layers.Embedding(len(COLORS) + 1, D, name="emb_color")(lookup(color))
    shared = keras.layers.Embedding(900, D, name="shared")
    x = keras.layers.Concatenate()([e_color, shared(a), shared(b)])
    out = keras.layers.Dense(1, activation="sigmoid", name="out")(keras.layers.Dense(8, activation="relu")(x))
    model = keras.Model({"color": color, "a": a, "b": b}, out)
    rng = np.random.default_rng(0)
    data = {"color": np.asarray(rng.choice(COLORS + ["never-seen"], N), dtype=object),
            "a": rng.integers(0, 900, N).astype("int32"), "b": rng.integers(0, 900, N).astype("int32")}
    return model, data


def _predict(model, data):
    return model.predict({k: tf.constant(v) for k, v in data.items()}, verbose=0).reshape(-1)


@pytest.fixture(scope="module")
def user():
    model, data = _user_model()
    full = embedding_bytes(model)
    return model, data, full


def test_qr_embeddings_on_a_user_model_within_the_budget(user):
    model, data, full = user
    budget = full // 8
    new, plan = qr_embeddings(model, budget, seed=0)
    assert embedding_bytes(new) == plan["bytes"] <= budget and plan["budget_bytes"] == budget
    tables = [r.layer for r in find_tables(new)]
    assert {type(t).__name__ for t in tables} == {"QREmbedding"} and len(tables) == 2  # shared: one layer
    shared = new.get_layer("shared")
    assert plan["buckets"]["shared"] == shared.num_buckets and shared.input_dim == 900
    assert isinstance(model.get_layer("shared"), keras.layers.Embedding)  # the input model is untouched
    p = _predict(new, data)
    assert p.shape == (N,) and np.all(np.isfinite(p))
    least = sum(4 * D * fewest_qr_rows(v)[0] for v in (len(COLORS) + 1, 900))
    with pytest.raises(ValueError, match=f"at least {least:,} bytes"):
        qr_embeddings(model, least - 1)
    _, small = qr_embeddings(model, least)
    assert small["bytes"] == least


def test_int4_on_a_user_model_with_and_without_a_budget(user):
    model, data, full = user
    plain, report = quantize_embeddings(model, bits=4)
    for name in ("emb_color", "shared"):
        layer, table = plain.get_layer(name), model.get_layer(name).get_weights()[0]
        step = np.abs(table).max(axis=1) / 7
        assert layer.bits == 4 and report[name]["num_buckets"] is None
        assert np.all(np.abs(layer.dequantized_table() - table) <= step[:, None] / 2 + 1e-7)
    assert embedding_bytes(plain) == (len(COLORS) + 1 + 900) * (D // 2 + 4)
    # a budget int4 alone cannot meet: ids hashed into fewer int4 rows (folded means of trained rows)
    budget = full // 16
    small, report = quantize_embeddings(model, bits=4, budget_bytes=budget)
    assert embedding_bytes(small) <= budget
    assert small.get_layer("shared").num_buckets == report["shared"]["num_buckets"] < 900
    assert np.all(np.isfinite(_predict(small, data)))
    plan = quantized_buckets(model, budget, 4)
    assert embedding_bytes(small) == plan["bytes"]
    least = 2 * (D // 2 + 4)
    with pytest.raises(ValueError, match=f"at least {least:,} bytes"):
        quantize_embeddings(model, bits=4, budget_bytes=least - 1)
    # the trained route: the hashing trick at the plan's buckets, then its rows quantised (hash kept)
    hashed, _ = hash_embeddings(model, buckets={k: plan["buckets"][k] for k in plan["hashed"]}, seed=0)
    q, _ = quantize_embeddings(hashed, bits=4, budget_bytes=budget)
    assert embedding_bytes(q) <= budget
    h, hq = hashed.get_layer("shared"), q.get_layer("shared")
    assert isinstance(h, HashedEmbedding) and (hq.num_buckets, hq.salt) == (h.num_buckets, h.salt)
    ids = np.arange(900)
    np.testing.assert_array_equal(np.asarray(hq.rows_of(ids)), hash_buckets_numpy(ids, h.num_buckets, h.salt))
    np.testing.assert_allclose(np.asarray(hq(ids)), np.asarray(h(ids)), atol=0.05 / 7 / 2 + 1e-6)
    with pytest.raises(ValueError, match="is a HashedEmbedding of .* rows; the budget .* Train it with at most"):
        quantize_embeddings(hashed, bits=4, budget_bytes=budget // 2)  # its buckets cannot be re-hashed


@pytest.mark.parametrize("kind", ["qr", "int4"])
def test_saved_model_and_onnx_match_keras(user, kind, tmp_path):
    model, data, full = user
    if kind == "qr":
        new, _ = qr_embeddings(model, full // 8, seed=0)
    else:
        new, _ = quantize_embeddings(model, bits=4, budget_bytes=full // 16)
    want = _predict(new, data)
    path = export.saved_model(new, str(tmp_path / "sm"))
    assert export.max_abs_diff(export.predict_saved_model(path, data), want) <= 1e-6
    if onnx_available():
        onnx_path = export.onnx(new, str(tmp_path / "m.onnx"))
        assert export.max_abs_diff(export.predict_onnx(onnx_path, data), want) <= 1e-5


# ============================================================================ tfmec run
def test_run_none_qr_int4_at_target_ratio_16(tmp_path):
    from tfmec.cli import main

    rng = np.random.default_rng(0)
    n = 3000  # about 2,000 ids per field: two QR tables of ~2 sqrt(V) rows reach 16x
    c1, c2 = rng.integers(0, 4000, n), rng.integers(0, 4000, n)
    y = ((c1 % 3 == 0) ^ (rng.random(n) < 0.2)).astype(int)
    csv = tmp_path / "tiny.csv"
    csv.write_text("y,c1,c2\n" + "".join(f"{l},u{a},i{b}\n" for a, b, l in zip(c1, c2, y)))
    out = tmp_path / "run"
    code = main(["run", "--data", str(csv), "--format", "csv", "--label", "y", "--min-count", "1", "--model", "deepfm",
                 "--method", "none,qr,int4", "--target-ratio", "16", "--embedding-dim", "8", "--epochs", "1",
                 "--batch-size", "512", "--out", str(out), "--no-export", "--quiet"])
    assert code == 0
    runs = {r["method"]: r for r in json.loads((out / "metrics.json").read_text())["runs"]}
    budget = runs["baseline"]["embedding_bytes"] // 16
    assert runs["qr"]["qr"]["budget_bytes"] == runs["int4"]["int4"]["budget_bytes"] == budget
    for method in ("qr", "int4"):
        assert runs[method]["embedding_bytes"] <= budget
        assert 0.0 < runs[method]["test_auc"] < 1.0
    assert runs["qr"]["embedding_bytes"] == runs["qr"]["qr"]["table_bytes"] and runs["qr"]["qr"]["qr_tables"]
    assert runs["int4"]["int4"]["hashed_tables"] and runs["int4"]["int4"]["bits"] == 4
