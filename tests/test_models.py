"""Tests of tfmec.models: every model in MODELS builds, trains, saves and reloads (both Keras modes)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.data.schema import Field, Schema
from tfmec.models import (
    MODELS,
    DCNv2,
    DeepFM,
    build_model,
    default_embedding_factory,
)

BATCH = 64
N_CAT, N_NUM, VOCAB = 4, 2, 50

# Small, fast variants of every model (architecture kwargs only; dropout off so one step is a
# deterministic descent step).
SMALL = {
    "lr": {},
    "fm": {},
    "deepfm": dict(hidden_units=(16, 8), dropout=0.0),
    "dcnv2": dict(hidden_units=(16,), num_cross_layers=2, dropout=0.0),
    "pnn": dict(hidden_units=(16, 8), dropout=0.0),
    "gdcn": dict(hidden_units=(16,), num_cross_layers=2, dropout=0.0),
    "autoint": dict(attention_layers=2, heads=2, head_dim=4),
    "din": dict(hidden_units=(16, 8), attention_units=(8,), dropout=0.0),
}
HISTORY = 5  # the multi-valued field "hist" (shares c0's table): every model takes it
USES_LINEAR = set(MODELS) - {"din"}  # every other zoo model has the first-order (wide) part by default


@pytest.fixture(scope="module")
def schema():
    fields = [Field(f"c{i}", "categorical", vocab_size=VOCAB) for i in range(N_CAT)]
    fields += [Field(f"n{i}", "numeric") for i in range(N_NUM)]
    fields += [Field("hist", "categorical", vocab_size=VOCAB, max_length=HISTORY, shares="c0")]
    return Schema(fields)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = {f"c{i}": rng.integers(0, VOCAB, size=BATCH).astype("int32") for i in range(N_CAT)}
    x.update({f"n{i}": rng.normal(size=BATCH).astype("float32") for i in range(N_NUM)})
    hist = rng.integers(1, VOCAB, size=(BATCH, HISTORY)).astype("int32")
    hist[np.arange(HISTORY)[None, :] >= rng.integers(0, HISTORY + 1, size=BATCH)[:, None]] = 0  # 0..5 values
    x["hist"] = hist
    # a learnable label: depends on one categorical and one numeric field
    y = ((x["c0"] % 2 == 0) ^ (x["n0"] > 0)).astype("float32")
    return x, y


def _bce(y, p):
    p = np.clip(np.asarray(p, "float64").reshape(-1), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class CountingFactory:
    """An embedding factory that records every layer it makes."""

    def __init__(self):
        self.calls = []
        self.layers = []

    def __call__(self, field, dim, name):
        self.calls.append((field.name, dim, name))
        layer = default_embedding_factory(field, dim, name)
        self.layers.append(layer)
        return layer


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_builds_trains_saves_and_reloads(name, schema, batch, tmp_path):
    x, y = batch
    factory = CountingFactory()
    model = build_model(name, schema, embedding_dim=4, embedding_factory=factory, seed=0, **SMALL[name])
    assert isinstance(model, keras.Model) and model.name == name

    # inputs: one per field, right dtypes
    assert sorted(model.input.keys() if isinstance(model.input, dict) else [t.name for t in model.inputs]) == sorted(
        schema.names
    )

    # the factory made every categorical table (hist shares c0's: no table of its own), and those layers
    # are in the model
    expected = [] if name == "lr" else [(f"c{i}", 4, f"embedding_c{i}") for i in range(N_CAT)]
    if name in USES_LINEAR:
        expected += [(f"c{i}", 1, f"linear_c{i}") for i in range(N_CAT)]
    assert sorted(factory.calls) == sorted(expected)
    model_layers = {id(layer) for layer in model.layers}
    assert all(id(layer) in model_layers for layer in factory.layers)

    # output: [batch, 1] probabilities
    p0 = np.asarray(model(x, training=False))
    assert p0.shape == (BATCH, 1)
    assert np.all((p0 > 0) & (p0 < 1))

    # one fit step on a tf.data dataset lowers the loss on that batch
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    loss0 = _bce(y, p0)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    p1 = np.asarray(model(x, training=False))
    assert _bce(y, p1) < loss0

    # .keras save -> load_model (safe mode) -> identical predictions
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), p1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("builder", [DeepFM, DCNv2])
def test_dense_layers_are_findable(builder, schema):
    model = builder(schema, embedding_dim=4, hidden_units=(16, 8))
    dense = [layer for layer in model.layers if type(layer) is keras.layers.Dense]
    names = {layer.name for layer in dense}
    assert {"dnn_dense_0", "dnn_dense_1"} <= names
    assert ("dnn_logit" if builder is DeepFM else "logit") in names
    assert model.get_layer("dnn_dense_0").units == 16


def test_embedding_layers_are_named_and_swappable_by_cloning(schema, batch):
    """A later stage swaps the Embedding layers by cloning the functional model."""
    x, _ = batch
    model = DeepFM(schema, embedding_dim=4, hidden_units=(8,), seed=1)
    tables = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    assert sorted(tables) == sorted([f"embedding_c{i}" for i in range(N_CAT)] + [f"linear_c{i}" for i in range(N_CAT)])
    swapped = []

    def clone_fn(layer):
        if isinstance(layer, keras.layers.Embedding) and layer.name.startswith("embedding_"):
            swapped.append(layer.name)
            new = keras.layers.Embedding(layer.input_dim, layer.output_dim, name=layer.name)
            new.build((None,))
            new.set_weights([w * 0 for w in layer.get_weights()])
            return new
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_fn)
    assert sorted(swapped) == sorted(f"embedding_c{i}" for i in range(N_CAT))
    assert np.asarray(clone(x)).shape == (BATCH, 1)


def test_seed_makes_weights_reproducible(schema):
    a = DeepFM(schema, embedding_dim=4, hidden_units=(8,), seed=7)
    b = DeepFM(schema, embedding_dim=4, hidden_units=(8,), seed=7)
    c = DeepFM(schema, embedding_dim=4, hidden_units=(8,), seed=8)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))
    # distinct tables do not share initial values
    np.testing.assert_raises(
        AssertionError, np.testing.assert_array_equal,
        a.get_layer("embedding_c0").get_weights()[0], a.get_layer("embedding_c1").get_weights()[0],
    )


def test_set_random_seed_makes_weights_reproducible(schema):
    keras.utils.set_random_seed(11)
    a = build_model("gdcn", schema, embedding_dim=4, hidden_units=(8,))
    keras.utils.set_random_seed(11)
    b = build_model("gdcn", schema, embedding_dim=4, hidden_units=(8,))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_embedding_l2_adds_a_training_loss(schema, batch):
    x, _ = batch
    model = build_model("pnn", schema, embedding_dim=4, hidden_units=(8,), embedding_l2=1e-2)
    model(x, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    assert model.get_layer("embedding_l2") is not None


def test_unknown_model_name_raises(schema):
    with pytest.raises(ValueError, match="valid names are") as info:
        build_model("xdeepfm", schema)
    assert "deepfm" in str(info.value) and "autoint" in str(info.value)
    assert build_model("DeepFM", schema, embedding_dim=4, hidden_units=(4,)).name == "deepfm"


def test_schema_without_vocabulary_raises():
    schema = Schema([Field("c0", "categorical"), Field("n0", "numeric")])
    with pytest.raises(ValueError, match="build vocabularies first"):
        DeepFM(schema)


def test_bad_factory_output_raises(schema):
    def wrong_dim(field, dim, name):
        return keras.layers.Embedding(field.vocab_size, dim + 1, name=name)

    with pytest.raises(ValueError, match="embedding factory"):
        build_model("fm", schema, embedding_dim=4, embedding_factory=wrong_dim)


def test_numeric_only_and_categorical_only_schemas(batch):
    x, _ = batch
    cat = Schema([Field(f"c{i}", "categorical", vocab_size=VOCAB) for i in range(2)])
    num = Schema([Field(f"n{i}", "numeric") for i in range(2)])
    for s in (cat, num):
        for name in ("lr", "deepfm"):
            model = build_model(name, s, embedding_dim=4, **SMALL[name])
            assert np.asarray(model({k: x[k] for k in s.names})).shape == (BATCH, 1)


@pytest.mark.parametrize("name", ["deepfm", "dcnv2"])
def test_builds_and_trains_under_a_distribution_strategy(name, schema, batch):
    x, y = batch
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model(name, schema, embedding_dim=4, seed=0, embedding_l2=1e-4, **SMALL[name])
        model.compile(optimizer="adam", loss="binary_crossentropy")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name", ["dcnv2", "gdcn", "pnn", "autoint"])
def test_linear_part_can_be_switched_off(name, schema):
    model = build_model(name, schema, embedding_dim=4, linear=False, seed=0, **SMALL[name])
    assert not any(layer.name.startswith("linear") for layer in model.layers)
    with_linear = build_model(name, schema, embedding_dim=4, seed=0, **SMALL[name])
    assert any(layer.name == "linear" for layer in with_linear.layers)
