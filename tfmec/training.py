"""Training a CTR model with early stopping on validation AUC."""
from __future__ import annotations

import time

import tensorflow as tf

from tfmec.backend import keras


def compile_ctr(model, learning_rate: float = 1e-3):
    """Compiles ``model`` for CTR: Adam, binary cross-entropy, AUC metric named ``auc``."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def fit_early_stopping(
    model,
    train: tf.data.Dataset,
    valid: tf.data.Dataset,
    *,
    epochs: int = 20,
    patience: int = 2,
    verbose: int = 1,
    callbacks=None,
) -> dict:
    """Fits a compiled model, stopping when validation AUC has not improved for ``patience``
    epochs and restoring the best weights. Returns ``{"history", "train_seconds", "epochs"}``."""
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, restore_best_weights=True)
    t0 = time.perf_counter()
    history = model.fit(train, validation_data=valid, epochs=epochs, callbacks=[stop] + list(callbacks or []), verbose=verbose)
    seconds = time.perf_counter() - t0
    return {"history": history.history, "train_seconds": seconds, "epochs": len(history.history.get("loss", []))}
