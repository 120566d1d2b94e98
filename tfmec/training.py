"""The one training driver: every fit tfmec runs (the baseline, MEC stage 2, AFM fine-tuning, the
hashing trick and the other competitors, the tuner's trials) goes through :func:`fit_early_stopping`,
so early stopping on validation AUC, the NaN guard, the optimizer choice (:func:`compile_ctr`),
checkpoints after every epoch and resumption after a kill (:mod:`tfmec.resume`) apply to all of them.

Example::

    from tfmec.training import compile_ctr, fit_early_stopping
    compile_ctr(model, learning_rate=1e-3, optimizer="lazy_adam")
    result = fit_early_stopping(model, data.train, data.valid, epochs=10, patience=2,
                                checkpoint_dir="ckpt/baseline")   # a rerun resumes here
    result["best_epoch"], result["history"]["val_auc"]
"""
from __future__ import annotations

import time
import warnings
import weakref

import tensorflow as tf

from tfmec.api_export import export_value, public_names, tfmec_export
from tfmec.backend import keras
# Public here too (older code imports them from tfmec.training): the callbacks and the multi-worker check
# are exported under tfmec.training by their own modules, and bound here by public_names below.
from tfmec.callbacks import EarlyStoppingOnAUC, KeepLastEpoch, KnownStepsProgbar, StopOnNonFiniteLoss
from tfmec.distribute import check_fit_supported


OPTIMIZERS = ("adam", "lazy_adam")
export_value("tfmec.training.OPTIMIZERS", OPTIMIZERS, doc="the optimizers compile_ctr knows by name")


@tfmec_export("tfmec.training.compile_ctr")
def compile_ctr(model, learning_rate: float = 1e-3, optimizer: str = "adam", loss="binary_crossentropy"):
    """Compiles ``model`` for CTR: ``loss`` (binary cross-entropy by default), AUC metric named ``auc``, and
    ``optimizer``: ``"adam"`` (Keras's Adam, which densifies embedding gradients) or ``"lazy_adam"``
    (:class:`tfmec.optimizers.LazyAdam`: updates only the embedding rows a batch touches). Every fit of
    ``tfmec run`` (AFM's fine-tuning included) is compiled here."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if optimizer == "lazy_adam":
        from tfmec.optimizers import LazyAdam

        opt = LazyAdam(learning_rate=learning_rate)
    else:
        opt = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(optimizer=opt, loss=loss, metrics=[keras.metrics.AUC(name="auc")])
    return model


_KNOWN_BATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@tfmec_export("tfmec.training.known_batches")
def known_batches(dataset, batches: int | None):
    """Notes that one pass over ``dataset`` (a ``tf.data.Dataset`` whose length ``tf.data`` does not know,
    e.g. a generator-fed split of :func:`tfmec.data.load`) is ``batches`` batches, and returns the same
    dataset, unchanged: :func:`fit_early_stopping` then shows Keras's progress bar as ``step/N`` instead
    of ``step/Unknown``. The dataset is not rewritten (an ``assert_cardinality`` would change how often
    Keras creates its iterators, and so the reshuffled order of every epoch after the first)."""
    if batches is not None and isinstance(dataset, tf.data.Dataset):
        _KNOWN_BATCHES[dataset] = int(batches)
    return dataset


def _epochs_of(train, first: int, epochs: int, fit_kwargs: dict):
    """``train`` as ``model.fit`` takes it for epochs ``first .. epochs-1``: an
    :class:`~tfmec.data.epochs.EpochStream` becomes one stream of explicit epochs with its
    ``steps_per_epoch`` (one spare epoch at the end: Keras may read one batch ahead under a strategy's
    symbolic build); a ``tf.data.Dataset`` is passed as it is (its pipeline shuffles it: Keras's
    ``shuffle`` is turned off, which it would ignore with a warning)."""
    from tfmec.data.epochs import EpochStream

    if isinstance(train, EpochStream):
        fit_kwargs.setdefault("steps_per_epoch", train.steps_per_epoch)
        train = train.epochs(first, epochs + 1)
    if isinstance(train, tf.data.Dataset):
        fit_kwargs.setdefault("shuffle", False)
    return train


def _progress_bar(train, verbose, callbacks, train_batches, fit_kwargs) -> list:
    """``[KnownStepsProgbar]`` when Keras would show ``step/Unknown`` and the batches are known."""
    if not verbose or "steps_per_epoch" in fit_kwargs or not isinstance(train, tf.data.Dataset):
        return []
    if int(train.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return []
    steps = train_batches if train_batches is not None else _KNOWN_BATCHES.get(train)
    if not steps or any(isinstance(cb, keras.callbacks.ProgbarLogger) for cb in callbacks):
        return []
    return [KnownStepsProgbar(steps)]


@tfmec_export("tfmec.training.fit_early_stopping")
def fit_early_stopping(
    model,
    train,
    valid,
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
    """Fits a compiled model, stopping when validation AUC has not improved for ``patience`` epochs and
    restoring the best weights: the one training loop of tfmec.

    Args:
        model: a compiled model (:func:`compile_ctr`): inputs ``{field: Tensor[batch] or [batch, L]}``,
            output ``[batch, 1]``, a metric named ``auc``.
        train: a ``tf.data.Dataset`` of ``({field: Tensor}, Tensor[batch])`` or an
            :class:`~tfmec.data.epochs.EpochStream` (whose epoch order depends on (seed, epoch) only: a
            resumed fit then sees the same batches as an uninterrupted one).
        valid: the validation split (same structure), or None: no early stopping, the last epoch's
            weights are kept (``keep_start`` and ``patience`` then have no effect).
        epochs, patience: at most ``epochs`` epochs; stop after ``patience`` epochs without a better
            validation AUC.
        keep_start: the model's validation AUC before training is the first candidate (fine-tuning:
            the result is never worse on validation than the start).
        checkpoint_dir: checkpoint the whole training state (model, optimizer, early stopping, history)
            after every epoch there; a call with the same arguments resumes from the latest checkpoint
            (after a kill, too) and a finished fit is restored, not repeated (:mod:`tfmec.resume`).
        checkpoint_fingerprint: more settings a checkpoint must match (e.g. the data's content).
        train_batches: batches in one pass over ``train`` when ``tf.data`` cannot count them (default:
            what :func:`known_batches` noted): Keras's progress bar then shows ``step/N``.
        callbacks, verbose, fit_kwargs: passed to ``model.fit`` (e.g. ``steps_per_epoch``).

    Returns:
        ``{"history", "train_seconds", "epochs", "best_epoch", "start_auc", "resumed_from_epoch"}``
        (``best_epoch`` 1-based, 0 for the starting weights; history and seconds cover every session
        of a checkpointed fit; ``resumed_from_epoch`` is None unless it resumed).

    Under ``tf.distribute`` build and compile the model inside ``strategy.scope()``; under Keras 3 a
    multi-worker strategy raises :class:`~tfmec.distribute.MultiWorkerKerasError` (keras issue 20585;
    use tf-keras, ``TF_USE_LEGACY_KERAS=1``)."""
    check_fit_supported(model)  # Keras 3 + multi-worker: a clear error instead of a failure inside TensorFlow
    if int(epochs) < 1 or int(patience) < 1:
        raise ValueError(f"fit_early_stopping: epochs and patience must be >= 1, got {epochs} and {patience}")
    callbacks = list(callbacks or [])
    stopper = EarlyStoppingOnAUC(patience=patience) if valid is not None else KeepLastEpoch()
    keep_start = bool(keep_start) and valid is not None
    backup, resumed, first, start = None, False, 0, None
    if checkpoint_dir is not None:
        from tfmec.resume import TrainingBackup, fit_fingerprint

        settings = {"epochs": int(epochs), "patience": int(patience), "keep_start": keep_start,
                    "train": repr(train) if not isinstance(train, tf.data.Dataset) else "tf.data.Dataset",
                    **({"validation": False} if valid is None else {}), **(checkpoint_fingerprint or {})}
        backup = TrainingBackup(checkpoint_dir, model, stopper, fit_fingerprint(model, settings))
        resumed = backup.restore()
        if resumed and backup.is_finished:
            return backup.result(resumed_from=backup.completed_epochs)
        first, start = (backup.completed_epochs, backup.start_auc) if resumed else (0, None)
    # without a caller's steps_per_epoch every pass (an epoch of train, an evaluation of valid) ends where
    # its data ends; Keras 3 then warns "Your input ran out of data" when it does not know the length
    passes_end_with_data = "steps_per_epoch" not in fit_kwargs
    extra = _progress_bar(train, verbose, callbacks, train_batches, fit_kwargs)
    data = _epochs_of(train, first, epochs, fit_kwargs)
    t0 = time.perf_counter()
    history = {}
    with warnings.catch_warnings():
        if passes_end_with_data:
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        if not resumed:
            if keep_start:
                start = float(model.evaluate(valid, verbose=0, return_dict=True)["auc"])
            stopper.start_score = start
            if backup is not None:
                backup.start_auc = start
        if first < epochs and not stopper.should_stop:
            own = [StopOnNonFiniteLoss(), stopper] + ([backup.callback()] if backup is not None else [])
            history = model.fit(data, validation_data=valid, epochs=epochs, initial_epoch=first,
                                callbacks=own + callbacks + extra, verbose=verbose, **fit_kwargs).history
        else:  # stopped or out of epochs before the kill: only the best weights remain to be set
            stopper.set_model(model)
            stopper.on_train_end()
    if backup is not None:
        backup.save(len(backup.history.get("loss", [])), finished=True)
        return backup.result(resumed_from=first if resumed else None)
    return {"history": history, "train_seconds": time.perf_counter() - t0,
            "epochs": len(history.get("loss", [])), "best_epoch": stopper.best_epoch, "start_auc": start,
            "resumed_from_epoch": None}


__all__ = public_names(globals())
