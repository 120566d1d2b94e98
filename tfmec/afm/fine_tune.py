"""How :func:`tfmec.afm.compress` fine-tunes the factored model: :class:`FineTune`, typed settings, and
:func:`run_fine_tune`, which trains through tfmec's one training driver
(:func:`tfmec.training.fit_early_stopping`): the optimizer choice (``"adam"`` or ``"lazy_adam"``),
early stopping on validation AUC that keeps the un-tuned weights when no epoch improves them, the NaN
guard, and checkpoints after every epoch with resumption after a kill (``checkpoint_dir``) apply here
as they do to every other fit of tfmec.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from tfmec.api_export import export_value, tfmec_export
from tfmec.backend import keras
from tfmec.training import OPTIMIZERS, compile_ctr, fit_early_stopping


@tfmec_export("tfmec.afm.FineTune")
@dataclasses.dataclass
class FineTune:
    """The fine-tuning :func:`tfmec.afm.compress` runs after its MLP step and after its embedding step.

    Example::

        from tfmec.afm import FineTune, compress
        small, report = compress(model, data.train.take(50), energy=0.9,
                                 fine_tune=FineTune(data.train, data.valid, epochs=3, optimizer="lazy_adam",
                                                    checkpoint_dir="ckpt/afm"))

    Args:
        train: the training data: a ``tf.data.Dataset`` of ``({field: Tensor}, Tensor[batch])`` or an
            :class:`~tfmec.data.epochs.EpochStream` (exact resumption after a kill).
        valid: the validation split, or None (no early stopping: every epoch runs, the last is kept).
        epochs: at most this many epochs per step (>= 1).
        learning_rate: of the optimizer.
        optimizer: ``"adam"`` or ``"lazy_adam"`` (:func:`tfmec.training.compile_ctr`).
        loss: a Keras loss (default binary cross-entropy); the metric is always ``AUC`` named ``auc``.
        patience: epochs without a better validation AUC before stopping.
        keep_start: the weights before fine-tuning count as a candidate (fine-tuning never makes
            validation AUC worse).
        verbose: Keras's ``verbose``.
        steps_per_epoch: batches per epoch (default: one pass over ``train``).
        checkpoint_dir: checkpoint every epoch under ``checkpoint_dir/<step>`` (``mlp``,
            ``embeddings``); a rerun with the same settings resumes there.
        checkpoint_fingerprint: more settings a checkpoint must match (e.g. the data's content).
    """

    train: Any
    valid: Any = None
    epochs: int = 1
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    loss: Any = "binary_crossentropy"
    patience: int = 1
    keep_start: bool = True
    verbose: int = 0
    steps_per_epoch: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_fingerprint: dict | None = None

    def __post_init__(self):
        if self.train is None:
            raise ValueError("fine_tune: a 'train' dataset is required")
        if int(self.epochs) < 1:
            raise ValueError(f"fine_tune: epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"fine_tune: unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if int(self.patience) < 1:
            raise ValueError(f"fine_tune: patience must be >= 1, got {self.patience}")

    @classmethod
    def coerce(cls, value) -> "FineTune | Callable | None":
        """``value`` as :func:`tfmec.afm.compress` takes it: None, a callable ``f(model)`` (kept as it
        is), a :class:`FineTune`, or a dict of its field names (an unknown key is a ``ValueError``
        naming it and the accepted keys)."""
        if value is None or callable(value) or isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"fine_tune must be None, a callable, a FineTune or a dict, got {type(value).__name__}")
        unknown = sorted(set(value) - set(FINE_TUNE_KEYS))
        if unknown:
            raise ValueError(f"fine_tune: unknown key(s) {unknown}; accepted keys are {list(FINE_TUNE_KEYS)}")
        if "train" not in value:
            raise ValueError("fine_tune: a dict needs a 'train' dataset")
        return cls(**value)

    def settings(self) -> dict:
        """The JSON-able settings (the datasets and the checkpoint labels left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("train", "valid", "checkpoint_fingerprint")
                and (f.name != "loss" or isinstance(self.loss, str))}


FINE_TUNE_KEYS = tuple(f.name for f in dataclasses.fields(FineTune))
export_value("tfmec.afm.FINE_TUNE_KEYS", FINE_TUNE_KEYS, doc="the field names of FineTune, in order")


@tfmec_export("tfmec.afm.run_fine_tune")
def run_fine_tune(model, fine_tune, step: str) -> tuple:
    """Fine-tunes ``model`` after AFM's ``step`` (``"mlp"`` or ``"embeddings"``).

    Args:
        model: the partly factored Keras model (inputs ``{field: Tensor}``, output ``[batch, 1]``).
        fine_tune: a callable ``f(model)`` (it compiles and fits the model itself; a returned
            ``keras.Model`` replaces ``model``) or a :class:`FineTune`.
        step: the AFM step; names the checkpoint subfolder.
    Returns:
        ``(model, entry)``: the fine-tuned model and the report entry ``{"step", "history",
        "best_epoch", "start_valid_auc"}`` (the last two with validation data).
    """
    if callable(fine_tune):
        result = fine_tune(model)
        return (result if isinstance(result, keras.Model) else model), {"stage": step, "history": {}}
    spec = fine_tune
    compile_ctr(model, float(spec.learning_rate), spec.optimizer, loss=spec.loss)
    kwargs = {} if spec.steps_per_epoch is None else {"steps_per_epoch": int(spec.steps_per_epoch)}
    checkpoint = None if spec.checkpoint_dir is None else os.path.join(spec.checkpoint_dir, step)
    fit = fit_early_stopping(model, spec.train, spec.valid, epochs=int(spec.epochs), patience=int(spec.patience),
                             verbose=spec.verbose, keep_start=bool(spec.keep_start), checkpoint_dir=checkpoint,
                             checkpoint_fingerprint=spec.checkpoint_fingerprint, **kwargs)
    entry = {"stage": step, "history": {key: [float(v) for v in values] for key, values in fit["history"].items()}}
    if spec.valid is not None:
        entry["best_epoch"] = fit["best_epoch"]
        if fit["start_auc"] is not None:
            entry["start_valid_auc"] = fit["start_auc"]
    if fit.get("resumed_from_epoch") is not None:
        entry["resumed_from_epoch"] = fit["resumed_from_epoch"]
    return model, entry


__all__ = ["FineTune", "FINE_TUNE_KEYS", "run_fine_tune"]
