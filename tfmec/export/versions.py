"""Versioned, atomic export directories: the ``base_dir/<version>/`` layout TF Serving watches.

A version is written into a hidden temporary folder beside its final place (``base_dir/.tmp-<pid>@<host>-...``,
which TF Serving ignores: not a number) and renamed to ``base_dir/<version>`` only once complete. A
failure removes the temporary folder and leaves every earlier version as it was, so a half-written
version directory is never visible; the folder of a writer killed outright (SIGKILL) is removed by the
next export into ``base_dir`` (:func:`tfmec.atomic.remove_stale_temporaries`).
"""
from __future__ import annotations

import os

from tfmec.api_export import tfmec_export
from tfmec.atomic import TMP_PREFIX, atomic_directory  # noqa: F401  (re-exported)


@tfmec_export("tfmec.export.existing_versions")
def existing_versions(base_dir: str) -> list[int]:
    """The version numbers (integer folder names) under ``base_dir``, ascending; [] when it is missing."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(n) for n in os.listdir(base_dir) if n.isdigit() and os.path.isdir(os.path.join(base_dir, n)))


@tfmec_export("tfmec.export.next_version")
def next_version(base_dir: str) -> int:
    """One more than the newest existing version, or 1 for an empty / missing ``base_dir``."""
    versions = existing_versions(base_dir)
    return versions[-1] + 1 if versions else 1


def resolve_version(base_dir: str, version: int | None) -> int:
    """``version`` checked (a non-negative int not yet used), or :func:`next_version` when None."""
    if version is None:
        return next_version(base_dir)
    if isinstance(version, bool) or int(version) != version or int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    version = int(version)
    if os.path.exists(os.path.join(base_dir, str(version))):
        raise FileExistsError(f"{os.path.join(base_dir, str(version))} already exists; versions are never overwritten")
    return version


@tfmec_export("tfmec.export.directory_bytes")
def directory_bytes(path: str) -> int:
    """Total size in bytes of the files under ``path`` (or of ``path`` itself when it is a file)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


__all__ = ["existing_versions", "next_version", "resolve_version", "atomic_directory", "directory_bytes"]
