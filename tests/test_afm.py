"""AFM: streaming statistics, rank rules, AFMDense / LowRankEmbedding, compress() on zoo and user models."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec import afm
from tfmec.backend import keras
from tfmec.data.schema import Field, Schema
from tfmec.evaluation import embedding_bytes
from tfmec.layers import AFMDense, LowRankEmbedding
from tfmec.mec.model import MECModel
from tfmec.models import DeepFM


def _schema():
    return Schema([Field("a", vocab_size=50), Field("b", vocab_size=30), Field("n", kind="numeric")])


def _features(n=384, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.integers(0, 50, n).astype("int32"),
        "b": rng.integers(0, 30, n).astype("int32"),
        "n": rng.normal(size=n).astype("float32"),
    }


def _dataset(n=384, batch=128, seed=0):
    x = _features(n, seed)
    y = ((x["a"] % 5 + x["b"] % 3 + (x["n"] > 0)) > 3).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _predict(model, ds):
    return np.concatenate([np.asarray(model(x, training=False)) for x, _ in ds])


def _low_rank_inputs(n, dim, latent, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, latent)) @ rng.normal(size=(latent, dim))
    return (x + noise * rng.normal(size=x.shape)).astype("float32")


# ------------------------------------------------------------------------------ statistics
def test_streaming_moments_match_numpy_and_ignore_batching():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1000, 6)) * np.array([1, 2, 3, 0.1, 5, 1]) + 1e3  # large mean: Chan merge
    ref_mean, ref_cov = z.mean(0), np.cov(z, rowvar=False, bias=True)
    for batch in (1000, 64, 7):
        acc = afm.StreamingMoments(6)
        for start in range(0, len(z), batch):
            acc.update(z[start:start + batch])
        assert acc.count == 1000
        np.testing.assert_allclose(acc.mean, ref_mean, rtol=1e-12)
        np.testing.assert_allclose(acc.covariance(), ref_cov, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(acc.covariance(ddof=1), np.cov(z, rowvar=False), rtol=1e-9)
    # through tf.data + collect_moments, float32 input batched two ways
    z32 = z.astype("float32")
    results = []
    for batch in (50, 333):
        ds = tf.data.Dataset.from_tensor_slices((z32, np.zeros(1000, "float32"))).batch(batch)
        results.append(afm.collect_moments(ds, lambda f: [f], [6])[0])
    z64 = z32.astype(np.float64)
    for m in results:
        np.testing.assert_allclose(m.mean, z64.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.covariance(), np.cov(z64, rowvar=False, bias=True), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(results[0].covariance(), results[1].covariance(), rtol=1e-10, atol=1e-10)


def test_dense_preactivation_moments_equal_numpy_on_all_outputs():
    inp = keras.Input(shape=(5,), name="x")
    h = keras.layers.Dense(7, activation="relu", name="d0")(inp)
    out = keras.layers.Dense(1, name="out")(keras.layers.Dense(4, activation="tanh", name="d1")(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(2).normal(size=(300, 5)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(300, "float32"))).batch(64)
    layer = model.get_layer("d1")
    moments = afm.dense_preactivation_moments(model, layer, ds)
    xin = np.asarray(model.get_layer("d0")(x), dtype=np.float64)
    w, b = (np.asarray(v, dtype=np.float64) for v in layer.get_weights())
    z = xin @ w + b
    np.testing.assert_allclose(moments.mean, z.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(moments.covariance(), np.cov(z, rowvar=False, bias=True), rtol=1e-6, atol=1e-7)


def test_energy_rank_and_parameter_rule():
    # a Dense layer whose outputs are exactly rank 3 plus tiny noise -> k = 3 at energy 0.99
    rng = np.random.default_rng(3)
    inp = keras.Input(shape=(12,))
    h = keras.layers.Dense(16, name="low")(inp)
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(h))
    w = rng.normal(size=(12, 3)) @ rng.normal(size=(3, 16)) + 1e-4 * rng.normal(size=(12, 16))
    model.get_layer("low").set_weights([w.astype("float32"), rng.normal(size=16).astype("float32")])
    x = rng.normal(size=(400, 12)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(400, "float32"))).batch(100)
    _, report = afm.compress(model, ds, energy=0.99)
    (entry,) = [r for r in report.layers if r.name == "low"]
    assert entry.compressed and entry.rank == 3 and entry.kept_energy > 0.999
    assert entry.params_after == 3 * (12 + 16) + 3 + 16 < entry.params_before == 12 * 16 + 16
    # the parameter rule: Dense(4) on 3 inputs holds 16; rank 2 would need 20 -> left alone, reported
    inp = keras.Input(shape=(3,))
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(keras.layers.Dense(4, name="small")(inp)))
    ds = tf.data.Dataset.from_tensor_slices((rng.normal(size=(200, 3)).astype("float32"), np.zeros(200))).batch(50)
    new, report = afm.compress(model, ds, energy=0.999)
    (entry,) = [r for r in report.layers if r.name == "small"]
    assert not entry.compressed and entry.rank is None and "not fewer" in entry.reason
    assert entry.params_after == entry.params_before == 16
    assert type(new.get_layer("small")) is keras.layers.Dense
    assert [r.name for r in report.skipped] == ["small", "out"] and report.ranks == {}


def test_select_rank_rules():
    lam = np.array([5.0, 3.0, 1.0, 0.5, 0.5])
    before = 100

    def after(k):
        return 15 * k

    assert afm.select_rank(lam, before, after, energy=0.5).rank == 1
    assert afm.select_rank(lam, before, after, energy=0.8).rank == 2
    assert afm.select_rank(lam, before, after, energy=1.0).rank == 5
    assert afm.select_rank(lam, before, after, rank=2).kept_energy == pytest.approx(0.8)
    assert afm.select_rank(lam, before, after, param_budget=50).rank == 3  # 45 <= 50
    assert afm.select_rank(lam, before, after, param_budget=0.3).rank == 2  # limit 30
    assert afm.select_rank(lam, before, after, energy=1.0, param_budget=0.5).rank == 3
    refused = afm.select_rank(lam, before, after, rank=7)  # capped at 5: 75 params, fine
    assert refused.rank == 5
    refused = afm.select_rank(lam, 60, after, rank=4)
    assert refused.rank is None and "not fewer" in refused.reason
    assert afm.select_rank(lam, 60, after, rank=4, allow_larger=True).rank == 4
    assert afm.select_rank(lam, before, after, param_budget=10).rank is None
    with pytest.raises(ValueError, match="give either rank or energy, not both"):
        afm.select_rank(lam, before, after, rank=2, energy=0.9)
    with pytest.raises(ValueError, match="give one of rank, energy or param_budget"):
        afm.select_rank(lam, before, after)
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\], got 1.5"):
        afm.select_rank(lam, before, after, energy=1.5)


# ------------------------------------------------------------------------------ layers
def test_afm_dense_from_dense_matches_numpy():
    rng = np.random.default_rng(4)
    dense = keras.layers.Dense(6, activation="tanh", name="d")
    dense.build((None, 5))
    dense.set_weights([rng.normal(size=(5, 6)).astype("float32"), rng.normal(size=6).astype("float32")])
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    u_k, mu = u[:, :3], rng.normal(size=6)
    layer = AFMDense.from_dense(dense, u_k, mu)
    assert layer.name == "d" and layer.rank == 3 and layer.units == 6
    x = rng.normal(size=(8, 5)).astype("float32")
    got = np.asarray(layer(x))
    w, b = (np.asarray(v, np.float64) for v in dense.get_weights())
    expected = np.tanh((x @ (w @ u_k) + (b - mu) @ u_k) @ u_k.T + mu)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert layer.params == 3 * (5 + 6) + 3 + 6 == afm.dense_params(5, 6, 3)
    # full rank is the Dense layer itself; inputs of rank 3 work
    full = AFMDense.from_dense(dense, u, rng.normal(size=6))
    x3 = rng.normal(size=(2, 4, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(full(x3)), np.asarray(dense(x3)), atol=1e-5)
    # config round trip (weights travel separately)
    clone = AFMDense.from_config(layer.get_config())
    clone.build((None, 5))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), got, atol=1e-6)
    with pytest.raises(ValueError, match=r"U_k must be \[6, k\] with 1 <= k <= 6, got \(4, 3\)"):
        AFMDense.from_dense(dense, u[:4, :3], mu)


def test_low_rank_embedding_from_embedding():
    rng = np.random.default_rng(5)
    emb = keras.layers.Embedding(20, 6, name="embedding_f")
    emb.build((None,))
    table = rng.normal(size=(20, 6)).astype("float32")
    emb.set_weights([table])
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    mu = rng.normal(size=6)
    layer = LowRankEmbedding.from_embedding(emb, u[:, :2], mu)
    ids = np.array([0, 3, 19, 25, -1], dtype="int32")  # 25 and -1 -> OOV row 0
    got = np.asarray(layer(ids))
    rows = table[[0, 3, 19, 0, 0]].astype(np.float64)
    np.testing.assert_allclose(got, (rows - mu) @ u[:, :2] @ u[:, :2].T + mu, atol=1e-5)
    assert layer.params == 20 * 2 + 2 * 6 + 6 and layer.storage_bytes == 4 * layer.params
    full = LowRankEmbedding.from_embedding(emb, u, mu)
    np.testing.assert_allclose(np.asarray(full(ids[:3])), table[[0, 3, 19]], atol=1e-5)


# ------------------------------------------------------------------------------ compress
@pytest.fixture(scope="module")
def deepfm():
    keras.utils.set_random_seed(0)
    return DeepFM(_schema(), embedding_dim=8, hidden_units=(32, 16), seed=0)


def test_full_rank_compress_is_exact(deepfm):
    ds = _dataset()
    new, report = afm.compress(deepfm, ds, rank=10_000, embeddings=True, allow_larger=True)
    assert isinstance(new.get_layer("dnn_dense_0"), AFMDense) and isinstance(new.get_layer("dnn_dense_1"), AFMDense)
    assert isinstance(new.get_layer("embedding_a"), LowRankEmbedding)
    assert type(new.get_layer("dnn_logit")) is keras.layers.Dense  # n_out = 1 is never factored
    assert report.ranks == {"dnn_dense_0": 32, "dnn_dense_1": 16, "embedding_a": 8, "embedding_b": 8}
    np.testing.assert_allclose(_predict(new, ds), _predict(deepfm, ds), atol=1e-5)
    assert deepfm.get_layer("dnn_dense_0").__class__ is keras.layers.Dense  # the input model is untouched


def test_compressed_model_saves_loads_and_trains(deepfm, tmp_path):
    ds = _dataset()
    new, _ = afm.compress(deepfm, ds, rank=4, embeddings=True)
    assert new.get_layer("dnn_dense_0").rank == 4
    path = str(tmp_path / "afm.keras")
    new.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("dnn_dense_1"), AFMDense)
    np.testing.assert_array_equal(_predict(loaded, ds), _predict(new, ds))
    loaded.compile(optimizer="adam", loss="binary_crossentropy")
    history = loaded.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_energy_compress_shrinks_mlp_and_embeddings():
    keras.utils.set_random_seed(1)
    model = DeepFM(_schema(), embedding_dim=8, hidden_units=(64, 64), seed=1)
    ds = _dataset(n=512)
    new, report = afm.compress(
        model, ds, energy=0.9, embeddings=True, embedding_rank=4,
        fine_tune={"train": ds, "epochs": 1, "learning_rate": 1e-3},
    )
    assert report.dense_params_after < report.dense_params_before
    assert set(report.ranks) >= {"dnn_dense_0", "dnn_dense_1", "embedding_a", "embedding_b"}
    for name in ("dnn_dense_0", "dnn_dense_1"):
        entry = next(r for r in report.layers if r.name == name)
        assert entry.kept_energy >= 0.9 and entry.params_after < entry.params_before
    assert report.embedding_bytes_after < report.embedding_bytes_before == embedding_bytes(model)
    assert embedding_bytes(new) == report.embedding_bytes_after
    for name in ("stack_embeddings", "flatten_embeddings", "dnn_dense_1", "prediction"):
        assert tuple(new.get_layer(name).output.shape) == tuple(model.get_layer(name).output.shape)
    assert [f["stage"] for f in report.fine_tune] == ["mlp", "embeddings"]
    assert _predict(new, ds).shape == (512, 1)
    as_dict = report.to_dict()
    assert as_dict["ranks"] == report.ranks and isinstance(report.summary(), str)


def test_user_functional_model_compresses_and_predicts():
    rng = np.random.default_rng(6)
    inp = keras.Input(shape=(10,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="h0")(inp)
    h = keras.layers.Dense(16, activation="relu", name="h1")(h)
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(h))
    x = _low_rank_inputs(256, 10, 3, seed=6)
    ds = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 2, 256).astype("float32"))).batch(64)
    new, report = afm.compress(model, ds, energy=0.95)
    assert isinstance(new.get_layer("h0"), AFMDense) and new.get_layer("h0").rank <= 3
    assert report.ranks["h0"] <= 3 and "h1" in [r.name for r in report.layers]
    pred = new.predict(x, verbose=0)
    assert pred.shape == (256, 1) and np.all(np.isfinite(pred))
    np.testing.assert_allclose(np.asarray(new.get_layer("h0")(x)), np.asarray(model.get_layer("h0")(x)), atol=1e-4)
    assert np.corrcoef(pred[:, 0], model.predict(x, verbose=0)[:, 0])[0, 1] > 0.9  # h1 keeps 95% of its variance


def test_layers_argument_class_kept_and_errors(deepfm):
    ds = _dataset(n=128)
    wrapped = MECModel(inputs=deepfm.input, outputs=deepfm.output, name="wrapped")
    new, report = afm.compress(wrapped, ds, rank=2, layers=["dnn_dense_1"])
    assert isinstance(new, MECModel)
    assert report.ranks == {"dnn_dense_1": 2} and type(new.get_layer("dnn_dense_0")) is keras.layers.Dense
    with pytest.raises(ValueError, match="rank, energy or param_budget"):
        afm.compress(deepfm, ds)
    with pytest.raises(ValueError, match="not both"):
        afm.compress(deepfm, ds, rank=2, energy=0.9)
    with pytest.raises(ValueError, match="no layer named"):
        afm.compress(deepfm, ds, rank=2, layers=["nope"])
    with pytest.raises(ValueError, match="unknown key"):
        afm.compress(deepfm, ds, rank=2, fine_tune={"train": ds, "epoch": 1})
    with pytest.raises(ValueError, match="no rows"):
        afm.compress(deepfm, ds.take(0), rank=2)


def test_fine_tune_with_validation_keeps_the_start_when_no_epoch_helps():
    keras.utils.set_random_seed(2)
    model = DeepFM(_schema(), embedding_dim=8, hidden_units=(64, 64), seed=2)
    ds = _dataset(n=512)
    untuned, _ = afm.compress(model, ds, rank=3)
    # a learning rate so large that every fine-tuning epoch ruins validation AUC
    new, report = afm.compress(
        model, ds, rank=3,
        fine_tune={"train": ds, "valid": ds, "epochs": 2, "learning_rate": 50.0, "patience": 2},
    )
    entry = report.fine_tune[0]
    assert entry["stage"] == "mlp" and "start_valid_auc" in entry
    assert max(entry["history"]["val_auc"]) < entry["start_valid_auc"]
    assert entry["best_epoch"] == 0
    np.testing.assert_allclose(_predict(new, ds), _predict(untuned, ds), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------ DCNv2's cross network
@pytest.mark.parametrize("structure", ["parallel", "stacked"])
def test_cross_network_full_rank_is_exact_and_low_rank_saves_reloads_trains(structure, tmp_path):
    from tfmec.layers import CrossNetV2
    from tfmec.models import DCNv2

    keras.utils.set_random_seed(3)
    model = DCNv2(_schema(), embedding_dim=8, hidden_units=(16,), structure=structure, seed=3)
    # non-zero biases, so that the bias fold b' = (b - mu) U U^T + mu is exercised
    cross = model.get_layer("cross_net")
    for i in range(cross.num_layers):
        bias = cross.layer_weights(i)["bias"]
        bias.assign(tf.random.stateless_normal(bias.shape, seed=[i, 1], dtype=bias.dtype) * 0.1)
    ds = _dataset()
    dim = int(cross.layer_weights(0)["bias"].shape[0])

    exact, report = afm.compress(model, ds, rank=dim, allow_larger=True)
    assert exact.get_layer("cross_net").layer_ranks == [dim] * cross.num_layers
    assert [r.name for r in report.layers if r.kind == "cross"] == [f"cross_net[{i}]" for i in range(cross.num_layers)]
    np.testing.assert_allclose(_predict(exact, ds), _predict(model, ds), atol=1e-5)

    low, report = afm.compress(model, ds, rank=3)
    new_cross = low.get_layer("cross_net")
    assert new_cross.layer_ranks == [3] * cross.num_layers
    assert report.cross_params_after == cross.num_layers * (2 * dim * 3 + dim) < report.cross_params_before
    assert model.get_layer("cross_net").layer_ranks == [None] * cross.num_layers  # the input model is untouched
    path = str(tmp_path / "dcn_afm.keras")
    low.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("cross_net").layer_ranks == [3] * cross.num_layers
    np.testing.assert_allclose(_predict(loaded, ds), _predict(low, ds), atol=1e-6)
    loaded.compile(optimizer="adam", loss="binary_crossentropy")
    assert np.isfinite(loaded.fit(ds, epochs=1, verbose=0).history["loss"][0])

    kept, report = afm.compress(model, ds, rank=3, cross=False)
    assert kept.get_layer("cross_net").layer_ranks == [None] * cross.num_layers
    assert not [r for r in report.layers if r.kind == "cross"]
    assert isinstance(model.get_layer("cross_net"), CrossNetV2)


def test_cross_network_rank_recovers_a_low_rank_map():
    """A cross layer whose map x W has rank 2 keeps (almost) all its output variance at rank 2:
    the energy rule finds it and the factored network reproduces the original."""
    from tfmec.layers import CrossNetV2

    rng = np.random.default_rng(4)
    dim = 12
    inp = keras.Input(shape=(dim,), name="x")
    cross = CrossNetV2(1, name="cross")
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(cross(inp)))
    w = rng.normal(size=(dim, 2)) @ rng.normal(size=(2, dim)) / dim
    cross.layer_weights(0)["kernel"].assign(w.astype("float32"))
    x = rng.normal(size=(512, dim)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 2, 512).astype("float32"))).batch(128)
    new, report = afm.compress(model, ds, energy=0.999)
    assert report.ranks["cross[0]"] == 2
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
