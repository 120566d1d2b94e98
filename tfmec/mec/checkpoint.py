"""Checkpoints of MEC stage 1, so that :func:`tfmec.mec.learn_codes` resumes after the process is killed.

One folder per table (or codebook-sharing group) under ``checkpoint_dir``, written with
``tf.train.CheckpointManager`` (data files first, then the ``checkpoint`` index through an atomic
rename: a checkpoint is either complete or invisible). A checkpoint holds everything the training
loop's future depends on:

* the PQ model's variables (codebooks ``[M, K, d/M]``, rotation and decoder ``[d, d]``), stage 1's
  Adam moments and step count, and the step counter that seeds the contrastive negatives;
* where the loop is: completed epochs, steps done in the current epoch, the epoch's running loss sums
  ``float64[4]``, early stopping's best loss, bad-epoch count and best variables, the loss history;
* ``done``: the table's training finished (its variables are the final ones);
* a fingerprint of the settings and of the input table (SHA-256), so a checkpoint is never applied
  to another table or other settings (that is an error naming the folder).

The order of the training rows needs no state of its own: stage 1 shuffles with a seeded
``tf.data`` shuffle whose epoch ``e`` order is the ``e``-th iteration of the dataset, so a resumed run
replays ``e`` iterator creations and skips the steps already done (:func:`replay_order`). Resuming
therefore gives bit-identical codes and codebooks to an uninterrupted run with the same seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class Stage1Checkpointing:
    """How :func:`tfmec.mec.learn_codes` checkpoints: ``directory`` (one sub-folder per table),
    ``every`` (also save after every ``every`` training steps; a save always follows each epoch) and
    ``on_step`` (optional ``on_step(table, epoch, step)`` called after each training step, 0-based
    epoch, 1-based step within it; e.g. to log progress)."""

    directory: str
    every: int = 100
    on_step: Callable | None = None

    def __post_init__(self):
        if int(self.every) < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.every}")
        self.every = int(self.every)

    def folder(self, label: str) -> str:
        """The checkpoint folder of one table / group (its name made file-system safe)."""
        return os.path.join(self.directory, re.sub(r"[^A-Za-z0-9_.-]", "_", label))


def table_fingerprint(table: np.ndarray, weights: np.ndarray, settings: dict) -> str:
    """A JSON string identifying one stage-1 problem: the settings plus SHA-256 of the table
    ``float32[V, d]`` and of its popularity weights ``float32[V]``."""
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(table, np.float32)).cast("B"))
    digest.update(memoryview(np.ascontiguousarray(weights, np.float32)).cast("B"))
    return json.dumps({**settings, "table_shape": list(table.shape), "table_sha256": digest.hexdigest()},
                      sort_keys=True, default=str)


def has_checkpoint(folder: str) -> bool:
    """True when ``folder`` holds a complete checkpoint."""
    return tf.train.latest_checkpoint(folder) is not None


def replay_order(dataset: tf.data.Dataset, epoch: int, step: int):
    """An iterator over ``dataset`` positioned where an uninterrupted loop is at ``(epoch, step)``:
    the dataset's ``epoch`` earlier iterators are created (each creation advances a
    ``reshuffle_each_iteration`` shuffle's seed), then ``step`` batches are skipped."""
    for _ in range(epoch):
        iter(dataset)
    iterator = iter(dataset)
    for _ in range(step):
        next(iterator)
    return iterator


@dataclasses.dataclass
class LoopState:
    """Where the stage-1 loop is (Python values); see the module docstring."""

    epoch: int = 0
    step: int = 0
    sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))
    best: float = float("inf")
    bad_epochs: int = 0
    best_state: list | None = None
    history: list = dataclasses.field(default_factory=list)
    done: bool = False


class Stage1Checkpoint:
    """Saves and restores one table's stage-1 training (see the module docstring).

    Args:
        folder: the table's checkpoint folder.
        model: the :class:`~tfmec.mec.stage1.PQModel` (its ``trainable`` variables).
        optimizer: stage 1's :class:`~tfmec.mec.stage1.Adam`.
        step_counter: the int64 variable that seeds the negatives.
        fingerprint: :func:`table_fingerprint` of this problem.
    """

    HISTORY_KEYS = ("loss", "reconstruction", "pwr", "contrastive")

    def __init__(self, folder: str, model, optimizer, step_counter: tf.Variable, fingerprint: str, max_epochs: int):
        self.folder = folder
        self.fingerprint = fingerprint
        self.variables = list(model.trainable)
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._sums = tf.Variable(tf.zeros(4, tf.float64), trainable=False)
        self._best = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self._bad = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._has_best = tf.Variable(False, trainable=False)
        self._best_state = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self._history = tf.Variable(tf.zeros([max(1, int(max_epochs)), 4], tf.float64), trainable=False)
        self._history_len = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._done = tf.Variable(False, trainable=False)
        self._fingerprint = tf.Variable(fingerprint, dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            variables=self.variables, optimizer=optimizer, step_counter=step_counter, epoch=self._epoch,
            step=self._step, sums=self._sums, best=self._best, bad_epochs=self._bad, has_best=self._has_best,
            best_state=self._best_state, history=self._history, history_len=self._history_len, done=self._done,
            fingerprint=self._fingerprint)
        self.manager = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=2)

    def restore(self) -> LoopState | None:
        """Restores the latest checkpoint into the model, optimizer and counters; returns the loop's
        state, or None when the folder holds no checkpoint. Raises ``ValueError`` when the checkpoint
        belongs to another table or other settings."""
        path = self.manager.latest_checkpoint
        if path is None:
            return None
        from tfmec.resume import fingerprint_difference, read_fingerprint, restore_checkpoint

        saved = read_fingerprint(path, f"the stage-1 checkpoint in {self.folder}")
        if saved != self.fingerprint:
            raise ValueError(f"the stage-1 checkpoint in {self.folder} was written for another table or other "
                             f"settings ({_table_difference(saved, self.fingerprint, fingerprint_difference)}); "
                             "delete the folder or use another checkpoint_dir")
        restore_checkpoint(self.checkpoint, path, f"the stage-1 checkpoint in {self.folder}",
                           "delete the folder or use another checkpoint_dir")
        n = int(self._history_len.numpy())
        rows = self._history.numpy()[:n]
        return LoopState(
            epoch=int(self._epoch.numpy()), step=int(self._step.numpy()), sums=self._sums.numpy(),
            best=float(self._best.numpy()), bad_epochs=int(self._bad.numpy()),
            best_state=[v.numpy() for v in self._best_state] if bool(self._has_best.numpy()) else None,
            history=[dict(zip(self.HISTORY_KEYS, map(float, r))) for r in rows], done=bool(self._done.numpy()))

    def save(self, state: LoopState) -> None:
        """Writes a checkpoint of the model/optimizer as they are now and of ``state``."""
        self._epoch.assign(state.epoch)
        self._step.assign(state.step)
        self._sums.assign(np.asarray(state.sums, np.float64))
        self._best.assign(state.best)
        self._bad.assign(state.bad_epochs)
        self._has_best.assign(state.best_state is not None)
        if state.best_state is not None:
            for var, value in zip(self._best_state, state.best_state):
                var.assign(value)
        rows = np.zeros(self._history.shape, np.float64)
        for i, h in enumerate(state.history[: rows.shape[0]]):
            rows[i] = [h[k] for k in self.HISTORY_KEYS]
        self._history.assign(rows)
        self._history_len.assign(min(len(state.history), rows.shape[0]))
        self._done.assign(state.done)
        from tfmec.atomic import writing

        with writing(self.folder, "the stage-1 checkpoint in "):  # a full disk: one line naming the folder
            self.manager.save()


def _table_difference(saved: str, now: str, difference) -> str:
    """What differs between two :func:`table_fingerprint` strings, the table's content named as such."""
    try:
        a, b = json.loads(saved), json.loads(now)
    except ValueError:
        return "unreadable fingerprint"
    if isinstance(a, dict) and isinstance(b, dict) and a.get("table_sha256") != b.get("table_sha256"):
        return (f"the input table differs: shape {a.get('table_shape')} sha256 {str(a.get('table_sha256'))[:16]}... "
                f"then, shape {b.get('table_shape')} sha256 {str(b.get('table_sha256'))[:16]}... now")
    return difference(saved, now)


__all__ = ["Stage1Checkpointing", "Stage1Checkpoint", "LoopState", "table_fingerprint", "has_checkpoint",
           "replay_order"]
