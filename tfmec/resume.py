"""Keras training (stage 2 and the baseline) that resumes after the process is killed.

``tfmec.training.fit_early_stopping(..., checkpoint_dir=DIR)`` keeps a :class:`TrainingBackup`: after
every epoch it writes one checkpoint (``tf.train.CheckpointManager``: data files first, then
the ``checkpoint`` index by an atomic rename, so a checkpoint is complete or invisible) holding

* every model variable (weights, and in Keras 3 the dropout layers' seed-generator states) and every
  optimizer variable (moments, iteration count, learning rate);
* the epochs completed, the per-epoch Keras logs, the training seconds so far;
* the early-stopping state (:class:`~tfmec.callbacks.EarlyStoppingOnAUC`: best AUC, epochs without
  improvement, best epoch and the best weights, and the starting AUC when fine-tuning);
* a fingerprint of the model's variables, the optimizer's settings and the fit settings: a
  checkpoint is never applied to another model or other settings (an error naming the folder).

A run started again with the same arguments restores the latest checkpoint and continues at the next
epoch (a partly trained epoch is trained again from its start). With the training split given as
an :class:`~tfmec.data.epochs.EpochStream`, whose epoch ``e`` order depends on ``(seed, e)`` only, the
resumed run sees the same batches as an uninterrupted one and ends with the same weights, bit for
bit, when the model's randomness lives in variables (Keras 3 dropout). Randomness drawn by stateful
TensorFlow ops keeps its state inside the op kernels, which no checkpoint can hold: tf-keras's dropout
and the contrastive negatives of :class:`~tfmec.layers.QuantizedEmbedding` draw new values after a
restart, so such runs end close to, not equal to, an uninterrupted one. A plain ``tf.data.Dataset``
is accepted too; its resumed epochs then see the dataset's own order.

When training ends the final weights (the best epoch's) are checkpointed with ``finished`` set; calling
again with the same folder restores them and returns the recorded result without training.

Why not ``keras.callbacks.BackupAndRestore``: Keras 3's writes ``latest.weights.h5`` and then
``training_metadata.json`` in place (a kill between the two resumes the wrong epoch with the newer
weights; a kill inside either leaves a truncated file), tf-keras's is a different implementation, and
neither saves a callback's state (early stopping's best weights) nor the data order.
"""
from __future__ import annotations

import json
import time

import numpy as np
import tensorflow as tf

from tfmec.atomic import writing
from tfmec.backend import IS_LEGACY_KERAS, tf_variable
from tfmec.evaluation import array_weights


def model_state_variables(model) -> list:
    """Every ``tf.Variable`` of the model's state: weights plus (Keras 3) seed-generator states."""
    seen, out = set(), []
    for v in array_weights(model.variables):  # not a tf-keras lookup's table handler
        t = tf_variable(v)
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def optimizer_variables(model) -> list:
    """The optimizer's ``tf.Variable`` objects, building the optimizer on the model's trainable
    variables first when it has not run yet."""
    opt = model.optimizer
    if opt is None:
        raise ValueError("compile the model before a checkpointed fit")
    built = getattr(opt, "built", None) if not IS_LEGACY_KERAS else getattr(opt, "_built", None)
    if not built:
        opt.build(model.trainable_variables)
    return [tf_variable(v) for v in opt.variables]


def fit_fingerprint(model, settings: dict) -> str:
    """JSON identifying a checkpointed fit: variable shapes and dtypes (not names: Keras numbers layers
    per process), optimizer class and settings,
    and ``settings`` (epochs, patience, ... and whatever the caller adds, e.g. the data's content
    digests). Settings whose key starts with ``_`` are labels for messages (e.g. the data's paths):
    kept with the checkpoint, never compared (:func:`comparable_fingerprint`)."""
    opt = model.optimizer
    config = {k: v for k, v in opt.get_config().items() if k != "name"} if opt is not None else None
    return json.dumps({
        "variables": [[list(v.shape), v.dtype.name] for v in model_state_variables(model)],
        "optimizer": [type(opt).__name__, config],
        "settings": settings,
    }, sort_keys=True, default=str)


def comparable_fingerprint(fingerprint: str) -> str:
    """The part of a :func:`fit_fingerprint` a checkpoint must match: everything but the ``_`` labels."""
    try:
        value = json.loads(fingerprint)
    except (TypeError, ValueError):
        return str(fingerprint)
    if isinstance(value, dict) and isinstance(value.get("settings"), dict):
        value["settings"] = {k: v for k, v in value["settings"].items() if not str(k).startswith("_")}
    return json.dumps(value, sort_keys=True, default=str)


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _data_difference(then, now, paths) -> str:
    """What differs between two lists of ``{"bytes", "sha256"}`` (the data's files, in order)."""
    then, now = list(then or []), list(now or [])
    if len(then) != len(now):
        return f"the data: {len(then)} file(s) when the checkpoint was written, {len(now)} now"
    for i, (a, b) in enumerate(zip(then, now)):
        if a != b:
            name = paths[i] if i < len(paths) else f"data file {i + 1}"
            def show(e):
                return (f"sha256 {str(e.get('sha256'))[:16]}... ({int(e.get('bytes', 0)):,} bytes)"
                        if isinstance(e, dict) else _short(e))
            return (f"the content of {name} differs from the data the checkpoint was trained on "
                    f"(now {show(b)}, then {show(a)})")
    return "the data differs"


def fingerprint_difference(saved: str, now: str, limit: int = 3) -> str:
    """A one-line account of what differs between two fingerprints (JSON of nested dicts): up to ``limit``
    differing entries, each ``key: <then> then, <now> now``; data content digests as the file that
    differs with both digests and sizes."""
    try:
        a, b = json.loads(saved), json.loads(now)
    except (TypeError, ValueError):
        return "the checkpoint's fingerprint is unreadable"
    labels = b.get("settings", {}) if isinstance(b, dict) else {}
    paths = labels.get("_data_files") if isinstance(labels, dict) else None
    paths = paths if isinstance(paths, list) else []
    out: list[str] = []

    def walk(x, y, where):
        if len(out) >= limit or x == y:
            return
        if where.rsplit(".", 1)[-1] == "data_content":
            out.append(_data_difference(x, y, paths))
        elif where == "variables":
            out.append(f"the model's variables ({len(x or [])} then, {len(y or [])} now; shapes or dtypes differ)")
        elif isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y), key=str):
                if str(key).startswith("_"):
                    continue
                walk(x.get(key, "<missing>"), y.get(key, "<missing>"), f"{where}.{key}" if where else str(key))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{where}[{i}]")
        else:
            out.append(f"{where}: {_short(x)} then, {_short(y)} now")

    walk(a, b, "")
    return "; ".join(out) if out else "the fingerprints differ"


def _first_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def restore_checkpoint(checkpoint, path: str, what: str, fix: str) -> None:
    """Restores ``checkpoint`` (a ``tf.train.Checkpoint``) from ``path``, every saved object matched;
    a damaged or foreign file is a ``ValueError`` ``"<what> cannot be restored (<first line>); <fix>"``
    instead of TensorFlow's OpError, IndexError or AssertionError."""
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as err:  # noqa: BLE001 - damaged data files raise OpError, IndexError, AssertionError...
        raise ValueError(f"{what} cannot be restored ({_first_line(err)}); {fix}") from None


def read_fingerprint(path: str, what: str) -> str:
    """The fingerprint string stored in the checkpoint ``path``; ``ValueError`` naming ``what`` when the
    checkpoint is damaged or was not written by tfmec (no fingerprint)."""
    try:
        saved = tf.train.load_checkpoint(path).get_tensor("fingerprint/.ATTRIBUTES/VARIABLE_VALUE")
    except Exception as err:  # noqa: BLE001 - a damaged file raises OpError, IndexError, ValueError...
        raise ValueError(f"{what} cannot be read ({_first_line(err)}); delete the folder or use another "
                         "checkpoint directory") from None
    return saved.decode("utf-8", "replace") if isinstance(saved, bytes) else str(saved)


class TrainingBackup:
    """The checkpointed state of one fit (see the module docstring), and the Keras callback that saves it.

    Args:
        directory: the fit's checkpoint folder.
        model: the compiled model.
        stopper: its :class:`~tfmec.callbacks.EarlyStoppingOnAUC` (or ``KeepLastEpoch``).
        fingerprint: :func:`fit_fingerprint`.
    """

    def __init__(self, directory: str, model, stopper, fingerprint: str):
        self.directory, self.model, self.stopper, self.fingerprint = directory, model, stopper, fingerprint
        self.model_vars = model_state_variables(model)
        self.optimizer_vars = optimizer_variables(model)
        self.best_vars = [tf.Variable(np.zeros(w.shape, w.dtype.as_numpy_dtype), trainable=False)
                          for w in (tf_variable(x) for x in array_weights(model.weights))]
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.finished = tf.Variable(False, trainable=False)
        self.has_best = tf.Variable(False, trainable=False)
        self.best = tf.Variable(-np.inf, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.record = tf.Variable("{}", dtype=tf.string, trainable=False)  # JSON: logs, seconds, start AUC
        self.saved_fingerprint = tf.Variable(fingerprint, dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model_vars, optimizer=self.optimizer_vars, best_weights=self.best_vars, epoch=self.epoch,
            finished=self.finished, has_best=self.has_best, best=self.best, best_epoch=self.best_epoch,
            wait=self.wait, record=self.record, fingerprint=self.saved_fingerprint)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)
        self.history: dict = {}
        self.seconds_before = 0.0
        self.start_auc = None
        self._session_start = time.perf_counter()
        self._saved_best_epoch = None

    # ------------------------------------------------------------------ restore / save
    def restore(self) -> bool:
        """Restores the latest checkpoint (model, optimizer, early stopping, history); False when there
        is none. Raises ``ValueError`` when it belongs to another model or other settings."""
        path = self.manager.latest_checkpoint
        if path is None:
            return False
        saved = read_fingerprint(path, f"the training checkpoint in {self.directory}")
        if comparable_fingerprint(saved) != comparable_fingerprint(self.fingerprint):
            difference = fingerprint_difference(saved, self.fingerprint)
            what = "other data" if difference.startswith(("the content of", "the data")) else \
                "another model or other settings"
            raise ValueError(f"the training checkpoint in {self.directory} was written for {what} ({difference}); "
                             "delete the folder or use another checkpoint directory")
        restore_checkpoint(self.checkpoint, path, f"the training checkpoint in {self.directory}",
                           "delete the folder or use another checkpoint directory")
        self.saved_fingerprint.assign(self.fingerprint)  # later saves carry this session's labels
        record = json.loads(self.record.numpy().decode("utf-8"))
        self.history = record.get("history", {})
        self.seconds_before = float(record.get("seconds", 0.0))
        self.start_auc = record.get("start_auc")
        best = [v.numpy() for v in self.best_vars] if bool(self.has_best.numpy()) else None
        self.stopper.set_state({"best": float(self.best.numpy()), "best_epoch": int(self.best_epoch.numpy()),
                                "wait": int(self.wait.numpy()), "best_weights": best})
        self._saved_best_epoch = int(self.best_epoch.numpy()) if best is not None else None
        return True

    @property
    def completed_epochs(self) -> int:
        return int(self.epoch.numpy())

    @property
    def is_finished(self) -> bool:
        return bool(self.finished.numpy())

    def seconds(self) -> float:
        """Training seconds over every session of this fit."""
        return self.seconds_before + time.perf_counter() - self._session_start

    def save(self, epochs_done: int, finished: bool = False) -> None:
        """Checkpoints the model and optimizer as they are now, with the early-stopping state."""
        state = self.stopper.get_state()
        if state["best_weights"] is not None and state["best_epoch"] != self._saved_best_epoch:
            for var, value in zip(self.best_vars, state["best_weights"]):
                var.assign(value)
            self._saved_best_epoch = state["best_epoch"]
        self.has_best.assign(state["best_weights"] is not None)
        self.best.assign(state["best"])
        self.best_epoch.assign(state["best_epoch"])
        self.wait.assign(state["wait"])
        self.epoch.assign(epochs_done)
        self.finished.assign(finished)
        self.record.assign(json.dumps({"history": self.history, "seconds": self.seconds(),
                                       "start_auc": self.start_auc}))
        with writing(self.directory, "the training checkpoint in "):  # a full disk: one line naming the folder
            self.manager.save()

    def result(self, resumed_from) -> dict:
        """``fit_early_stopping``'s result from the recorded state: ``{"history", "train_seconds",
        "epochs", "best_epoch", "start_auc", "resumed_from_epoch"}`` over every session of the fit."""
        return {"history": self.history, "train_seconds": self.seconds(), "epochs": len(self.history.get("loss", [])),
                "best_epoch": self.stopper.best_epoch, "start_auc": self.start_auc,
                "resumed_from_epoch": resumed_from}

    # ------------------------------------------------------------------ the Keras callback
    def callback(self):
        """A Keras callback that records each epoch's logs and checkpoints after it; it must come after
        the early-stopping callback in the list (so that its state includes the epoch)."""
        from tfmec.backend import keras

        backup = self

        class _Backup(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    backup.history.setdefault(key, []).append(float(value))
                backup.save(epoch + 1)

        return _Backup()


__all__ = ["TrainingBackup", "fit_fingerprint", "comparable_fingerprint", "fingerprint_difference", "restore_checkpoint",
           "read_fingerprint", "model_state_variables", "optimizer_variables"]
