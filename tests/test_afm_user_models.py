"""AFM on user models of every kind (issue 17): Dense layers found anywhere (nested functional
sub-models, subclassed models, custom layers holding Dense sub-layers), forward order, selection by
path, save / load, unreachable custom kernels reported and warned about, shared Dense layers left,
shared and mask_zero tables."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec import afm
from tfmec.backend import keras
from tfmec.graph import iter_layers
from tfmec.layers import AFMDense, LowRankEmbedding

N_IN = 10


class SubclassedMLP(keras.Model):
    """A subclassed model whose MLP is a list of Dense (with the get_config tfmec copies it from)."""

    def __init__(self, hidden_units=(24, 16), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.hidden = [keras.layers.Dense(u, activation="relu", name=f"hidden_{i}")
                       for i, u in enumerate(self.hidden_units)]
        self.logit = keras.layers.Dense(1, name="logit")

    def call(self, x):
        for layer in self.hidden:
            x = layer(x)
        return self.logit(x)

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


class DNN(keras.layers.Layer):
    """DeepCTR-style: a custom layer holding its Dense kernels as Dense sub-layers."""

    def __init__(self, hidden_units=(24, 16), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.dense_layers = [keras.layers.Dense(u, activation="relu", name=f"dnn_dense_{i}")
                             for i, u in enumerate(self.hidden_units)]

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


class RawMLP(keras.layers.Layer):
    """A custom MLP holding raw kernels (add_weight), not Dense sub-layers: AFM cannot reach it."""

    def build(self, input_shape):
        self.w0 = self.add_weight(name="w0", shape=(int(input_shape[-1]), 16))
        self.w1 = self.add_weight(name="w1", shape=(16, 1))

    def call(self, x):
        return tf.matmul(tf.nn.relu(tf.matmul(x, self.w0)), self.w1)


def _nested():
    inp = keras.Input(shape=(N_IN,), name="x")
    sub_in = keras.Input(shape=(N_IN,))
    h = keras.layers.Dense(24, activation="relu", name="h0")(sub_in)
    h = keras.layers.Dense(16, activation="relu", name="h1")(h)
    mlp = keras.Model(sub_in, h, name="mlp")
    return keras.Model(inp, keras.layers.Dense(1, name="out")(mlp(inp)))


def _deepctr():
    inp = keras.Input(shape=(N_IN,), name="x")
    return keras.Model(inp, keras.layers.Dense(1, name="out")(DNN(name="dnn")(inp)))


def _subclassed():
    model = SubclassedMLP(name="sub")
    model(np.zeros((1, N_IN), "float32"))
    return model


KINDS = {
    "nested": (_nested, ["mlp/h0", "mlp/h1"]),
    "subclassed": (_subclassed, ["hidden_0", "hidden_1"]),
    "deepctr": (_deepctr, ["dnn/dnn_dense_0", "dnn/dnn_dense_1"]),
}


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 3)) @ rng.normal(size=(3, N_IN))).astype("float32")  # rank-3 inputs
    ds = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 2, n).astype("float32"))).batch(64)
    return x, ds


def _afm_paths(model):
    return [ref.path for ref in iter_layers(model) if isinstance(ref.layer, AFMDense)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dense_layers_found_anywhere_exact_at_full_rank_factored_below(kind, tmp_path):
    build, paths = KINDS[kind]
    keras.utils.set_random_seed(0)
    model = build()
    x, ds = _data()
    expected = np.asarray(model(x, training=False))

    exact, report = afm.compress(model, ds, rank=10_000, allow_larger=True)
    assert [r.name for r in report.layers if r.kind == "dense"][:2] == paths  # forward order, by path
    assert report.ranks == {paths[0]: 24, paths[1]: 16}
    assert len(_afm_paths(exact)) == 2 and isinstance(exact, type(model))
    np.testing.assert_allclose(np.asarray(exact(x, training=False)), expected, atol=1e-5)

    low, report = afm.compress(model, ds, rank=3)
    assert report.ranks == {paths[0]: 3, paths[1]: 3}
    factored = [ref.layer for ref in iter_layers(low) if isinstance(ref.layer, AFMDense)]
    assert [layer.rank for layer in factored] == [3, 3]
    assert report.dense_params_after < report.dense_params_before
    # the first layer sees rank-3 inputs, so rank 3 keeps its outputs (up to float32 round-off)
    assert next(r for r in report.layers if r.name == paths[0]).kept_energy > 0.9999
    assert not _afm_paths(model)  # the input model is untouched
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected)
    path = str(tmp_path / "low.keras")
    low.save(path)
    loaded = keras.models.load_model(path, custom_objects={"DNN": DNN, "SubclassedMLP": SubclassedMLP})
    assert len(_afm_paths(loaded)) == 2
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(low(x, training=False)), atol=1e-6)


def test_layer_selection_by_path_and_container():
    keras.utils.set_random_seed(1)
    model = _nested()
    _, ds = _data()
    new, report = afm.compress(model, ds, rank=2, layers=["mlp/h1"])
    assert report.ranks == {"mlp/h1": 2} and _afm_paths(new) == ["mlp/h1"]
    _, report = afm.compress(model, ds, rank=2, layers="mlp")  # a sub-model: all its Dense layers
    assert report.ranks == {"mlp/h0": 2, "mlp/h1": 2}
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        afm.compress(model, ds, rank=2, layers=["nope"])


def test_subclassed_inplace_swaps_inside_the_model():
    keras.utils.set_random_seed(2)
    model = _subclassed()
    x, ds = _data()
    new, report = afm.compress(model, ds, rank=3, inplace=True)
    assert new is model and set(report.ranks) == {"hidden_0", "hidden_1"}
    assert all(isinstance(layer, AFMDense) for layer in model.hidden)
    assert np.asarray(model.predict(x, verbose=0)).shape == (256, 1)


def test_raw_kernel_mlp_is_reported_unreachable_with_a_warning():
    inp = keras.Input(shape=(N_IN,), name="x")
    model = keras.Model(inp, RawMLP(name="raw_mlp")(inp))
    _, ds = _data()
    with pytest.warns(UserWarning, match=r"cannot reach: raw_mlp \(RawMLP"):
        new, report = afm.compress(model, ds, rank=2)
    (entry,) = report.layers
    assert entry.name == "raw_mlp" and entry.kind == "custom" and not entry.compressed
    assert "unreachable" in entry.reason and entry.params_before == N_IN * 16 + 16
    assert report.ranks == {} and new is not model


def test_dense_called_twice_is_left_and_reported():
    a, b = keras.Input(shape=(N_IN,), name="a"), keras.Input(shape=(N_IN,), name="b")
    shared = keras.layers.Dense(8, name="shared")
    h = keras.layers.Concatenate()([shared(a), shared(b)])
    model = keras.Model([a, b], keras.layers.Dense(1, name="out")(keras.layers.Dense(12, name="top")(h)))
    x, _ = _data()
    ds = tf.data.Dataset.from_tensor_slices(((x, x[::-1]), np.zeros(len(x), "float32"))).batch(64)
    new, report = afm.compress(model, ds, rank=2)
    reasons = {r.name: r.reason for r in report.layers}
    assert "called 2 times" in reasons["shared"] and report.ranks == {"top": 2}
    assert type(new.get_layer("shared")) is keras.layers.Dense


def test_shared_mask_zero_table_factored_once_over_all_its_calls():
    """One mask_zero table read by a single-id field and a padded history: factored once, still
    shared, mask kept; exact at full rank."""
    rng = np.random.default_rng(3)
    item = keras.Input(shape=(), dtype="int32", name="item")
    history = keras.Input(shape=(5,), dtype="int32", name="history")
    table = keras.layers.Embedding(40, 6, mask_zero=True, name="items")
    pooled = keras.layers.GlobalAveragePooling1D()(table(history))  # skips the padding id 0 through the mask
    h = keras.layers.Concatenate()([table(item), pooled])
    h = keras.layers.Dense(8, activation="relu", name="h")(h)
    model = keras.Model({"item": item, "history": history}, keras.layers.Dense(1, name="out")(h))
    feats = {"item": rng.integers(1, 40, 200).astype("int32"),
             "history": rng.integers(1, 40, (200, 5)).astype("int32") * (rng.random((200, 5)) < 0.6)}
    feats["history"][:, 0] = rng.integers(1, 40, 200)  # one real id per history at least (else the mean is 0/0)
    ds = tf.data.Dataset.from_tensor_slices((feats, np.zeros(200, "float32"))).batch(50)
    expected = np.asarray(model(feats, training=False))

    exact, report = afm.compress(model, ds, rank=10_000, embeddings=True, allow_larger=True, layers=[])
    (low,) = [ref.layer for ref in iter_layers(exact) if isinstance(ref.layer, LowRankEmbedding)]
    assert low.mask_zero and report.ranks == {"items": 6}
    np.testing.assert_allclose(np.asarray(exact(feats, training=False)), expected, atol=1e-5)

    small, report = afm.compress(model, ds, rank=2, embeddings=["items"])
    tables = [ref.layer for ref in iter_layers(small) if isinstance(ref.layer, LowRankEmbedding)]
    assert len(tables) == 1 and tables[0].rank == 2 and report.ranks["items"] == 2
    with pytest.raises(ValueError, match="names no embedding table"):
        afm.compress(model, ds, rank=2, embeddings=["nope"])
