"""Warnings for data that trains and evaluates without an error but cannot mean what the numbers say.

:func:`degenerate_data_warnings` looks at a loaded :class:`~tfmec.data.pipeline.CTRData` and returns one
sentence per problem found (empty when there is none); ``tfmec run`` prints each as ``warning: ...`` and
records them in ``metrics.json`` under ``warnings``. What it checks:

* the same file given twice (by resolved path or by content);
* test rows with an identical twin (same features and label) in the training split: a test AUC then
  measures memory, not generalisation (a share above :data:`TWIN_SHARE_WARN`);
* categorical fields whose test ids are all (or almost all) the OOV id 0: the model cannot tell their
  values apart (a share above :data:`OOV_SHARE_WARN`), every field being OOV worst of all;
* a split with one class only (no AUC exists).
"""
from __future__ import annotations

import os

import numpy as np

TWIN_SHARE_WARN = 0.5
"""Warn when more than this share of test rows have an identical twin in training."""
OOV_SHARE_WARN = 0.99
"""Warn for a categorical field when more than this share of its test ids are OOV (id 0)."""


def repeated_files(paths) -> list[str]:
    """Warnings for data files given more than once (the same resolved path, or the same bytes)."""
    from tfmec.data.fingerprint import file_sha256  # cached: a run with --checkpoint-dir hashed them already

    out, seen_path, seen_digest = [], {}, {}
    sizes = [os.path.getsize(p) if os.path.isfile(p) else -1 for p in paths]
    for p, size in zip(paths, sizes):
        real = os.path.realpath(p)
        if real in seen_path:
            out.append(f"the data file {p} is given twice (same file as {seen_path[real]}): its rows are counted "
                       f"twice and land in both the training and the test split")
            continue
        seen_path[real] = p
        if size >= 0 and sizes.count(size) > 1:  # only files of equal size can have equal content
            digest = file_sha256(real)["sha256"]
            if digest in seen_digest:
                out.append(f"the data files {seen_digest[digest]} and {p} have the same content: their rows are "
                           f"counted twice and land in both the training and the test split")
            seen_digest.setdefault(digest, p)
    return out


def _row_hashes(dataset) -> tuple[np.ndarray, dict, np.ndarray]:
    """One 64-bit hash per row of ``(features, label)`` batches, per field the ids seen, and the labels."""
    hashes, ids, labels = [], {}, []
    for features, label in dataset:
        labels.append(np.asarray(label).reshape(-1).astype(np.float64))
        cols = [labels[-1].view(np.uint64)]
        for name in sorted(features):
            col = np.asarray(features[name])
            col = col.reshape(col.shape[0], -1)
            if col.dtype.kind in "iu":
                ids.setdefault(name, []).append(col.reshape(-1))
            cols.extend(np.ascontiguousarray(col.astype(np.float64)).view(np.uint64).T)
        h = np.full(cols[0].shape, np.uint64(1469598103934665603))
        for c in cols:
            h = (h ^ c) * np.uint64(1099511628211)
        hashes.append(h)
    if not hashes:
        return np.zeros(0, np.uint64), {}, np.zeros(0)
    return np.concatenate(hashes), {k: np.concatenate(v) for k, v in ids.items()}, np.concatenate(labels)


def degenerate_data_warnings(data, paths=()) -> list[str]:
    """The warnings (module docstring) for ``data``; ``paths`` are the data files it was read from."""
    warnings = repeated_files(paths)
    with np.errstate(over="ignore"):
        train_h, _, _ = _row_hashes(data.train)
        test_h, test_ids, labels = _row_hashes(data.test)
    if test_h.size:
        twins = float(np.isin(test_h, train_h).mean())
        if twins > TWIN_SHARE_WARN:
            warnings.append(f"{twins:.0%} of the test rows have an identical twin (same features and label) in the "
                            f"training split: the test AUC measures memory, not generalisation (is a file given "
                            f"twice, or are the rows duplicated?)")
    categorical = [f.name for f in data.schema.categorical] if hasattr(data.schema, "categorical") else []
    oov = {name: float(np.mean(test_ids[name] == 0)) for name in categorical if name in test_ids and test_ids[name].size}
    bad = sorted(name for name, share in oov.items() if share > OOV_SHARE_WARN)
    if bad and len(bad) == len(oov):
        warnings.append(f"every categorical id of the test split is OOV (id 0) in all {len(bad)} fields: the model "
                        f"sees no known value at test time (is the test data from another source, or --min-count too "
                        f"high?)")
    elif bad:
        warnings.append(f"field(s) {bad} are OOV (id 0) in more than {OOV_SHARE_WARN:.0%} of the test rows: their "
                        f"tables cannot tell the test values apart")
    if labels.size and np.unique(labels).size < 2:
        warnings.append(f"the test split has one class only (label {labels[0]:g} everywhere): no AUC exists")
    return warnings


__all__ = ["degenerate_data_warnings", "repeated_files", "TWIN_SHARE_WARN", "OOV_SHARE_WARN"]
