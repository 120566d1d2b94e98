"""Tests of tfmec.layers.QuantizedEmbedding and its helpers (both Keras modes)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.layers import (
    QuantizedEmbedding,
    contrastive_loss,
    decode_codes,
    pack_codes,
    semi_synthetic_negative_codes,
    unpack_codes,
)
from tfmec.mec.codes import FieldCodes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, M, K, SUB = 50, 4, 16, 3
D = M * SUB


def _field_codes(v=V, m=M, k=K, sub=SUB, projection=False, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, size=(v, m))
    codebooks = rng.normal(size=(m, k, sub)).astype("float32")
    proj = rng.normal(size=(m * sub, m * sub)).astype("float32") if projection else None
    return FieldCodes("f", codes, codebooks, proj)


def _ids(n=8, v=V, seed=1):
    return np.random.default_rng(seed).integers(0, v, size=(n,)).astype("int32")


def _model(layer):
    inp = keras.Input(shape=(), dtype="int32", name="ids")
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(layer(inp))
    return keras.Model(inp, out)


def _weight(layer, name):
    return next(w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == name)


def _value(layer, name):
    return _weight(layer, name).numpy()


# ----------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("with_projection", [False, True])
def test_output_matches_numpy_decode(with_projection):
    fc = _field_codes(projection=with_projection)
    layer = QuantizedEmbedding.from_codes(fc)
    ids = _ids(16)
    out = np.asarray(layer(ids))
    assert out.shape == (16, D) and out.dtype == np.float32
    np.testing.assert_allclose(out, fc.decode(ids), rtol=1e-5, atol=1e-5)
    ids3 = np.stack([ids[:5], ids[5:10], ids[10:15]], axis=1)  # [5, 3]
    out3 = np.asarray(layer(ids3))
    assert out3.shape == (5, 3, D)
    np.testing.assert_allclose(out3, fc.decode(ids3.reshape(-1)).reshape(5, 3, D), rtol=1e-5, atol=1e-5)
    assert layer.compute_output_shape((None,)) == (None, D)
    assert layer.compute_output_shape((None, 3)) == (None, 3, D)
    np.testing.assert_array_equal(np.asarray(layer.lookup_codes(ids)), fc.codes[ids].astype("int32"))
    # int64 ids too
    np.testing.assert_array_equal(np.asarray(layer(ids.astype("int64"))), out)


def test_code_dtypes_and_storage_bytes():
    small = QuantizedEmbedding.from_codes(_field_codes(k=256))
    small.build(None)
    assert _weight(small, "codes").dtype in ("uint8", tf.uint8)
    assert not _weight(small, "codes").trainable
    big = QuantizedEmbedding.from_codes(_field_codes(k=1024, v=20))
    big.build(None)
    assert _weight(big, "codes").dtype in ("uint16", tf.uint16)
    assert big.storage_bytes == 20 * M * 2 + M * 1024 * SUB * 4
    assert small.storage_bytes == V * M * 1 + M * 256 * SUB * 4
    proj = QuantizedEmbedding.from_codes(_field_codes(projection=True), bits=4)
    assert proj.storage_bytes == V * 2 + M * K * SUB * 4 + D * D * 4
    assert QuantizedEmbedding.is_embedding_table is True
    # the layer holds nothing else: bytes of its weights at stored width == storage_bytes
    proj.build(None)
    for layer in (small, big, proj):
        held = sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)
        assert held == layer.storage_bytes


def test_bitpacked_matches_unpacked():
    fc = _field_codes(k=16)
    plain = QuantizedEmbedding.from_codes(fc)
    packed = QuantizedEmbedding.from_codes(fc, bits=4)
    ids = np.arange(V, dtype="int32")
    np.testing.assert_array_equal(np.asarray(packed(ids)), np.asarray(plain(ids)))
    codes_w = _weight(packed, "codes")
    assert tuple(codes_w.shape) == (V, 2) and codes_w.dtype in ("uint8", tf.uint8)
    np.testing.assert_array_equal(codes_w.numpy(), pack_codes(fc.codes, 4))
    # a width that straddles bytes
    odd = QuantizedEmbedding.from_codes(fc, bits=5)
    np.testing.assert_array_equal(np.asarray(odd(ids)), np.asarray(plain(ids)))
    with pytest.raises(ValueError, match="bits=3 cannot hold codes of K=16 codewords"):
        QuantizedEmbedding.from_codes(fc, bits=3)


def test_pack_layout_is_little_end_first():
    np.testing.assert_array_equal(pack_codes(np.array([[3, 10, 7]]), 4), [[0xA3, 0x07]])
    np.testing.assert_array_equal(pack_codes(np.array([[1, 0, 1, 1, 0, 0, 0, 1, 1]]), 1), [[0b10001101, 0b1]])
    np.testing.assert_array_equal(pack_codes(np.array([[1, 2, 3, 0]]), 2), [[0b00111001]])


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 10, 12, 16])
def test_pack_unpack_round_trip(bits):
    from tfmec.layers.bitpack import unpack_codes_tf

    rng = np.random.default_rng(bits)
    for m in (1, 3, 4, 7, 16):
        codes = rng.integers(0, 2**bits, size=(37, m))
        packed = pack_codes(codes, bits)
        assert packed.dtype == np.uint8 and packed.shape == (37, (m * bits + 7) // 8)
        back = unpack_codes(packed, bits, m)
        assert back.dtype == (np.uint8 if bits <= 8 else np.uint16)
        np.testing.assert_array_equal(back, codes)
        np.testing.assert_array_equal(np.asarray(unpack_codes_tf(tf.constant(packed), bits, m)), codes)
    with pytest.raises(ValueError, match=rf"codes must lie in \[0, {2**bits}\) to be packed at {bits} bits"):
        pack_codes(np.array([[2**bits]]), bits)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_byte_table_decode_equals_code_by_code_decode(bits):
    """decode_packed_tf (the serving path of packed codes) gives exactly decode_codes(unpacked codes),
    for M that does not fill the last byte and K below 2**bits, and the layer's gradient reaches the
    codebooks through it."""
    from tfmec.layers.bitpack import decode_packed_tf, unpack_codes_tf
    from tfmec.layers.quantized_embedding import decode_codes

    rng = np.random.default_rng(bits)
    for m, k in ((1, 2), (3, 2**bits), (5, max(2, 2**bits - 1)), (8, 2**bits)):
        codes = rng.integers(0, k, size=(41, m))
        packed = tf.constant(pack_codes(codes, bits))
        codebooks = tf.constant(rng.normal(size=(m, k, 3)).astype("float32"))
        fast = np.asarray(decode_packed_tf(packed, codebooks, bits))
        slow = np.asarray(decode_codes(unpack_codes_tf(packed, bits, m), codebooks))
        assert fast.shape == (41, 3 * m)
        np.testing.assert_array_equal(fast, slow)
    layer = QuantizedEmbedding(20, 4, 2**bits, 2, codes=rng.integers(0, 2**bits, (20, 4)), bits=bits)
    with tf.GradientTape() as tape:
        out = layer(tf.constant([0, 3, 3, 19]))
        loss = tf.reduce_sum(out ** 2)
    grad = tape.gradient(loss, layer.codebooks)
    assert grad is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0


def test_oov_ids_map_to_oov_row():
    fc = _field_codes()
    for oov in (0, 7):
        layer = QuantizedEmbedding.from_codes(fc, oov_id=oov)
        out = np.asarray(layer(np.array([-5, V, V + 100], dtype="int32")))
        oov_row = np.asarray(layer(np.array([oov], dtype="int32")))[0]
        for row in out:
            np.testing.assert_array_equal(row, oov_row)
        np.testing.assert_allclose(oov_row, fc.decode([oov])[0], rtol=1e-6)
    # huge int64 ids must not wrap around into the table when cast to int32
    layer = QuantizedEmbedding.from_codes(fc, oov_id=7)
    out = np.asarray(layer(np.array([2**32 + 3, -(2**40)], dtype="int64")))
    np.testing.assert_allclose(out, fc.decode([7, 7]), rtol=1e-6)
    with pytest.raises(ValueError, match=rf"oov_id must be in \[0, {V}\), got {V}"):
        QuantizedEmbedding.from_codes(fc, oov_id=V)


def test_config_does_not_embed_arrays_and_round_trips():
    fc = _field_codes(projection=True)
    layer = QuantizedEmbedding.from_codes(fc, bits=4, contrastive_weight=0.1, seed=3, name="pq")
    ids = _ids(10)
    out = np.asarray(layer(ids))
    config = layer.get_config()
    flat = repr(config)
    assert "codes" not in config and "codebooks" not in config and len(flat) < 2000
    assert config["projection"] is True and config["bits"] == 4
    clone = QuantizedEmbedding.from_config(config)
    clone(ids)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(ids)), out)
    assert clone.get_config() == config


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"num_codewords must be in \[2, 65536\], got 1"):
        QuantizedEmbedding(10, 2, 1, 4)
    with pytest.raises(ValueError, match=r"codes must be \[10, 2\], got shape \(10, 3\)"):
        QuantizedEmbedding(10, 2, 16, 4, codes=np.zeros((10, 3), "int32"))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        QuantizedEmbedding(10, 2, 16, 4, codes=np.full((10, 2), 16))
    with pytest.raises(ValueError, match="contrastive_temperature must be > 0, got 0.0"):
        QuantizedEmbedding(10, 2, 16, 4, contrastive_temperature=0.0)
    with pytest.raises(ValueError, match=r"bits must be in \[1, 16\], got 17"):
        QuantizedEmbedding(10, 2, 16, 4, bits=17)


# ----------------------------------------------------------------------------- in a model


def test_keras_save_load_fit_and_frozen_codes(tmp_path):
    fc = _field_codes()
    layer = QuantizedEmbedding.from_codes(fc, name="pq")
    model = _model(layer)
    ids = _ids(32)
    before = model.predict(ids, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0), before)
    loaded_layer = loaded.get_layer("pq")
    assert isinstance(loaded_layer, QuantizedEmbedding)
    np.testing.assert_array_equal(_value(loaded_layer, "codes"), fc.codes)
    assert _weight(loaded_layer, "codes").dtype in ("uint8", tf.uint8)

    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    y = (ids % 2).astype("float32")[:, None]
    model.fit(ids, y, batch_size=32, epochs=1, verbose=0)
    assert not np.array_equal(_value(layer, "codebooks"), fc.codebooks)
    np.testing.assert_array_equal(_value(layer, "codes"), fc.codes)

    frozen = QuantizedEmbedding.from_codes(fc, trainable_codebooks=False, contrastive_weight=0.5)
    frozen_model = _model(frozen)
    assert len(frozen.trainable_weights) == 0
    frozen_model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    frozen_model.fit(ids, y, batch_size=32, epochs=1, verbose=0)
    np.testing.assert_array_equal(_value(frozen, "codebooks"), fc.codebooks)


def test_saved_model_serving_identical(tmp_path):
    fc = _field_codes(projection=True)
    model = _model(QuantizedEmbedding.from_codes(fc, bits=4, name="pq"))
    ids = _ids(16)

    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda x: {"prob": model(x, training=False)},
        input_signature=[tf.TensorSpec([None], tf.int32, name="ids")],
    )
    expected = np.asarray(module.serve(tf.constant(ids))["prob"])
    np.testing.assert_allclose(expected, model.predict(ids, verbose=0), rtol=0, atol=1e-6)
    path = str(tmp_path / "sm")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    reloaded = tf.saved_model.load(path)
    served = reloaded.signatures["serving_default"](ids=tf.constant(ids))["prob"]
    np.testing.assert_array_equal(np.asarray(served), expected)
    # out-of-vocabulary ids go through the serving graph too
    oov = reloaded.signatures["serving_default"](ids=tf.constant([-1, V + 5, 0], tf.int32))["prob"]
    np.testing.assert_array_equal(np.asarray(oov)[0], np.asarray(oov)[2])
    # the packed codes stay uint8 in the SavedModel's variables
    dtypes = tf.train.load_checkpoint(os.path.join(path, "variables", "variables")).get_variable_to_dtype_map()
    code_dtypes = [dt for name, dt in dtypes.items() if "codes" in name and "OPTIMIZER" not in name]
    assert code_dtypes == [tf.uint8], dtypes


# ----------------------------------------------------------------------------- contrastive


@pytest.mark.parametrize("k", [2, 16, 300])
def test_semi_synthetic_negatives_differ_in_one_subspace(k):
    rng = np.random.default_rng(k)
    codes = rng.integers(0, k, size=(2000, 5)).astype("int32")
    for seed in (7, None, tf.constant([1, 2], tf.int64)):
        neg = np.asarray(semi_synthetic_negative_codes(codes, k, 6, seed=seed))
        assert neg.shape == (2000, 6, 5) and neg.dtype == np.int32
        diff = neg != codes[:, None, :]
        np.testing.assert_array_equal(diff.sum(-1), 1)  # exactly one sub-space replaced, by another codeword
        assert neg.min() >= 0 and neg.max() < k
        # the replaced sub-space is spread over all sub-spaces
        assert set(np.argmax(diff, -1).ravel().tolist()) == set(range(5))
    stateless = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(
        np.asarray(semi_synthetic_negative_codes(codes, k, 6, seed=stateless)),
        np.asarray(semi_synthetic_negative_codes(codes, k, 6, seed=stateless)),
    )


def test_contrastive_loss_function_gradient():
    fc = _field_codes()
    codebooks = tf.Variable(fc.codebooks)
    codes = tf.constant(fc.codes[:20].astype("int32"))
    with tf.GradientTape() as tape:
        anchor = decode_codes(codes, codebooks)
        loss = contrastive_loss(anchor, codes, codebooks, num_negatives=4, contrastive_temperature=0.5, seed=1)
    grad = tape.gradient(loss, codebooks)
    assert float(loss) > 0
    assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0
    empty = contrastive_loss(tf.zeros([0, D]), tf.zeros([0, M], tf.int32), codebooks, 4, 0.5, seed=1)
    assert float(empty) == 0.0


def test_contrastive_loss_matches_numpy_reference():
    fc = _field_codes(projection=True)
    codes = fc.codes[:30].astype("int32")
    anchor = np.random.default_rng(5).normal(size=(30, D)).astype("float32")
    seed = tf.constant([11, 12], tf.int64)  # stateless: the same negatives inside the loss
    neg = np.asarray(semi_synthetic_negative_codes(codes, K, 5, seed=seed))
    got = float(contrastive_loss(anchor, codes, fc.codebooks, 5, 0.3, seed=seed, projection=fc.projection))

    def cos(a, b):
        return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))

    def dec(c):
        flat = c.reshape(-1, M)
        out = np.concatenate([fc.codebooks[m][flat[:, m]] for m in range(M)], axis=1) @ fc.projection
        return out.reshape(c.shape[:-1] + (D,))

    s_pos = cos(anchor, dec(codes)) / 0.3
    s_neg = cos(anchor[:, None, :], dec(neg)) / 0.3
    ref = np.mean(-np.log(np.exp(s_pos) / (np.exp(s_pos) + np.exp(s_neg).sum(1))))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_contrastive_loss_added_when_training():
    fc = _field_codes()
    ids = tf.constant(_ids(32))
    layer = QuantizedEmbedding.from_codes(fc, contrastive_weight=0.5, seed=0, name="pq")
    model = _model(layer)
    model(ids, training=False)
    assert len(model.losses) == 0
    with tf.GradientTape() as tape:
        model(ids, training=True)
        losses = list(model.losses)
        assert len(losses) == 1
        total = tf.add_n(losses)
    assert float(total) > 0
    np.testing.assert_allclose(float(total), 0.5 * float(layer.last_contrastive_loss), rtol=1e-6)
    grad = tape.gradient(total, _weight(layer, "codebooks"))
    assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0

    plain = QuantizedEmbedding.from_codes(fc, name="pq0")
    plain_model = _model(plain)
    plain_model(ids, training=True)
    assert len(plain_model.losses) == 0 and plain.last_contrastive_loss is None

    # fit picks the term up: with a zero-initialised head the CTR loss is exactly log 2
    head_zero = _model(QuantizedEmbedding.from_codes(fc, contrastive_weight=0.5, seed=0))
    head_zero.get_layer("head").set_weights([np.zeros((D, 1), "float32"), np.zeros(1, "float32")])
    head_zero.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")
    hist = head_zero.fit(ids, np.ones((32, 1), "float32"), batch_size=32, epochs=1, verbose=0)
    assert hist.history["loss"][0] > np.log(2.0) + 1e-3


# ----------------------------------------------------------------------------- distribution

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from tfmec.backend import keras
    from tfmec.layers import QuantizedEmbedding
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(40, 4))
    codebooks = rng.normal(size=(4, 16, 2)).astype("float32")
    with strategy.scope():
        layer = QuantizedEmbedding(40, 4, 16, 2, codes=codes, codebooks=codebooks, bits=4,
                                   contrastive_weight=0.1, seed=0)
        inp = keras.Input(shape=(), dtype="int32")
        model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(layer(inp)))
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    ids = rng.integers(0, 40, size=(16,)).astype("int32")
    model.fit(ids, (ids % 2).astype("float32")[:, None], batch_size=16, epochs=1, verbose=0)
    after = {w.name.split("/")[-1].split(":")[0]: np.asarray(w) for w in layer.weights}
    assert not np.array_equal(after["codebooks"], codebooks)
    from tfmec.layers.bitpack import pack_codes
    assert np.array_equal(after["codes"], pack_codes(codes, 4))
    print("MIRRORED_OK", len(layer.weights))
    """
)


def test_mirrored_strategy_two_cpus():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "MIRRORED_OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("bits", [None, 4])
def test_head_rows_are_exact_save_reload_and_train(bits, tmp_path):
    """Rows 0..H-1 read the exact head table (OOV ids too: they map to row 0), the others the codes;
    the head counts in storage_bytes, survives .keras save/load, and trains."""
    fc = _field_codes()
    head = np.random.default_rng(5).normal(size=(3, D)).astype("float32")
    layer = QuantizedEmbedding.from_codes(fc, bits=bits, head_rows=3, head=head, name="pq")
    plain = QuantizedEmbedding.from_codes(fc, bits=bits)
    ids = np.array([0, 1, 2, 3, 49, -7, 50], dtype="int32")
    out, pq = np.asarray(layer(ids)), np.asarray(plain(ids))
    np.testing.assert_array_equal(out[:3], head)
    np.testing.assert_array_equal(out[3:5], pq[3:5])
    np.testing.assert_array_equal(out[5:], head[[0, 0]])  # OOV -> row 0, a head row
    assert layer.storage_bytes == plain.storage_bytes + 3 * D * 4
    assert QuantizedEmbedding(V, M, K, SUB, head_rows=2).get_config()["head_rows"] == 2
    default = QuantizedEmbedding.from_codes(fc, head_rows=4)  # no head given: starts from its codes
    np.testing.assert_allclose(np.asarray(default(ids[:4])), pq[:4], atol=1e-6)

    model = _model(layer)
    x = _ids(64)
    path = str(tmp_path / "head.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("pq").head_rows == 3
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    model.fit(np.array([0, 1, 5] * 8, "int32"), np.ones((24, 1), "float32"), batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(_value(layer, "head"), head)
    with pytest.raises(ValueError, match="head_rows"):
        QuantizedEmbedding(V, M, K, SUB, head_rows=V + 1)
    with pytest.raises(ValueError, match="head must be"):
        QuantizedEmbedding(V, M, K, SUB, head_rows=2, head=np.zeros((3, D)))
