"""Early stopping on validation AUC, including the fine-tuning mode that keeps the starting weights."""
import numpy as np
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
    fit = fit_early_stopping(model, _data(0), _data(1), epochs=3, patience=2, verbose=0)
    assert fit["best_epoch"] >= 1 and fit["start_auc"] is None
    assert len(fit["history"]["val_auc"]) == fit["epochs"]


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
