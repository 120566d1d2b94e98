"""The training split as explicit epochs, for training that must resume exactly after a kill.

``tf.data``'s ``shuffle(reshuffle_each_iteration=True)`` draws each epoch's order from a hidden seed
generator that advances every time an iterator is created, and Keras creates a varying number of
them; a process that restarts at epoch ``e`` cannot recover that state. :class:`EpochStream` makes the
order a pure function of ``(seed, epoch)``: epoch ``e`` is the cached training rows shuffled with seed
``seed * 1000003 + e`` (combined, as every ``tf.data`` seed, with TensorFlow's global seed, which
tfmec sets to the run's seed before it builds a model), so a resumed run asks for epochs ``e, e+1, ...``
and sees exactly the batches an uninterrupted run saw.
"""
from __future__ import annotations

import math

import tensorflow as tf

SEED_STRIDE = 1_000_003


class EpochStream:
    """Epochs of a training split, each with its own seeded order.

    Args:
        rows_dataset: the training rows, one example per element (``({field: Tensor[]}, Tensor[])``),
            unshuffled and preferably cached.
        rows: how many rows it holds.
        batch_size: rows per batch (the last batch of an epoch may be shorter).
        shuffle_buffer: the shuffle buffer (as ``tf.data.Dataset.shuffle``).
        seed: the data seed; epoch ``e`` shuffles with ``seed * 1000003 + e``.
    """

    def __init__(self, rows_dataset: tf.data.Dataset, rows: int, batch_size: int, shuffle_buffer: int, seed: int):
        if rows < 1 or batch_size < 1:
            raise ValueError(f"an epoch stream needs rows >= 1 and batch_size >= 1, got {rows}, {batch_size}")
        self.rows_dataset = rows_dataset
        self.rows, self.batch_size = int(rows), int(batch_size)
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: ``ceil(rows / batch_size)``."""
        return math.ceil(self.rows / self.batch_size)

    def epoch_seed(self, epoch: int) -> int:
        """The shuffle seed of epoch ``epoch``: ``seed * 1000003 + epoch`` (mod 2**31 - 1)."""
        return (self.seed * SEED_STRIDE + int(epoch)) % (2**31 - 1)

    def _one_epoch(self, epoch: int) -> tf.data.Dataset:
        shuffled = self.rows_dataset.shuffle(self.shuffle_buffer, seed=self.epoch_seed(epoch),
                                             reshuffle_each_iteration=False)
        return shuffled.batch(self.batch_size)

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches of epoch ``epoch`` (0-based): ``({field: Tensor[batch]}, Tensor[batch])``."""
        return self._one_epoch(int(epoch)).prefetch(tf.data.AUTOTUNE)

    def epochs(self, first: int, last: int) -> tf.data.Dataset:
        """The batches of epochs ``first .. last - 1`` in one stream (``steps_per_epoch`` batches each):
        feed it to ``model.fit(..., steps_per_epoch=stream.steps_per_epoch, initial_epoch=first)``."""
        if not 0 <= first < last:
            raise ValueError(f"need 0 <= first < last, got {first}, {last}")
        stream = self._one_epoch(first)
        for e in range(first + 1, last):
            stream = stream.concatenate(self._one_epoch(e))
        return stream.prefetch(tf.data.AUTOTUNE)

    def __repr__(self):
        return (f"EpochStream(rows={self.rows}, batch_size={self.batch_size}, steps_per_epoch={self.steps_per_epoch}, "
                f"seed={self.seed})")


__all__ = ["EpochStream", "SEED_STRIDE"]
