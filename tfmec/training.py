"""Training a CTR model with early stopping on validation AUC."""
from __future__ import annotations

import math
import time
import warnings
import weakref

import numpy as np
import tensorflow as tf

from tfmec.backend import KERAS_MODE, keras
from tfmec.distribute import MultiWorkerKerasError, check_fit_supported  # noqa: F401  (re-exported)


OPTIMIZERS = ("adam", "lazy_adam")


def compile_ctr(model, learning_rate: float = 1e-3, optimizer: str = "adam"):
    """Compiles ``model`` for CTR: binary cross-entropy, AUC metric named ``auc``, and ``optimizer``:
    ``"adam"`` (Keras's Adam, which densifies embedding gradients) or ``"lazy_adam"``
    (:class:`tfmec.optimizers.LazyAdam`: updates only the embedding rows a batch touches)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if optimizer == "lazy_adam":
        from tfmec.optimizers import LazyAdam

        opt = LazyAdam(learning_rate=learning_rate)
    else:
        opt = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(optimizer=opt, loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    return model


def weight_arrays(model) -> list:
    """Copies of the model's weight arrays (``model.get_weights()`` without the vocabulary that a
    tf-keras lookup layer lists among its weights: lookups are not trained)."""
    from tfmec.evaluation import array_weights

    return [np.array(w.numpy()) for w in array_weights(model.weights)]


def set_weight_arrays(model, arrays) -> None:
    """Restores :func:`weight_arrays`."""
    from tfmec.evaluation import array_weights

    for w, value in zip(array_weights(model.weights), arrays, strict=True):
        w.assign(value)


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss: the weights are garbage from then on."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises :class:`NonFiniteLossError` at the end of the first epoch whose loss is NaN or infinite
    (Keras's own ``TerminateOnNaN`` only stops, leaving a model of NaN weights that then "evaluates" to
    a number). Checked once per epoch, not per batch: a batch hook would copy the loss to the host after
    every step, and one NaN batch makes the epoch's mean NaN anyway."""

    def __init__(self, what: str = "training"):
        super().__init__()
        self.what = what

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{self.what}: the loss became {value} in epoch {epoch + 1}; the run is "
                f"stopped (its weights would be garbage). Lower --learning-rate or the loss weights "
                f"(--alpha, --beta), or check the data for extreme numeric values")


class EarlyStoppingOnAUC(keras.callbacks.Callback):
    """Stops when ``val_auc`` has not improved for ``patience`` epochs and restores the best weights.

    Unlike ``keras.callbacks.EarlyStopping`` it can count the starting point as a candidate: given
    ``start_score`` (the validation AUC before training), the weights at the start are kept when no
    epoch beats them, so fine-tuning an already trained model never makes it worse on validation.
    ``best_epoch`` is the 1-based epoch whose weights were kept (0: the starting weights).
    """

    def __init__(self, patience: int = 2, start_score: float | None = None, monitor: str = "val_auc"):
        super().__init__()
        self.patience, self.start_score, self.monitor = int(patience), start_score, monitor

    def on_train_begin(self, logs=None):
        if getattr(self, "_restored", False):  # resumed from a checkpoint: keep the restored state
            self._restored = False
            return
        self.wait, self.best_epoch = 0, 0
        self.best = -float("inf") if self.start_score is None else float(self.start_score)
        self.best_weights = None if self.start_score is None else weight_arrays(self.model)

    def get_state(self) -> dict:
        """``{"best", "best_epoch", "wait", "best_weights"}``: what a checkpoint must hold to resume."""
        return {"best": float(self.best), "best_epoch": int(self.best_epoch), "wait": int(self.wait),
                "best_weights": self.best_weights}

    def set_state(self, state: dict) -> None:
        """Restores :meth:`get_state`; the next ``on_train_begin`` keeps it instead of starting afresh."""
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.wait, self.best_weights = int(state["wait"]), state["best_weights"]
        self._restored = True

    @property
    def should_stop(self) -> bool:
        """True when the (restored) state has already run out of patience."""
        return getattr(self, "wait", 0) >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(self.monitor)
        if score is None:
            raise ValueError(f"early stopping monitors {self.monitor!r}, which fit did not log; pass validation data")
        if score > self.best:
            self.best, self.best_epoch, self.wait = float(score), epoch + 1, 0
            self.best_weights = weight_arrays(self.model)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            set_weight_arrays(self.model, self.best_weights)


_KNOWN_BATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def known_batches(dataset, batches: int | None):
    """Notes that one pass over ``dataset`` (a ``tf.data.Dataset`` whose length ``tf.data`` does not know,
    e.g. a generator-fed split of :func:`tfmec.data.load`) is ``batches`` batches, and returns the same
    dataset, unchanged: :func:`fit_early_stopping` then shows Keras's progress bar as ``step/N`` instead
    of ``step/Unknown``. The dataset is not rewritten (an ``assert_cardinality`` would change how often
    Keras creates its iterators, and so the reshuffled order of every epoch after the first)."""
    if batches is not None and isinstance(dataset, tf.data.Dataset):
        _KNOWN_BATCHES[dataset] = int(batches)
    return dataset


class _KnownStepsProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, told the steps of an epoch that Keras cannot count (a dataset of unknown
    cardinality); everything else as Keras's own (which it replaces in ``fit``)."""

    def __init__(self, steps: int):
        if KERAS_MODE == "tf-keras":
            super().__init__(count_mode="steps")
        else:
            super().__init__()
        self.known_steps = int(steps)

    def set_params(self, params):
        if params.get("steps") is None:
            params = {**params, "steps": self.known_steps}
        super().set_params(params)


def fit_early_stopping(
    model,
    train: tf.data.Dataset,
    valid: tf.data.Dataset,
    *,
    epochs: int = 20,
    patience: int = 2,
    verbose: int = 1,
    callbacks=None,
    keep_start: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_fingerprint: dict | None = None,
    train_batches: int | None = None,
    **fit_kwargs,
) -> dict:
    """Fits a compiled model, stopping when validation AUC has not improved for ``patience``
    epochs and restoring the best weights. With ``keep_start`` the model's validation AUC before
    training is the first candidate (for fine-tuning: the result is never worse on validation than
    the start). ``fit_kwargs`` go to ``model.fit`` (e.g. ``steps_per_epoch``). ``train`` is a
    ``tf.data.Dataset`` of ``({field: Tensor[batch]}, Tensor[batch])`` or an
    :class:`~tfmec.data.epochs.EpochStream`. With ``checkpoint_dir`` the whole training state is
    checkpointed after every epoch and a call with the same arguments resumes from it (after a kill,
    too): :func:`tfmec.resume.resumable_fit`; ``checkpoint_fingerprint`` adds settings a checkpoint
    must match. ``train_batches``: the batches of one pass over ``train`` when the caller knows them
    (e.g. ``data.train_stream.steps_per_epoch``) and ``tf.data`` does not (default: what
    :func:`known_batches` noted for ``train``): Keras's progress bar then knows the steps; the batches
    are the same either way. Returns ``{"history", "train_seconds", "epochs",
    "best_epoch", "start_auc"}`` (and ``resumed_from_epoch`` with ``checkpoint_dir``).

    Under ``tf.distribute`` build and compile the model inside ``strategy.scope()``; under Keras 3 a
    multi-worker strategy raises :class:`~tfmec.distribute.MultiWorkerKerasError` (keras issue 20585;
    use tf-keras, ``TF_USE_LEGACY_KERAS=1``)."""
    check_fit_supported(model)  # Keras 3 + multi-worker: a clear error instead of a failure inside TensorFlow
    if checkpoint_dir is not None:
        from tfmec.resume import resumable_fit

        return resumable_fit(model, train, valid, checkpoint_dir, epochs=epochs, patience=patience, verbose=verbose,
                             callbacks=callbacks, keep_start=keep_start, fingerprint=checkpoint_fingerprint,
                             **fit_kwargs)
    from tfmec.data.epochs import EpochStream

    # without a caller's steps_per_epoch every pass (an epoch of train, an evaluation of valid) ends where
    # its data ends; Keras 3 then warns "Your input ran out of data" when it does not know the length
    passes_end_with_data = "steps_per_epoch" not in fit_kwargs
    if isinstance(train, EpochStream):
        fit_kwargs.setdefault("steps_per_epoch", train.steps_per_epoch)
        train = train.epochs(0, epochs + 1)
    extra = []
    if isinstance(train, tf.data.Dataset):
        fit_kwargs.setdefault("shuffle", False)  # a dataset is shuffled by its pipeline (Keras ignores it, and warns)
        if "steps_per_epoch" not in fit_kwargs and int(train.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY):
            steps = train_batches if train_batches is not None else _KNOWN_BATCHES.get(train)
            if steps and verbose and not any(isinstance(cb, keras.callbacks.ProgbarLogger) for cb in callbacks or []):
                extra.append(_KnownStepsProgbar(steps))  # "step/N", not "step/Unknown"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if passes_end_with_data:
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        start = None
        if keep_start:
            start = float(model.evaluate(valid, verbose=0, return_dict=True)["auc"])
        stop = EarlyStoppingOnAUC(patience=patience, start_score=start)
        history = model.fit(train, validation_data=valid, epochs=epochs,
                            callbacks=[StopOnNonFiniteLoss(), stop] + list(callbacks or []) + extra,
                            verbose=verbose, **fit_kwargs)
    seconds = time.perf_counter() - t0
    return {"history": history.history, "train_seconds": seconds, "epochs": len(history.history.get("loss", [])),
            "best_epoch": stop.best_epoch, "start_auc": start}
