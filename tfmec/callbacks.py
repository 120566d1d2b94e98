"""The Keras callbacks every tfmec fit uses (:func:`tfmec.training.fit_early_stopping`).

* :class:`StopOnNonFiniteLoss`: a NaN or infinite epoch loss is an error, not a model of NaN weights.
* :class:`EarlyStoppingOnAUC`: early stopping on validation AUC that restores the best weights and can
  count the starting weights as a candidate (fine-tuning never ends worse on validation than it began);
  its state can be saved and restored (:class:`tfmec.resume.TrainingBackup`).
* :class:`KeepLastEpoch`: the same interface for a fit without validation data (no stopping; the last
  epoch's weights are kept).
* :class:`KnownStepsProgbar`: Keras's progress bar, told the steps of an epoch that ``tf.data`` cannot
  count.

This module knows Keras, NumPy and :mod:`tfmec.evaluation` (weight lists) only: :mod:`tfmec.resume` and
:mod:`tfmec.training` build on it.
"""
from __future__ import annotations

import math

import numpy as np

from tfmec.api_export import public_names, tfmec_export
from tfmec.backend import KERAS_MODE, keras


@tfmec_export("tfmec.callbacks.weight_arrays", "tfmec.training.weight_arrays")
def weight_arrays(model) -> list:
    """Copies of the model's weight arrays (``model.get_weights()`` without the vocabulary that a
    tf-keras lookup layer lists among its weights: lookups are not trained)."""
    from tfmec.evaluation import array_weights

    return [np.array(w.numpy()) for w in array_weights(model.weights)]


@tfmec_export("tfmec.callbacks.set_weight_arrays", "tfmec.training.set_weight_arrays")
def set_weight_arrays(model, arrays) -> None:
    """Restores :func:`weight_arrays`."""
    from tfmec.evaluation import array_weights

    for w, value in zip(array_weights(model.weights), arrays, strict=True):
        w.assign(value)


@tfmec_export("tfmec.callbacks.NonFiniteLossError", "tfmec.training.NonFiniteLossError")
class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss: the weights are garbage from then on."""


@tfmec_export("tfmec.callbacks.StopOnNonFiniteLoss", "tfmec.training.StopOnNonFiniteLoss")
class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises :class:`NonFiniteLossError` at the end of the first epoch whose loss is NaN or infinite
    (Keras's own ``TerminateOnNaN`` only stops, leaving a model of NaN weights that then "evaluates" to
    a number). Checked once per epoch, not per batch: a batch hook would copy the loss to the host after
    every step, and one NaN batch makes the epoch's mean NaN anyway.

    Example::

        model.fit(train, epochs=3, callbacks=[tfmec.callbacks.StopOnNonFiniteLoss("stage 2")])
    """

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


@tfmec_export("tfmec.callbacks.EarlyStoppingOnAUC", "tfmec.training.EarlyStoppingOnAUC")
class EarlyStoppingOnAUC(keras.callbacks.Callback):
    """Stops when ``val_auc`` has not improved for ``patience`` epochs and restores the best weights.

    Unlike ``keras.callbacks.EarlyStopping`` it can count the starting point as a candidate: given
    ``start_score`` (the validation AUC before training), the weights at the start are kept when no
    epoch beats them, so fine-tuning an already trained model never makes it worse on validation.
    ``best_epoch`` is the 1-based epoch whose weights were kept (0: the starting weights). Its state
    (:meth:`get_state`) is what a checkpoint holds to resume.

    Example::

        stop = EarlyStoppingOnAUC(patience=2)
        model.fit(train, validation_data=valid, epochs=20, callbacks=[stop])
        stop.best_epoch   # 1-based epoch whose weights the model now has
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


@tfmec_export("tfmec.callbacks.KeepLastEpoch", "tfmec.training.KeepLastEpoch")
class KeepLastEpoch(EarlyStoppingOnAUC):
    """:class:`EarlyStoppingOnAUC`'s interface for a fit without validation data: it never stops early,
    keeps the last epoch's weights (``best_epoch`` = the last epoch) and holds no weight copies."""

    def __init__(self):
        super().__init__(patience=1, start_score=None, monitor="")

    @property
    def should_stop(self) -> bool:
        return False

    def on_epoch_end(self, epoch, logs=None):
        self.best_epoch, self.wait = epoch + 1, 0

    def on_train_end(self, logs=None):
        return


@tfmec_export("tfmec.callbacks.KnownStepsProgbar", "tfmec.training.KnownStepsProgbar")
class KnownStepsProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, told the steps of an epoch that Keras cannot count (a dataset of unknown
    cardinality); everything else as Keras's own (which it replaces in ``fit``).

    Args:
        steps: batches in one epoch.
    """

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


__all__ = public_names(globals())
