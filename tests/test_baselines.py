"""The competing methods of issue 8 (both Keras modes: ``make test`` runs this file twice).

``Int8Embedding`` and ``HashedEmbedding`` get the checks Keras's own layer tests make (build, call,
output shape, weight counts and dtypes, config round trip, ``.keras`` save/load, one training step),
plus their own arithmetic; then the int8 model swap, the hashing budget, and SavedModel / ONNX parity
of both models. Tiny on purpose: 1,500 synthetic rows, four fields, d = 8.
"""
from __future__ import annotations

import os
import types

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.baselines import (ROW_SCALE_MIN_DIM, TableShape, allocate_buckets, hashed_embedding_factory, probe_tables,
                             quantize_embeddings, table_bytes)
from tfmec.baselines.hashing import field_salt
from tfmec.data import load
from tfmec.data.synthetic import SyntheticCTR
from tfmec.evaluation import embedding_bytes
from tfmec.experiment import RunConfig, execution_order, hash_budget
from tfmec.export.onnx_export import onnx_available
from tfmec.export.parity import keras_probabilities, take_rows
from tfmec.layers import HashedEmbedding, Int8Embedding, hash_buckets, quantize_int8
from tfmec.layers.hashed_embedding import HASH_PRIME, hash_buckets_numpy
from tfmec.models import DeepFM

V, D = 60, 8


def _table(v=V, d=D, seed=0):
    return np.random.default_rng(seed).normal(scale=0.1, size=(v, d)).astype("float32")


def _weight(layer, name):
    return next(w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == name)


def _bytes_of(layer) -> int:
    return sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)


def _model(layer):
    inp = keras.Input(shape=(), dtype="int32", name="ids")
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(layer(inp))
    return keras.Model(inp, out)


def _layer_contract(layer, ids, trainable, non_trainable, tmp_path):
    """Keras's layer-test contract: output shape, weight counts, config round trip, functional use,
    ``.keras`` save/load with identical outputs; returns the eager output."""
    out = np.asarray(layer(ids))
    assert out.shape == ids.shape + (layer.output_dim,) and out.dtype == np.float32
    assert tuple(layer.compute_output_shape(ids.shape)) == out.shape
    assert len(layer.trainable_weights) == trainable and len(layer.non_trainable_weights) == non_trainable
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(None)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(ids)), out)
    assert not any(isinstance(v, np.ndarray) for v in layer.get_config().values())  # arrays live in weights
    model = _model(layer)
    flat = ids.reshape(-1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    back = keras.models.load_model(path)
    np.testing.assert_array_equal(back.predict(flat, verbose=0), model.predict(flat, verbose=0))
    for w, w2 in zip(layer.weights, back.get_layer(layer.name).weights):
        assert tf.as_dtype(w.dtype) == tf.as_dtype(w2.dtype)
    return out


# ============================================================================ int8
def test_quantize_int8_rounds_to_half_a_step():
    table = _table()
    table[3] = 0.0  # an all-zero row decodes to exact zeros
    q, step = quantize_int8(table)
    assert q.dtype == np.int8 and step.dtype == np.float32 and step.shape == (V,)
    assert np.abs(q).max() == 127 and step[3] == 1.0 and not q[3].any()
    rows = np.arange(V) != 3
    np.testing.assert_allclose(step[rows], np.abs(table[rows]).max(1) / 127, rtol=1e-6)
    back = q * step[:, None]
    assert np.all(np.abs(back - table) <= step[:, None] / 2 + 1e-7)
    qt, st = quantize_int8(table, per_row=False)
    assert st.shape == (1,) and np.isclose(st[0], np.abs(table).max() / 127)
    assert np.all(np.abs(qt * st[0] - table) <= st[0] / 2 + 1e-7)
    with pytest.raises(ValueError, match="NaN"):
        quantize_int8(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("per_row", [True, False])
def test_int8_layer_contract(per_row, tmp_path):
    table = _table()
    layer = Int8Embedding.from_table(table, per_row_scale=per_row, name="int8")
    ids = np.array([[0, 5, 59], [7, 7, 1]], dtype="int32")
    out = _layer_contract(layer, ids, trainable=0, non_trainable=2, tmp_path=tmp_path)
    np.testing.assert_array_equal(out, layer.dequantized_table()[ids])
    np.testing.assert_allclose(out, table[ids], atol=np.abs(table).max() / 254 + 1e-7)
    assert _weight(layer, "embeddings").dtype in ("int8", tf.int8)
    assert tuple(_weight(layer, "scales").shape) == ((V,) if per_row else (1,))
    assert layer.storage_bytes == _bytes_of(layer) == V * D + 4 * (V if per_row else 1)


def test_int8_out_of_range_ids_read_the_oov_row():
    layer = Int8Embedding.from_table(_table(), oov_id=2)
    got = np.asarray(layer(np.array([-1, V, 10**9, 2], dtype="int64")))
    for row in got[:3]:
        np.testing.assert_array_equal(row, got[3])
    with pytest.raises(ValueError, match=rf"oov_id must be in \[0, {V}\), got {V}"):
        Int8Embedding(V, D, oov_id=V)
    with pytest.raises(ValueError, match="embeddings must be int8 values, got dtype int64"):
        Int8Embedding(V, D, embeddings=np.full((V, D), 300))
    with pytest.raises(ValueError, match=rf"scales must have shape \({V},\), got \(3,\)"):
        Int8Embedding(V, D, scales=np.ones(3))


def test_int8_equals_absmax_reference_and_keras3_embedding_quantize():
    """Per-row abs-max int8 against a NumPy reference in both modes; in Keras 3 mode also against
    Keras's own ``Embedding.quantize("int8")`` (tf-keras has no ``quantize``)."""
    table = _table(seed=3)
    ours = Int8Embedding.from_table(table)
    ours.build(None)
    step = np.abs(table).max(axis=1) / 127.0
    reference = np.clip(np.rint(table / step[:, None]), -127, 127)
    np.testing.assert_array_equal(_weight(ours, "embeddings").numpy().astype(np.float64), reference)
    ids = np.arange(V, dtype="int32")
    np.testing.assert_allclose(np.asarray(ours(ids)), reference * step[:, None], rtol=1e-6, atol=1e-7)
    if IS_LEGACY_KERAS:
        return
    ref = keras.layers.Embedding(V, D)
    ref.build((None,))
    ref.set_weights([table])
    ref.quantize("int8")
    np.testing.assert_array_equal(_weight(ours, "embeddings").numpy(), ref._embeddings.numpy())
    np.testing.assert_allclose(np.asarray(ours(ids)), np.asarray(ref(ids)), rtol=1e-6, atol=1e-7)


def test_int8_model_trains_around_the_frozen_table(tmp_path):
    layer = Int8Embedding.from_table(_table(), name="int8")
    model = _model(layer)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    table_before = [w.copy() for w in layer.get_weights()]
    head_before = model.get_layer("head").get_weights()[0].copy()
    ids = np.arange(32, dtype="int32")
    model.fit(ids, (ids % 2).astype("float32"), batch_size=32, epochs=1, verbose=0)
    for w, w0 in zip(layer.get_weights(), table_before):  # post-training quantisation: the table is frozen
        np.testing.assert_array_equal(w, w0)
    assert not np.array_equal(model.get_layer("head").get_weights()[0], head_before)  # the rest trains


# ============================================================================ hashing trick
def test_hash_is_deterministic_in_range_and_matches_numpy():
    ids = np.concatenate([np.arange(5000), [HASH_PRIME - 1, 2**31 - 2]]).astype("int64")
    for b, salt in ((1, 0), (7, 0), (977, 3), (4096, 12345)):
        got = np.asarray(hash_buckets(ids, b, salt))
        assert got.dtype == np.int32 and got.min() >= 0 and got.max() < b
        np.testing.assert_array_equal(got, hash_buckets_numpy(ids, b, salt))
        np.testing.assert_array_equal(got, np.asarray(hash_buckets(ids, b, salt)))
    assert not np.array_equal(hash_buckets_numpy(ids, 977, 0), hash_buckets_numpy(ids, 977, 1))


@pytest.mark.parametrize("b", [97, 1000, 4096, 50_000])
def test_hash_spreads_consecutive_ids_like_a_random_function(b):
    """The frequent ids are the consecutive ids 1, 2, ...: their collisions must be those of chance (no
    arithmetic structure), measured by the distinct buckets of ids 0..b-1 (within 4 standard deviations)."""
    for salt in (0, 1, field_salt("C7")):
        distinct = len(np.unique(hash_buckets_numpy(np.arange(b), b, salt)))
        expected = b * (1 - (1 - 1 / b) ** b)
        sd = np.sqrt(b * np.exp(-1) * (1 - 2 * np.exp(-1)))
        assert abs(distinct - expected) < 4 * sd, (b, salt, distinct, expected)


def test_hashed_layer_contract(tmp_path):
    layer = HashedEmbedding(V, 13, D, salt=5, seed=1, name="hashed")
    ids = np.array([[0, 5, 59], [7, 7, 1]], dtype="int32")
    out = _layer_contract(layer, ids, trainable=1, non_trainable=0, tmp_path=tmp_path)
    table = _weight(layer, "embeddings").numpy()
    np.testing.assert_array_equal(out, table[hash_buckets_numpy(ids, 13, 5)])
    assert layer.storage_bytes == _bytes_of(layer) == 13 * D * 4


def test_hashed_out_of_range_and_negative_ids_read_the_oov_bucket():
    layer = HashedEmbedding(V, 11, D, seed=0)
    got = np.asarray(layer(np.array([-1, -(2**40), V, 2**40, 0], dtype="int64")))
    for row in got[:4]:
        np.testing.assert_array_equal(row, got[4])
    np.testing.assert_array_equal(np.asarray(layer.bucket_of(np.array([-3, V]))), np.asarray(layer.bucket_of([0, 0])))
    with pytest.raises(ValueError, match=r"num_buckets must be in \[1, 2\*\*31\), got 0"):
        HashedEmbedding(V, 0, D)
    with pytest.raises(TypeError, match="ids must be integers, got dtype string"):
        layer(tf.constant(["a"]))


def test_hashed_model_trains_the_touched_buckets():
    layer = HashedEmbedding(V, 17, D, seed=0, name="hashed")
    model = _model(layer)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    before = _weight(layer, "embeddings").numpy().copy()
    ids = np.array([3, 4, 5, 6], dtype="int32")
    model.fit(ids, np.array([1, 0, 1, 0], "float32"), batch_size=4, epochs=1, verbose=0)
    changed = np.flatnonzero(np.any(_weight(layer, "embeddings").numpy() != before, axis=1))
    assert set(changed) == set(hash_buckets_numpy(ids, 17).tolist())


# ============================================================================ budgets
TABLES = [TableShape("embedding_a", "a", 10, 8), TableShape("linear_a", "a", 10, 1),
          TableShape("embedding_b", "b", 1000, 8), TableShape("linear_b", "b", 1000, 1),
          TableShape("embedding_c", "c", 50_000, 8), TableShape("linear_c", "c", 50_000, 1)]


@pytest.mark.parametrize("budget", [9 * 4 * 3, 10_000, 123_457, 4 * 9 * 51_010 - 1, 10**9])
def test_bucket_cap_is_the_largest_that_fits(budget):
    plan = allocate_buckets(TABLES, budget)
    cap, buckets = plan["cap"], plan["buckets"]
    assert plan["bytes"] == table_bytes(TABLES, buckets) <= budget
    assert all(buckets[t.name] == min(t.rows, cap) for t in TABLES)
    if cap < max(t.rows for t in TABLES):
        assert table_bytes(TABLES, {t.name: min(t.rows, cap + 1) for t in TABLES}) > budget  # maximal
    assert plan["hashed"] == [t.name for t in TABLES if t.rows > cap]
    assert buckets["embedding_a"] == buckets["linear_a"] and buckets["embedding_c"] == buckets["linear_c"]


def test_bucket_arithmetic_by_hand():
    # 10 ids of field a fit whole (2 tables x 10 rows x 9 floats = 360 bytes); b and c get the cap C:
    # 360 + 2 * 36 * C <= 36_360  ->  C = 500
    plan = allocate_buckets(TABLES, 36_360)
    assert plan["cap"] == 500 and plan["bytes"] == 36_360
    assert plan["hashed"] == ["embedding_b", "linear_b", "embedding_c", "linear_c"]
    full = allocate_buckets(TABLES, table_bytes(TABLES))
    assert full["hashed"] == [] and full["bytes"] == table_bytes(TABLES)
    with pytest.raises(ValueError, match="at least 108 bytes"):
        allocate_buckets(TABLES, 107)


@pytest.fixture(scope="module")
def tiny():
    """1,500 synthetic rows, four categorical fields (10 .. 3,000 ids), two numeric; a trained DeepFM."""
    data = load(SyntheticCTR(rows=1500, seed=0, vocab_sizes=[10, 100, 1000, 3000], num_numeric=2), batch_size=256,
                progress=False)
    base = DeepFM(data.schema, embedding_dim=D, hidden_units=(16,), seed=0)
    base.compile("adam", "binary_crossentropy")
    base.fit(data.train, epochs=1, verbose=0)
    return data, base


def _build(data):
    return lambda factory=None: DeepFM(data.schema, embedding_dim=D, hidden_units=(16,), seed=0,
                                       embedding_factory=factory)


def test_hashed_model_holds_the_planned_bytes(tiny):
    data, base = tiny
    tables = probe_tables(_build(data))
    assert {t.name for t in tables} == {f"{p}_{f.name}" for f in data.schema.categorical for p in ("embedding", "linear")}
    assert table_bytes(tables) == embedding_bytes(base)
    budget = embedding_bytes(base) // 8
    plan = allocate_buckets(tables, budget)
    model = _build(data)(hashed_embedding_factory(plan["buckets"], seed=0))
    assert embedding_bytes(model) == plan["bytes"] <= budget
    hashed = {layer.name for layer in model.layers if isinstance(layer, HashedEmbedding)}
    assert hashed == set(plan["hashed"]) and hashed
    assert all(isinstance(model.get_layer(t.name), keras.layers.Embedding) for t in tables if t.name not in hashed)


def test_hash_budget_precedence_and_execution_order():
    full = 8000
    ctx = types.SimpleNamespace(cfg=RunConfig(hash_bytes=None), models={})
    assert hash_budget(ctx, full) == (1000, "baseline/8")
    ctx.models["mec"] = (None, {"embedding_bytes": 1234})
    assert hash_budget(ctx, full) == (1234, "mec")
    ctx.cfg = RunConfig(hash_bytes=777)
    assert hash_budget(ctx, full) == (777, "hash_bytes")
    assert execution_order(["none", "hash", "mec", "int8"]) == ["none", "mec", "hash", "int8"]
    assert execution_order(["none", "mec+afm", "afm", "mec"]) == ["none", "mec", "mec+afm", "afm"]
    assert execution_order(["hash", "mec+afm", "mec"]) == ["mec", "mec+afm", "hash"]
    assert execution_order(["mec", "hash"]) == ["mec", "hash"]
    assert execution_order(["hash", "none"]) == ["hash", "none"]


# ============================================================================ int8 model, exports
def test_quantize_embeddings_swaps_every_table(tiny):
    data, base = tiny
    model, report = quantize_embeddings(base)
    tables = [layer for layer in base.layers if isinstance(layer, keras.layers.Embedding)]
    assert set(report) == {t.name for t in tables}
    for t in tables:
        new = model.get_layer(t.name)
        assert isinstance(new, Int8Embedding)
        assert new.per_row_scale == (t.output_dim >= ROW_SCALE_MIN_DIM)
        assert report[t.name]["max_abs_error"] <= np.abs(t.get_weights()[0]).max() / 254 + 1e-7
    assert isinstance(base.get_layer(tables[0].name), keras.layers.Embedding)  # the input model is untouched
    expected = sum(t.input_dim * t.output_dim + 4 * (t.input_dim if t.output_dim >= ROW_SCALE_MIN_DIM else 1)
                   for t in tables)
    assert embedding_bytes(model) == expected
    assert 2.5 < embedding_bytes(base) / embedding_bytes(model) < 4.0
    x = next(iter(data.test))[0]
    diff = np.abs(np.asarray(model(x, training=False)) - np.asarray(base(x, training=False))).max()
    assert diff < 0.02  # the tables moved by at most half a step
    with pytest.raises(ValueError, match="layers .nope. names no embedding table of the model; its tables are"):
        quantize_embeddings(base, layers=["nope"])


@pytest.mark.parametrize("kind", ["int8", "hash"])
def test_saved_model_and_onnx_match_keras(tiny, kind, tmp_path):
    data, base = tiny
    if kind == "int8":
        model, _ = quantize_embeddings(base)
    else:
        plan = allocate_buckets(probe_tables(_build(data)), embedding_bytes(base) // 8)
        model = _build(data)(hashed_embedding_factory(plan["buckets"], seed=0))
    ids = take_rows(data.test, 300)
    path = export.saved_model(model, str(tmp_path / "sm"), data.encoder)
    onnx_path = export.onnx(model, str(tmp_path / "model.onnx"), data.encoder) if onnx_available() else None
    report = export.check_parity(model, ids, saved_model_path=path, onnx_path=onnx_path, encoder=data.encoder)
    assert report["saved_model_max_abs_diff"] <= 1e-6
    if onnx_path is not None:
        assert report["onnx_max_abs_diff"] <= 1e-5
    # the int8 table stays int8 in the SavedModel's variables
    dtypes = tf.train.load_checkpoint(os.path.join(path, "variables", "variables")).get_variable_to_dtype_map()
    if kind == "int8":
        assert tf.int8 in dtypes.values()
    # out-of-range ids go through the served graph like the Keras model
    bad = dict(ids, **{f.name: np.full(len(ids[f.name]), -7, np.int32) for f in data.schema.categorical})
    got = export.predict_saved_model(tf.saved_model.load(path).signatures["ids"], bad)
    np.testing.assert_allclose(got, keras_probabilities(model, bad), atol=1e-6)
