"""Tests of tfmec.layers.TieredEmbedding (issue 19): popularity tiers (exact rows, PQ codes, a zero-byte
hashed tail) in one table. Every lookup is compared with a NumPy decode of the arrays the layer was given.

Both Keras modes: ``pytest tests/test_tiered_embedding.py`` and ``TF_USE_LEGACY_KERAS=1 pytest ...``.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.backend import keras
from tfmec.layers import TieredEmbedding, tiers_storage_bytes
from tfmec.layers.tiered_embedding import Tier, hashed_codes, hashed_codes_numpy

D = 4
# two layouts: every coded tier of one M (their codes can share one decode) and coded tiers of different
# M and code widths (packed 4-bit, 8-bit and 3-bit codes)
LAYOUTS = {
    "shared_m": [
        {"kind": "exact", "rows": 5},
        {"kind": "pq", "rows": 9, "num_subspaces": 2, "num_codewords": 16},
        {"kind": "pq", "rows": 7, "num_subspaces": 2, "num_codewords": 4},
        {"kind": "hashed", "rows": 19, "num_subspaces": 2, "num_codewords": 8},
    ],
    "mixed_m": [
        {"kind": "exact", "rows": 3},
        {"kind": "pq", "rows": 8, "num_subspaces": 4, "num_codewords": 256},
        {"kind": "pq", "rows": 6, "num_subspaces": 2, "num_codewords": 5},
        {"kind": "exact", "rows": 4},
        {"kind": "pq", "rows": 5, "num_subspaces": 1, "num_codewords": 16},
        {"kind": "hashed", "rows": 11, "num_subspaces": 4, "num_codewords": 6},
        {"kind": "hashed", "rows": 3, "num_subspaces": 2, "num_codewords": 16},
    ],
    # exact rows between and after coded tiers of one M
    "exact_between": [
        {"kind": "pq", "rows": 6, "num_subspaces": 2, "num_codewords": 4},
        {"kind": "exact", "rows": 3},
        {"kind": "pq", "rows": 4, "num_subspaces": 2, "num_codewords": 2},  # 1-bit codes
        {"kind": "hashed", "rows": 10, "num_subspaces": 2, "num_codewords": 8},
        {"kind": "exact", "rows": 2},
    ],
}


def _arrays(tiers, d=D, seed=0):
    """Random initial arrays of every tier (what ``arrays=`` takes)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in tiers:
        if t["kind"] == "exact":
            out.append({"rows": rng.normal(size=(t["rows"], d)).astype("float32")})
            continue
        m, k = t["num_subspaces"], t["num_codewords"]
        entry = {"codebooks": rng.normal(size=(m, k, d // m)).astype("float32")}
        if t["kind"] == "pq":
            entry["codes"] = rng.integers(0, k, size=(t["rows"], m))
        out.append(entry)
    return out


def _vocab(tiers):
    return sum(t["rows"] for t in tiers)


def _reference(ids, tiers, arrays, oov_id=0, hash_salt=0, d=D):
    """NumPy rows ``[N, d]`` of ``ids``: each id read from its tier's given arrays; ids outside
    ``[0, V)`` read row ``oov_id``."""
    v = _vocab(tiers)
    ids = np.asarray(ids, np.int64).reshape(-1)
    ids = np.where((ids >= 0) & (ids < v), ids, oov_id)
    out = np.zeros((ids.size, d), np.float32)
    start = 0
    for t, (tier, arr) in enumerate(zip(tiers, arrays)):
        sel = np.flatnonzero((ids >= start) & (ids < start + tier["rows"]))
        if tier["kind"] == "exact":
            out[sel] = arr["rows"][ids[sel] - start]
        elif sel.size:
            m, k = tier["num_subspaces"], tier["num_codewords"]
            codes = (arr["codes"][ids[sel] - start] if tier["kind"] == "pq"
                     else hashed_codes_numpy(ids[sel], m, k, salt=hash_salt + t))
            out[sel] = np.concatenate([arr["codebooks"][j][codes[:, j]] for j in range(m)], axis=1)
        start += tier["rows"]
    return out


def _boundary_ids(tiers):
    """Every tier's first and last id."""
    ids, start = [], 0
    for t in tiers:
        ids += [start, start + t["rows"] - 1]
        start += t["rows"]
    return np.asarray(ids, np.int64)


def _weight(layer, name):
    return next(w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == name)


def _held_bytes(layer):
    return sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)


# ----------------------------------------------------------------------------- lookups


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_tier_boundary_reads_its_own_tier_and_oov_reads_the_oov_row(layout):
    tiers = LAYOUTS[layout]
    arrays = _arrays(tiers)
    v = _vocab(tiers)
    for oov_id, salt in ((0, 0), (6, 13)):
        layer = TieredEmbedding(v, D, tiers, arrays=arrays, oov_id=oov_id, hash_salt=salt)
        ids = _boundary_ids(tiers)
        out = np.asarray(layer(tf.constant(ids, tf.int32)))
        assert out.shape == (ids.size, D) and out.dtype == np.float32
        np.testing.assert_array_equal(out, _reference(ids, tiers, arrays, oov_id, salt))
        # exact tiers hold the given rows; pq tiers the given codebooks at the given codes
        start = 0
        for tier, arr in zip(tiers, arrays):
            rows = out[ids.tolist().index(start)], out[ids.tolist().index(start + tier["rows"] - 1)]
            if tier["kind"] == "exact":
                np.testing.assert_array_equal(rows, arr["rows"][[0, -1]])
            elif tier["kind"] == "pq":
                for row, local in zip(rows, (0, tier["rows"] - 1)):
                    want = np.concatenate([arr["codebooks"][m, arr["codes"][local, m]]
                                           for m in range(tier["num_subspaces"])])
                    np.testing.assert_array_equal(row, want)
            start += tier["rows"]
        # every id, through decoded_table (int64 ids)
        np.testing.assert_array_equal(layer.decoded_table(), _reference(np.arange(v), tiers, arrays, oov_id, salt))
        # out-of-range and negative ids (int32 and huge int64 ones that must not wrap) read row oov_id
        bad32 = np.array([-1, -7, v, v + 3, 2**31 - 1], np.int32)
        bad64 = np.array([-(2**40), 2**32 + 1, 2**33 + oov_id], np.int64)
        oov_row = _reference([oov_id], tiers, arrays, oov_id, salt)[0]
        for bad in (bad32, bad64):
            np.testing.assert_array_equal(np.asarray(layer(tf.constant(bad))), np.tile(oov_row, (bad.size, 1)))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hashed_tail_reads_the_codebook_rows_its_hash_selects(layout):
    tiers = LAYOUTS[layout]
    arrays = _arrays(tiers, seed=3)
    v = _vocab(tiers)
    salt = 5
    layer = TieredEmbedding(v, D, tiers, arrays=arrays, hash_salt=salt)
    start = 0
    for t, (tier, arr) in enumerate(zip(tiers, arrays)):
        ids = np.arange(start, start + tier["rows"])
        start += tier["rows"]
        if tier["kind"] != "hashed":
            continue
        m, k = tier["num_subspaces"], tier["num_codewords"]
        codes = hashed_codes_numpy(ids, m, k, salt=salt + t)
        assert codes.shape == (ids.size, m) and codes.min() >= 0 and codes.max() < k
        want = np.concatenate([arr["codebooks"][j][codes[:, j]] for j in range(m)], axis=1)
        np.testing.assert_array_equal(layer.decoded_table(ids), want)
        # another salt gives other codes: the layer really hashes with hash_salt + t
        assert not np.array_equal(hashed_codes_numpy(ids, m, k, salt=salt + t + 1), codes)




@pytest.mark.parametrize("k", [2, 3, 4, 6, 16, 100, 256, 65536])
def test_hashed_codes_tf_equals_numpy(k):
    rng = np.random.default_rng(k)
    ids = np.concatenate([[0, 1, 2, 2**31 - 2, 2**31 - 1], rng.integers(0, 2**31 - 1, 500), np.arange(1000)])
    for m, salt in ((1, 0), (3, 1), (8, 97)):
        want = hashed_codes_numpy(ids, m, k, salt=salt)
        assert want.shape == (ids.size, m) and want.min() >= 0 and want.max() < k
        for dtype in (tf.int32, tf.int64):
            got = hashed_codes(tf.constant(ids, dtype), m, k, salt=salt)
            assert got.dtype == tf.int32
            np.testing.assert_array_equal(np.asarray(got), want)
        # the codes of consecutive ids spread over the codewords (a tail of ids does not collapse)
        small = want[-1000:]
        for j in range(m):
            assert np.unique(small[:, j]).size == min(k, 1000) or np.unique(small[:, j]).size > min(k, 1000) // 2


# ----------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("contrastive", [0.0, 0.1])
def test_storage_bytes_equal_the_weights_and_the_config(layout, contrastive):
    tiers = LAYOUTS[layout]
    v = _vocab(tiers)
    layer = TieredEmbedding(v, D, tiers, contrastive_weight=contrastive, seed=0)
    layer(tf.constant([0, 1]))
    assert _held_bytes(layer) == layer.storage_bytes
    assert tiers_storage_bytes(layer.get_config()["tiers"], D, contrastive > 0) == layer.storage_bytes
    # by hand: exact 4 d per id, pq ceil(M bits / 8) per id + K d 4, hashed K d 4; the 8-byte step counter
    want = 0
    for t in tiers:
        if t["kind"] == "exact":
            want += t["rows"] * 4 * D
        else:
            want += t["num_codewords"] * D * 4
            if t["kind"] == "pq":
                bits = int(np.ceil(np.log2(t["num_codewords"])))
                want += t["rows"] * int(np.ceil(t["num_subspaces"] * bits / 8))
    assert layer.storage_bytes == want + (8 if contrastive else 0)
    assert (_weight(layer, "negatives_step") is not None) if contrastive else layer.negatives_step is None


def test_bits_packing_and_the_docstring_example():
    # K=16 -> 4 bits: ceil(M * 4 / 8) bytes per id, uint8 codes
    for m, per_id in ((1, 1), (2, 1), (3, 2), (4, 2), (8, 4)):
        d = 2 * m * 3 if m != 1 else 6
        tiers = [{"kind": "pq", "rows": 10, "num_subspaces": m, "num_codewords": 16}]
        layer = TieredEmbedding(10, d, tiers)
        layer(tf.constant([0]))
        codes = _weight(layer, "codes_0")
        assert tuple(codes.shape) == (10, per_id) and codes.dtype in ("uint8", tf.uint8) and not codes.trainable
        assert layer.storage_bytes == 10 * per_id + 16 * d * 4 == _held_bytes(layer)
        assert Tier("pq", 10, m, 16).id_bytes(d) == per_id
    # explicit wider bits: 5 bits x 3 sub-spaces = 15 bits -> 2 bytes; K=256 -> 8 bits -> M bytes
    assert Tier("pq", 7, 3, 16, bits=5).storage_bytes(6) == 7 * 2 + 16 * 6 * 4
    assert Tier("pq", 7, 4, 256).storage_bytes(8) == 7 * 4 + 256 * 8 * 4
    assert Tier("hashed", 10**9, 4, 16).storage_bytes(8) == 16 * 8 * 4  # zero bytes per id
    assert Tier("exact", 3).storage_bytes(5) == 3 * 5 * 4
    layer = TieredEmbedding(1000, 16, tiers=[
        {"kind": "exact", "rows": 50},
        {"kind": "pq", "rows": 450, "num_subspaces": 4, "num_codewords": 16},
        {"kind": "hashed", "rows": 500, "num_subspaces": 4, "num_codewords": 16}])
    assert tuple(layer(tf.constant([0, 7, 999])).shape) == (3, 16)
    assert layer.storage_bytes == 6148 == _held_bytes(layer)
    # a pq tier with explicit bits keeps them through the config
    packed = TieredEmbedding(12, 6, [{"kind": "pq", "rows": 12, "num_subspaces": 3, "num_codewords": 16, "bits": 5}])
    packed(tf.constant([0]))
    assert tuple(_weight(packed, "codes_0").shape) == (12, 2)
    assert packed.get_config()["tiers"][0]["bits"] == 5 and packed.storage_bytes == _held_bytes(packed)


# ----------------------------------------------------------------------------- shapes, masks, config


def test_shapes_symbolic_shapes_and_mask_zero():
    tiers = LAYOUTS["mixed_m"]
    arrays = _arrays(tiers)
    v = _vocab(tiers)
    ids = np.array([[0, 3, 9, 0], [12, 20, 39, 0], [40, -1, 1, 2]], np.int32)
    table = _reference(np.arange(v), tiers, arrays)
    for mask_zero in (False, True):
        layer = TieredEmbedding(v, D, tiers, arrays=arrays, mask_zero=mask_zero)
        for x in (ids[:, 0], ids[:, :1], ids):  # [b], [b, 1], [b, L]
            out = np.asarray(layer(x))
            assert out.shape == x.shape + (D,)
            np.testing.assert_array_equal(out, table[np.where((x >= 0) & (x < v), x, 0)])
            assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + x.shape[1:] + (D,)
            mask = layer.compute_mask(x)
            if mask_zero:
                np.testing.assert_array_equal(np.asarray(mask), x != 0)
            else:
                assert mask is None
        assert layer.supports_masking == mask_zero
    # symbolic: a functional model over [batch, L] histories, the mask reaching a masked pooling
    layer = TieredEmbedding(v, D, tiers, arrays=arrays, mask_zero=True)
    inp = keras.Input(shape=(4,), dtype="int32")
    emb = layer(inp)
    assert tuple(emb.shape) == (None, 4, D)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling1D()(emb))
    rows = table[np.where((ids >= 0) & (ids < v), ids, 0)]
    keep = (ids != 0)[..., None]
    np.testing.assert_allclose(model.predict(ids, verbose=0), (rows * keep).sum(1) / keep.sum(1), atol=1e-6)


def _model(layer, name="ids"):
    inp = keras.Input(shape=(), dtype="int32", name=name)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(layer(inp))
    return keras.Model(inp, out)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_config_round_trip_and_keras_save_load(layout, tmp_path):
    tiers = LAYOUTS[layout]
    v = _vocab(tiers)
    layer = TieredEmbedding(v, D, tiers, arrays=_arrays(tiers), oov_id=2, contrastive_weight=0.1, num_negatives=3,
                            contrastive_temperature=0.7, hash_salt=4, seed=9, mask_zero=True, name="tiered")
    ids = np.concatenate([np.arange(-2, v + 2), [0, 5]]).astype("int32")
    out = np.asarray(layer(ids))
    config = layer.get_config()
    assert "arrays" not in config and len(repr(config)) < 3000  # the weights carry the arrays
    assert config["tiers"] == [Tier.from_config(t).to_config() for t in tiers]
    clone = TieredEmbedding.from_config(config)
    clone(ids)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(ids)), out)
    assert clone.get_config() == config

    model = _model(layer)
    want = model.predict(ids, verbose=0)
    path = str(tmp_path / "tiered.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0), want)
    again = loaded.get_layer("tiered")
    assert isinstance(again, TieredEmbedding) and again.get_config() == config
    for w in layer.weights:
        name = w.name.split("/")[-1].split(":")[0]
        np.testing.assert_array_equal(np.asarray(_weight(again, name)), np.asarray(w))
        assert tf.as_dtype(_weight(again, name).dtype) == tf.as_dtype(w.dtype)


def test_one_training_step_with_the_contrastive_term():
    tiers = LAYOUTS["mixed_m"]
    v = _vocab(tiers)
    arrays = _arrays(tiers, seed=4)
    layer = TieredEmbedding(v, D, tiers, arrays=arrays, contrastive_weight=0.5, seed=1, name="tiered")
    model = _model(layer)
    ids = np.arange(v, dtype="int32")
    model(ids, training=False)
    assert len(layer.losses) == 0
    layer(ids, training=True)
    assert len(layer.losses) >= 1 and float(layer.last_contrastive_loss) > 0
    step = int(np.asarray(layer.negatives_step))

    def tier_arrays():  # each tier's trained part (a view of the one table weight) and its codes
        out = {}
        for t, tier in enumerate(tiers):
            out[t] = np.asarray(layer.tier_rows(t) if tier["kind"] == "exact" else layer.tier_codebooks(t)).copy()
            if tier["kind"] == "pq":
                out[f"codes_{t}"] = np.asarray(_weight(layer, f"codes_{t}")).copy()
        return out

    before = tier_arrays()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit(ids, (ids % 2).astype("float32")[:, None], batch_size=v, epochs=1, verbose=0)
    after = tier_arrays()
    assert int(np.asarray(layer.negatives_step)) > step
    for t, tier in enumerate(tiers):
        assert not np.array_equal(after[t], before[t]), t  # exact rows and codebooks train
        if tier["kind"] == "pq":
            np.testing.assert_array_equal(after[f"codes_{t}"], before[f"codes_{t}"])  # codes never do
    assert {w.name.split("/")[-1].split(":")[0] for w in layer.trainable_weights} == {"table"}
    # frozen: nothing trains, codes included
    frozen = TieredEmbedding(v, D, tiers, arrays=arrays, trainable_codebooks=False, contrastive_weight=0.5)
    frozen(ids)
    assert frozen.trainable_weights == []




@pytest.mark.parametrize("layout", ["coded_only", "shared_m", "mixed_m"])
def test_mixed_float16_outputs_float16(layout):
    tiers = LAYOUTS["shared_m"][1:] if layout == "coded_only" else LAYOUTS[layout]
    arrays = _arrays(tiers)
    v = _vocab(tiers)
    ids = np.arange(-1, v + 1, dtype="int32")
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        layer = TieredEmbedding(v, D, tiers, arrays=arrays, contrastive_weight=0.1, seed=0)
        out = layer(ids)
        assert out.dtype == tf.float16
        np.testing.assert_allclose(np.asarray(out, np.float32), _reference(ids, tiers, arrays), rtol=1e-3, atol=1e-3)
        model = _model(layer)
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(ids, np.ones((ids.size, 1), "float32"), batch_size=ids.size, epochs=1, verbose=0)
        assert int(np.asarray(layer.negatives_step)) == 1
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------------------- errors


def test_invalid_arguments():
    exact = {"kind": "exact", "rows": 4}
    pq = {"kind": "pq", "rows": 6, "num_subspaces": 2, "num_codewords": 4}
    with pytest.raises(ValueError, match="sum to 10, not input_dim 11"):
        TieredEmbedding(11, 4, [exact, pq])
    with pytest.raises(ValueError, match="num_subspaces 3 does not divide output_dim 4"):
        TieredEmbedding(10, 4, [exact, dict(pq, num_subspaces=3)])
    with pytest.raises(ValueError, match="does not divide"):
        TieredEmbedding(10, 4, [exact, {"kind": "hashed", "rows": 6, "num_subspaces": 3, "num_codewords": 4}])
    good = [{"rows": np.zeros((4, 4))}, {"codes": np.zeros((6, 2), "int64"), "codebooks": np.zeros((2, 4, 2))}]
    TieredEmbedding(10, 4, [exact, pq], arrays=good)
    with pytest.raises(ValueError, match=r"codes must be integers \[6, 2\]"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0], dict(good[1], codes=np.zeros((6, 3), "int64"))])
    with pytest.raises(ValueError, match=r"codes must be integers"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0], dict(good[1], codes=np.zeros((6, 2), "float32"))])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0], dict(good[1], codes=np.full((6, 2), 4))])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0], dict(good[1], codes=np.full((6, 2), -1))])
    with pytest.raises(ValueError, match=r"codebooks must be \[2, 4, 2\]"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0], dict(good[1], codebooks=np.zeros((2, 5, 2)))])
    with pytest.raises(ValueError, match=r"rows must be \[4, 4\]"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[{"rows": np.zeros((5, 4))}, good[1]])
    with pytest.raises(ValueError, match="arrays has 1 entries for 2 tiers"):
        TieredEmbedding(10, 4, [exact, pq], arrays=[good[0]])
    with pytest.raises(ValueError, match=r"unknown tier key\(s\) \['codewords'\]"):
        TieredEmbedding(10, 4, [exact, {"kind": "pq", "rows": 6, "num_subspaces": 2, "codewords": 4}])
    with pytest.raises(ValueError, match="tier kind must be one of"):
        TieredEmbedding(10, 4, [exact, dict(pq, kind="int8")])
    with pytest.raises(ValueError, match="at least 1 row"):
        TieredEmbedding(4, 4, [exact, dict(pq, rows=0)])
    with pytest.raises(ValueError, match="num_codewords in"):
        TieredEmbedding(10, 4, [exact, dict(pq, num_codewords=1)])
    with pytest.raises(ValueError, match="bits applies to pq tiers only"):
        Tier("hashed", 4, 2, 4, bits=2)
    with pytest.raises(ValueError, match="bits=3 cannot hold codes of K=16 codewords"):
        Tier("pq", 4, 2, 16, bits=3)
    with pytest.raises(ValueError, match="give at least one tier"):
        TieredEmbedding(10, 4, [])
    with pytest.raises(ValueError, match="oov_id"):
        TieredEmbedding(10, 4, [exact, pq], oov_id=10)


# ----------------------------------------------------------------------------- export

SM_TOL, ONNX_TOL = 1e-6, 1e-5


def _no_hashed(tiers):
    return [dict(t, kind="pq") if t["kind"] == "hashed" else t for t in tiers]


def _export_model(hashed=True):
    """Two tiered tables: an item id (coded tiers of one M) and a padded [batch, 5] history (coded tiers
    of different M, mask_zero, masked pooling); without ``hashed`` the hashed tiers become pq tiers."""
    item_tiers = LAYOUTS["shared_m"] if hashed else _no_hashed(LAYOUTS["shared_m"])
    hist_tiers = LAYOUTS["mixed_m"] if hashed else _no_hashed(LAYOUTS["mixed_m"])
    item = keras.Input(shape=(), dtype="int32", name="item")
    hist = keras.Input(shape=(5,), dtype="int32", name="hist")
    e1 = TieredEmbedding(_vocab(item_tiers), D, item_tiers, arrays=_arrays(item_tiers, seed=1), hash_salt=3,
                         name="item_table")(item)
    e2 = TieredEmbedding(_vocab(hist_tiers), D, hist_tiers, arrays=_arrays(hist_tiers, seed=2), mask_zero=True,
                         name="hist_table")(hist)
    x = keras.layers.Concatenate()([e1, keras.layers.GlobalAveragePooling1D()(e2)])
    keras.utils.set_random_seed(0)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8, activation="relu")(x))
    model = keras.Model({"item": item, "hist": hist}, out)
    rng = np.random.default_rng(0)
    n = 64
    h = rng.integers(1, _vocab(hist_tiers), (n, 5)).astype("int32")
    h[np.arange(5)[None, :] >= rng.integers(1, 6, (n, 1))] = 0
    h[:8, 0] = np.arange(_vocab(hist_tiers) - 8, _vocab(hist_tiers))  # the last ids: the hashed tail
    data = {"item": np.concatenate([np.arange(_vocab(item_tiers)), [-1, 10**6],
                                    rng.integers(0, _vocab(item_tiers), n - _vocab(item_tiers) - 2)]).astype("int32"),
            "hist": h}
    return model, data


def _keras_predictions(model, data):
    return model.predict({k: tf.constant(v) for k, v in data.items()}, verbose=0).reshape(-1)


@pytest.mark.parametrize("hashed", [False, True])
def test_export_parity_saved_model(hashed, tmp_path):
    model, data = _export_model(hashed)
    want = _keras_predictions(model, data)
    assert np.unique(np.round(want, 6)).size > 10  # the ids really change the prediction
    sm = export.saved_model(model, str(tmp_path / "sm"))
    assert export.max_abs_diff(export.predict_saved_model(sm, data), want) <= SM_TOL
    assert export.max_abs_diff(export.predict_saved_model(sm, data, batch_size=7), want) <= SM_TOL




@pytest.mark.parametrize("hashed", [False, True])
def test_export_parity_onnx(hashed, tmp_path):
    if not export.onnx_available():
        pytest.skip("tf2onnx / onnxruntime not installed")
    model, data = _export_model(hashed)
    want = _keras_predictions(model, data)
    path = export.onnx(model, str(tmp_path / "tiered.onnx"))
    assert export.max_abs_diff(export.predict_onnx(path, data), want) <= ONNX_TOL
    sm = export.saved_model(model, str(tmp_path / "sm"))
    report = export.check_parity(model, data, saved_model_path=sm, onnx_path=path)
    assert report["saved_model_max_abs_diff"] <= SM_TOL and report["onnx_max_abs_diff"] <= ONNX_TOL
