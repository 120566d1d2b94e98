"""Per-field vocabularies with frequency counts, built in one streaming pass.

Id layout of a field with vocabulary size ``V``:

* id 0 is the OOV bucket: values seen fewer than ``min_count`` times in the training split, and
  values never seen there;
* ids ``1 .. V-1`` are the kept values, most frequent first (ties by value, so the order is
  deterministic).

``counts[i]`` is the training-split frequency of id ``i`` (``counts[0]`` sums the rare values). MEC's
popularity weighting reads these counts. Vocabularies are saved as JSON, never pickled.

Values are counted and looked up as Python strings (never through a fixed-width NumPy string array,
which pads every row of a chunk to its longest value: one 1 MB value in an 8192-row chunk would ask for
32 GB). Non-string values are turned into text the way ``numpy.ndarray.astype(str)`` does.
"""
from __future__ import annotations

import collections
import itertools
import json
from typing import Mapping

import numpy as np

from tfmec.api_export import export_value, tfmec_export
from tfmec.atomic import write_bytes_atomic, write_json_atomic  # noqa: F401  (re-exported)

OOV_ID = 0
export_value("tfmec.data.OOV_ID", OOV_ID, doc="the id of values a vocabulary does not know (row 0 of every table)")
FORMAT_VERSION = 1


def _text(value) -> str:
    """``value`` as ``numpy.asarray([value], object).astype(str)`` turns it into text."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, np.generic)):
        return np.asarray([value], dtype=object).astype(str)[0].item()  # one value: bounded
    return str(value)


def as_text_list(values) -> list:
    """The values of an array (any shape, flattened) as a list of ``str``, without a fixed-width copy."""
    items = np.asarray(values, dtype=object).ravel().tolist()
    if all(type(v) is str for v in items):
        return items
    return [v if type(v) is str else _text(v) for v in items]


@tfmec_export("tfmec.data.Vocabulary")
class Vocabulary:
    """The values of one categorical field and how often each occurred.

    Use :meth:`update` on every training chunk, then :meth:`finalize`; afterwards :meth:`lookup`
    maps raw values (``np.ndarray[rows]`` of str) to ``int32[rows]`` ids.
    """

    def __init__(self, name: str, min_count: int = 2):
        if min_count < 1:
            raise ValueError(f"vocabulary {name!r}: min_count must be >= 1, got {min_count}")
        self.name = name
        self.min_count = int(min_count)
        self._raw_counts: dict[str, int] | None = {}
        self.tokens: list[str] = []  # tokens[i - 1] is the value of id i
        self.counts: np.ndarray = np.zeros(1, np.int64)
        self._index: dict[str, int] = {}

    # --- building ----------------------------------------------------------------------
    def update(self, values: np.ndarray) -> None:
        """Counts the raw values of one chunk (``np.ndarray[rows]`` of str)."""
        if self._raw_counts is None:
            raise RuntimeError(f"vocabulary {self.name!r} is already finalized")
        raw = self._raw_counts
        for u, c in collections.Counter(as_text_list(values)).items():
            raw[u] = raw.get(u, 0) + c

    def finalize(self) -> "Vocabulary":
        """Freezes the vocabulary: assigns ids by descending count and drops rare values to OOV."""
        if self._raw_counts is None:
            return self
        kept = [(t, c) for t, c in self._raw_counts.items() if c >= self.min_count]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        rare = sum(c for c in self._raw_counts.values() if c < self.min_count)
        self.tokens = [t for t, _ in kept]
        self.counts = np.asarray([rare] + [c for _, c in kept], dtype=np.int64)
        self._index = {t: i + 1 for i, t in enumerate(self.tokens)}
        self._raw_counts = None
        return self

    @property
    def finalized(self) -> bool:
        return self._raw_counts is None

    # --- use --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of ids, OOV included."""
        self._check_final()
        return len(self.tokens) + 1

    def __len__(self):
        return self.size

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Maps raw values ``[rows]`` to ids ``int32[rows]``; unknown values get ``OOV_ID``."""
        self._check_final()
        shape = np.shape(values)
        items = as_text_list(values)
        ids = np.fromiter(map(self._index.get, items, itertools.repeat(OOV_ID)), dtype=np.int32, count=len(items))
        return ids.reshape(shape)

    def token(self, idx: int) -> str | None:
        """The value of id ``idx`` (None for the OOV id)."""
        self._check_final()
        return None if idx == OOV_ID else self.tokens[idx - 1]

    def _check_final(self):
        if self._raw_counts is not None:
            raise RuntimeError(f"vocabulary {self.name!r} is not finalized; call finalize() first")

    # --- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        self._check_final()
        return {
            "name": self.name,
            "min_count": self.min_count,
            "tokens": self.tokens,
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Vocabulary":
        vocab = cls(data["name"], data.get("min_count", 1))
        tokens = [str(t) for t in data["tokens"]]
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.shape != (len(tokens) + 1,):
            raise ValueError(f"vocabulary {vocab.name!r}: counts must have len(tokens) + 1 entries")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"vocabulary {vocab.name!r}: duplicate tokens")
        vocab.tokens, vocab.counts = tokens, counts
        vocab._index = {t: i + 1 for i, t in enumerate(tokens)}
        vocab._raw_counts = None
        return vocab

    def __repr__(self):
        if not self.finalized:
            return f"Vocabulary({self.name!r}, building, {len(self._raw_counts)} values so far)"
        return f"Vocabulary({self.name!r}, size={self.size}, min_count={self.min_count})"


@tfmec_export("tfmec.data.NumericStats")
class NumericStats:
    """Running mean and variance of one numeric field (after its transform), for standardisation."""

    def __init__(self, name: str):
        self.name = name
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray) -> None:
        """Adds the finite values of one chunk ``float64[rows]`` (Chan's parallel update)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        n_b, mean_b = v.size, float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n > 1 and self.m2 > 0 else 1.0

    def to_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, data: Mapping) -> "NumericStats":
        s = cls(data["name"])
        s.n, s.mean, s.m2 = int(data["n"]), float(data["mean"]), float(data["m2"])
        return s


def vocabulary_payload(vocabularies: Mapping[str, Vocabulary],
                       numeric: Mapping[str, NumericStats] | None = None) -> dict:
    """The JSON document of :func:`save_vocabularies` (readable by :func:`load_vocabularies`)."""
    return {
        "format": "tfmec-vocabulary",
        "version": FORMAT_VERSION,
        "vocabularies": [v.to_dict() for v in vocabularies.values()],
        "numeric": [s.to_dict() for s in (numeric or {}).values()],
    }


@tfmec_export("tfmec.data.save_vocabularies")
def save_vocabularies(path: str, vocabularies: Mapping[str, Vocabulary], numeric: Mapping[str, NumericStats] | None = None) -> None:
    """Saves vocabularies (and numeric statistics) of a data set to one JSON file, atomically."""
    write_json_atomic(path, vocabulary_payload(vocabularies, numeric))


@tfmec_export("tfmec.data.load_vocabularies")
def load_vocabularies(path: str) -> tuple[dict[str, Vocabulary], dict[str, NumericStats]]:
    """Loads what :func:`save_vocabularies` wrote. Returns ``(vocabularies, numeric_stats)``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a tfmec vocabulary file (not valid JSON: {err})") from None
    if not isinstance(data, dict) or data.get("format") != "tfmec-vocabulary":
        raise ValueError(f"{path}: not a tfmec vocabulary file")
    try:
        vocabs = {d["name"]: Vocabulary.from_dict(d) for d in data["vocabularies"]}
        numeric = {d["name"]: NumericStats.from_dict(d) for d in data.get("numeric", [])}
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed tfmec vocabulary file (missing or wrong entry {err})") from None
    return vocabs, numeric

