"""The product-quantisation codes of embedding tables: what stage 1 produces and stage 2 consumes.

For a field with ``V`` ids, embedding dim ``d``, ``M`` sub-spaces and ``K`` codewords each:

* ``codes``: ``[V, M]`` integer codeword index per (id, sub-space), stored ``uint8`` when
  ``K <= 256`` and ``uint16`` otherwise;
* ``codebooks``: ``float32[M, K, d / M]``; the embedding of id ``i`` is the concatenation over ``m``
  of ``codebooks[m, codes[i, m]]`` (then multiplied by ``projection`` when one is present);
* ``projection``: optional ``float32[d, d]`` learned decoder (None: identity);
* ``stats``: stage-1 statistics (reconstruction error, usage entropy, dead codewords, head/tail usage);
* ``group``: None (private codebooks), or the name of a codebook-sharing group: every field of a group
  holds the SAME ``codebooks`` (and ``projection``) array, learned once on the union of their rows
  (``learn_codes(..., share_codebooks=True)``), and stage 2 puts the group in one
  :class:`~tfmec.layers.SharedQuantizedEmbedding`.

Saved as ``.npz`` arrays plus a JSON manifest; nothing is pickled. A group's codebooks (and projection)
are stored once (``group_codebooks_<j>``); loading gives its fields one shared array.

The pair is replaced as one unit. The manifest holds the arrays' SHA-256 and is the commit point:
:meth:`CodeSet.save` first writes the new arrays under a name of their own (``<path>.<sha16>.npz``,
atomically), then the manifest (atomically: from here on the new pair is the saved one), then renames
the arrays onto ``<path>.npz``. A failure before the manifest's rename (a full disk, an I/O error, a
kill) leaves the previous pair as it was; a kill after it leaves the new manifest with its arrays
under their own name, which :meth:`CodeSet.load` finds by the manifest's checksum. A manifest and
arrays from different saves are refused (checksum mismatch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Mapping

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.atomic import _fsync_directory, write_bytes_atomic, write_json_atomic, writing
from tfmec.layers._utils import same_codebooks  # noqa: F401  (public here; lives in layers, which know nothing of mec)

FORMAT = "tfmec-pq-codes"


@tfmec_export("tfmec.mec.code_dtype")
def code_dtype(num_codewords: int):
    """``np.uint8`` when ``K <= 256``, ``np.uint16`` when ``K <= 65536``."""
    if num_codewords < 2:
        raise ValueError(f"num_codewords must be >= 2, got {num_codewords}")
    if num_codewords <= 256:
        return np.uint8
    if num_codewords <= 65536:
        return np.uint16
    raise ValueError(f"num_codewords must be <= 65536, got {num_codewords}")


@tfmec_export("tfmec.mec.FieldCodes")
@dataclasses.dataclass
class FieldCodes:
    """PQ codes of one field's table; shapes in the module docstring."""

    field: str
    codes: np.ndarray
    codebooks: np.ndarray
    projection: np.ndarray | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    group: str | None = None

    def __post_init__(self):
        self.codebooks = np.asarray(self.codebooks, dtype=np.float32)
        if self.codebooks.ndim != 3:
            raise ValueError(f"{self.field}: codebooks must be [M, K, d/M], got shape {self.codebooks.shape}")
        m, k, _ = self.codebooks.shape
        self.codes = np.asarray(self.codes)
        if self.codes.ndim != 2 or self.codes.shape[1] != m:
            raise ValueError(f"{self.field}: codes must be [V, {m}], got shape {self.codes.shape}")
        if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= k):
            raise ValueError(f"{self.field}: codes must lie in [0, {k})")
        self.codes = self.codes.astype(code_dtype(k))
        if self.projection is not None:
            self.projection = np.asarray(self.projection, dtype=np.float32)
            d = m * self.codebooks.shape[2]
            if self.projection.shape != (d, d):
                raise ValueError(f"{self.field}: projection must be [{d}, {d}]")

    @property
    def vocab_size(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_subspaces(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def num_codewords(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[0] * self.codebooks.shape[2])

    def decode(self, ids: np.ndarray | None = None) -> np.ndarray:
        """The quantised embeddings ``float32[len(ids), d]`` (all ids when ``ids`` is None)."""
        codes = self.codes if ids is None else self.codes[np.asarray(ids)]
        parts = [self.codebooks[m][codes[:, m].astype(np.int64)] for m in range(self.num_subspaces)]
        out = np.concatenate(parts, axis=1)
        return out @ self.projection if self.projection is not None else out


_LEARN_CODES = object()


def stage1_default(name: str):
    """The default of :func:`~tfmec.mec.learn_codes`'s keyword ``name`` (read from its signature): the
    one source of the stage-1 defaults, for :meth:`CodeSet.setting` and the settings of ``tfmec run``
    (:class:`tfmec.settings.MECSettings`)."""
    import inspect

    from tfmec.mec.stage1 import learn_codes

    parameter = inspect.signature(learn_codes).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise ValueError(f"learn_codes' {name!r} has no default")
    return parameter.default


@tfmec_export("tfmec.mec.CodeSet")
class CodeSet(dict):
    """``{field name: FieldCodes}`` plus the stage-1 settings that produced them (``config``).

    Fields with the same ``FieldCodes.group`` share one codebook array (see :attr:`groups`).
    """

    def __init__(self, items: Mapping[str, FieldCodes] | None = None, config: dict | None = None):
        super().__init__(items or {})
        self.config = dict(config or {})

    def setting(self, name: str, default=_LEARN_CODES):
        """The stage-1 setting ``name`` that produced these codes (``config``: the keyword arguments of
        :func:`~tfmec.mec.learn_codes`, saved with the codes); one they do not record (an older file, a
        set made by hand) is ``default``, else learn_codes' default (:func:`stage1_default`)."""
        if name in self.config:
            return self.config[name]
        return stage1_default(name) if default is _LEARN_CODES else default

    @property
    def groups(self) -> dict:
        """``{group name: [field names]}`` of the codebook-sharing groups, in field order."""
        out: dict = {}
        for name, fc in self.items():
            if fc.group is not None:
                out.setdefault(fc.group, []).append(name)
        return out

    def check_groups(self) -> None:
        """Raises ``ValueError`` when the fields of a group do not hold identical codebooks/projection."""
        for group, names in self.groups.items():
            first = self[names[0]]
            for name in names[1:]:
                if not same_codebooks(first, self[name]):
                    raise ValueError(f"fields {names[0]!r} and {name!r} of group {group!r} hold different codebooks")

    def save(self, path: str) -> None:
        """Writes ``path.npz`` (arrays) and ``path.json`` (manifest); ``path`` without extension.
        A group's codebooks and projection are written once. The pair is replaced as one unit (see the
        module docstring): on any failure the previous pair stays loadable; an I/O failure raises
        :class:`~tfmec.atomic.ArtifactWriteError` naming the file."""
        self.check_groups()
        arrays = {}
        manifest = {"format": FORMAT, "version": 2, "config": self.config, "fields": [], "groups": []}
        group_index = {}
        for j, (group, names) in enumerate(self.groups.items()):
            first = self[names[0]]
            group_index[group] = j
            arrays[f"group_codebooks_{j}"] = first.codebooks
            if first.projection is not None:
                arrays[f"group_projection_{j}"] = first.projection
            manifest["groups"].append({"name": group, "index": j, "fields": names,
                                       "has_projection": first.projection is not None})
        for i, (name, fc) in enumerate(self.items()):
            arrays[f"codes_{i}"] = fc.codes
            entry = {"name": name, "index": i, "stats": fc.stats, "has_projection": fc.projection is not None}
            if fc.group is None:
                arrays[f"codebooks_{i}"] = fc.codebooks
                if fc.projection is not None:
                    arrays[f"projection_{i}"] = fc.projection
            else:
                entry["group"] = fc.group
            manifest["fields"].append(entry)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        blob = buffer.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        manifest["npz_sha256"] = digest  # ties the manifest to its arrays
        staged = _staged_arrays(path, digest)
        _finish_interrupted_save(path)  # an earlier save killed after its commit: its arrays to their name
        write_bytes_atomic(staged, blob, suffix=".npz")  # 1. the new arrays under their own name
        try:
            write_json_atomic(path + ".json", manifest, indent=1, default=float)  # 2. the commit point
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise
        with writing(path + ".npz"):  # 3. the arrays to their usual name (load finds them either way)
            os.replace(staged, path + ".npz")
            _fsync_directory(os.path.dirname(os.path.abspath(path)))
        _remove_staged(path)

    @classmethod
    def load(cls, path: str) -> "CodeSet":
        """Reads what :meth:`save` wrote (``allow_pickle=False``); the fields of a group get one shared
        codebook array."""
        try:
            with open(path + ".json", encoding="utf-8") as fh:
                manifest = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}.json is not a tfmec PQ code file (not valid JSON: {err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{path}.json is not a tfmec PQ code file")
        expected = manifest.get("npz_sha256")
        blob = None
        candidates = [path + ".npz"] + ([_staged_arrays(path, expected)] if isinstance(expected, str) else [])
        for candidate in candidates:  # the usual name, then the new arrays of a save killed before their rename
            if not os.path.exists(candidate):
                continue
            with open(candidate, "rb") as fh:
                data = fh.read()
            if expected is None or hashlib.sha256(data).hexdigest() == expected:
                blob = data
                break
        if blob is None:
            if not any(os.path.exists(c) for c in candidates):
                raise FileNotFoundError(f"{path}.npz not found (the arrays of {path}.json)")
            raise ValueError(f"{path}.npz does not belong to {path}.json (checksum mismatch: the two files come "
                             "from different saves)")
        out = cls(config=manifest.get("config"))
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            shared = {}
            for g in manifest.get("groups", []):
                j = g["index"]
                books = np.asarray(arrays[f"group_codebooks_{j}"], dtype=np.float32)
                proj = (np.asarray(arrays[f"group_projection_{j}"], dtype=np.float32) if g.get("has_projection")
                        else None)
                shared[g["name"]] = (books, proj)
            for f in manifest["fields"]:
                i = f["index"]
                group = f.get("group")
                if group is not None:
                    books, proj = shared[group]
                else:
                    books = arrays[f"codebooks_{i}"]
                    proj = arrays[f"projection_{i}"] if f.get("has_projection") else None
                out[f["name"]] = FieldCodes(f["name"], arrays[f"codes_{i}"], books, proj, f.get("stats", {}), group)
        return out


def _staged_arrays(path: str, digest: str) -> str:
    """Where :meth:`CodeSet.save` writes new arrays before the manifest names them: ``<path>.<sha16>.npz``."""
    return f"{path}.{digest[:16]}.npz"


def _finish_interrupted_save(path: str) -> None:
    """Completes a save killed between its manifest's rename and its arrays' rename (step 3)."""
    try:
        with open(path + ".json", encoding="utf-8") as fh:
            expected = json.load(fh).get("npz_sha256")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(expected, str) and re.fullmatch(r"[0-9a-f]{64}", expected):
        staged = _staged_arrays(path, expected)
        if os.path.exists(staged):
            with writing(path + ".npz"):
                os.replace(staged, path + ".npz")


def _remove_staged(path: str) -> None:
    """Removes arrays left under a staged name by earlier interrupted saves of ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.[0-9a-f]{16}\.npz")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
