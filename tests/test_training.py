"""Early stopping on validation AUC, including the fine-tuning mode that keeps the starting weights."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.training import compile_ctr, fit_early_stopping


def _data(seed=0, n=512):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(inp))


def test_training_improves_and_reports_best_epoch():
    model = compile_ctr(_model(), 0.05)
    valid = _data(1)
    start = model.evaluate(valid, verbose=0, return_dict=True)["auc"]
    fit = fit_early_stopping(model, _data(0), valid, epochs=3, patience=2, verbose=0)
    aucs = fit["history"]["val_auc"]
    assert fit["start_auc"] is None  # no keep_start: the start is not measured
    assert fit["epochs"] == len(aucs) == 3  # patience 2 cannot stop a 3-epoch run early
    # the untrained model guesses; training learns the signal of x[:, 0] and improves every epoch
    assert start < 0.6 and aucs[0] > start + 0.1 and aucs[-1] > 0.85
    assert fit["best_epoch"] == int(np.argmax(aucs)) + 1 == 3
    # the model holds the best epoch's weights
    after = model.evaluate(valid, verbose=0, return_dict=True)["auc"]
    assert after == pytest.approx(aucs[fit["best_epoch"] - 1], abs=1e-6)


def test_keep_start_restores_starting_weights_when_no_epoch_improves():
    model = _model()
    compile_ctr(model, 0.05)
    fit_early_stopping(model, _data(0), _data(1), epochs=3, patience=2, verbose=0)  # a trained start
    start = [w.copy() for w in model.get_weights()]
    # fine-tune on labels that are pure noise at a huge learning rate: every epoch is worse on validation
    rng = np.random.default_rng(3)
    noise = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(512, 4)).astype("float32"), rng.integers(0, 2, 512).astype("float32"))).batch(64)
    compile_ctr(model, 5.0)
    fit = fit_early_stopping(model, noise, _data(1), epochs=2, patience=2, verbose=0, keep_start=True)
    after = model.get_weights()
    assert fit["start_auc"] > 0.7
    assert max(fit["history"]["val_auc"]) < fit["start_auc"]
    assert fit["best_epoch"] == 0
    for a, b in zip(start, after):
        np.testing.assert_array_equal(a, b)


def _table_model(vocab=50):
    keras.utils.set_random_seed(1)
    inp = keras.Input((1,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(vocab, 3, name="table")(inp))
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="head")(x))


def test_lazy_adam_touches_only_the_batch_rows_and_matches_adam_on_them():
    from tfmec.optimizers import LazyAdam

    ids = np.array([[3], [7], [20], [11]], "int32")
    y = np.array([1, 0, 1, 0], "float32")
    results = {}
    for name, opt in (("adam", keras.optimizers.Adam(0.01)), ("lazy", LazyAdam(0.01))):
        model = _table_model()
        before = model.get_layer("table").get_weights()[0].copy()
        model.compile(optimizer=opt, loss="binary_crossentropy")
        model.train_on_batch(ids, y)
        results[name] = (before, model.get_layer("table").get_weights()[0], model.get_layer("head").get_weights())
    before, lazy_table, lazy_head = results["lazy"]
    _, adam_table, adam_head = results["adam"]
    touched = [3, 7, 11, 20]
    untouched = np.setdiff1d(np.arange(50), touched)
    np.testing.assert_array_equal(lazy_table[untouched], before[untouched])
    assert np.all(np.abs(lazy_table[touched] - before[touched]) > 0)
    # on the first step, Adam's update of a touched row equals the lazy one (moments start at 0)
    np.testing.assert_allclose(lazy_table[touched], adam_table[touched], rtol=1e-5, atol=1e-7)
    for a, b in zip(lazy_head, adam_head):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_lazy_adam_sums_duplicate_rows_before_the_moments():
    """Adam's first step moves every coordinate by lr (m / sqrt(v) = sign(g)), also for a row that
    appears twice in the batch: the row's gradients are summed before squaring."""
    from tfmec.optimizers import LazyAdam

    model = _table_model()
    before = model.get_layer("table").get_weights()[0].copy()
    model.compile(optimizer=LazyAdam(0.01, epsilon=1e-12), loss="binary_crossentropy")
    model.train_on_batch(np.array([[3], [7], [3]], "int32"), np.array([1, 0, 1], "float32"))
    moved = model.get_layer("table").get_weights()[0] - before
    np.testing.assert_allclose(np.abs(moved[[3, 7]]), 0.01, rtol=1e-3)


def test_lazy_adam_trains_saves_and_reloads(tmp_path):
    model = compile_ctr(_table_model(), 0.05, optimizer="lazy_adam")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(256, 1)).astype("int32")
    y = (ids[:, 0] % 2).astype("float32")
    first = model.evaluate(ids, y, verbose=0, return_dict=True)["loss"]
    model.fit(ids, y, epochs=5, batch_size=32, verbose=0)
    assert model.evaluate(ids, y, verbose=0, return_dict=True)["loss"] < first * 0.8
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert type(again.optimizer).__name__ == "LazyAdam"
    np.testing.assert_allclose(again.predict(ids, verbose=0), model.predict(ids, verbose=0), rtol=1e-6)


def test_compile_ctr_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer"):
        compile_ctr(_model(), optimizer="sgdx")


def test_throughput_side_by_side_measures_each_model_on_a_full_batch():
    from tfmec.evaluation import _throughput_batch, prediction_throughput, throughput_side_by_side

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(({"x": x}, np.zeros(40, "float32"))).batch(16)
    assert _throughput_batch(ds, 128)["x"].shape[0] == 128  # fewer rows than the batch: rows repeat
    inp = keras.Input(shape=(x.shape[1],), name="x")
    wide = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(256)(inp)))
    small = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(inp))
    speeds = throughput_side_by_side({"wide": wide, "small": small}, ds, batch_size=128, rounds=3)
    assert set(speeds) == {"wide", "small"}
    assert all(np.isfinite(v) and v > 0 for v in speeds.values())
    assert prediction_throughput(small, ds, batch_size=128, repeats=2) > 0
    with pytest.raises(ValueError, match="rounds"):
        throughput_side_by_side({"small": small}, ds, rounds=0)
