"""Vocabularies as SavedModel assets: one text file per field and an in-graph lookup table over it.

Line ``j`` (0-based) of a field's asset file holds the key of id ``j + 1`` (id 0 is the OOV bucket,
see :mod:`tfmec.data.vocabulary`). A key is ``"k"`` followed by the unpadded URL-safe base64 of the
token's UTF-8 bytes, so every token fits on one non-empty line whatever it contains (the empty
string, Criteo's missing-value token, would be an empty line, which ``TextFileInitializer`` rejects;
tabs, ``\\r`` and ``\\n`` would break the line format). The graph computes the same key from the
request string with ``tf.io.encode_base64`` before the lookup.
"""
from __future__ import annotations

import base64
from typing import Iterable

import tensorflow as tf

KEY_PREFIX = "k"
KEY_ENCODING = "k + urlsafe base64 (no padding) of the UTF-8 token; line j holds id j + 1"


def token_key(token: str) -> str:
    """The asset-file key of one token (see the module docstring)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(str(token).encode("utf-8")).decode("ascii").rstrip("=")


def write_vocabulary_asset(path: str, tokens: Iterable[str]) -> int:
    """Writes the keys of ``tokens`` (the values of ids 1, 2, ... in order) one per line.

    Returns the number of lines written.
    """
    n = 0
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        for token in tokens:
            fh.write(token_key(token) + "\n")
            n += 1
    return n


def string_keys(values: tf.Tensor) -> tf.Tensor:
    """In-graph :func:`token_key`: ``tf.string[batch]`` -> ``tf.string[batch]``."""
    return tf.strings.join([KEY_PREFIX, tf.io.encode_base64(values, pad=False)])


class VocabularyTable(tf.Module):
    """A ``tf.lookup.StaticHashTable`` over one asset file: raw token -> int id (0 for OOV).

    Args:
        asset_path: a file written by :func:`write_vocabulary_asset`; it is tracked as a SavedModel
            asset (copied into ``assets/`` on save).
        name: module name (the field name).
    Call: ``table(tokens: tf.string[batch]) -> tf.int32[batch]``.
    """

    def __init__(self, asset_path: str, name: str | None = None):
        super().__init__(name=name)
        initializer = tf.lookup.TextFileInitializer(
            asset_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        # line number j -> id j + 1; a miss returns -1 -> id 0 (OOV)
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)

    def __call__(self, tokens: tf.Tensor) -> tf.Tensor:
        ids = self.table.lookup(string_keys(tokens)) + 1
        return tf.cast(ids, tf.int32)


__all__ = ["token_key", "write_vocabulary_asset", "string_keys", "VocabularyTable", "KEY_ENCODING"]
