"""Content fingerprints of the data a run reads: what a training checkpoint is bound to.

A checkpoint written while training on one file must never be resumed against another, and "another"
means other *content*, not another path: a data file regenerated in place (same path, same row count,
perhaps the same size, perhaps even the same modification time after ``cp -p`` or ``rsync -t``) must be
told apart from the file the checkpoint was trained on. :func:`content_fingerprint` therefore hashes
every byte of every input file (SHA-256, streamed in 1 MiB chunks, so memory stays constant).

Cost against safety: a full hash costs one extra sequential read of the data (SHA-256 runs at about
0.9 GB/s on one core of the machines this was measured on: ~12 s for the 11 GB Criteo Kaggle file,
usually from the page cache the vocabulary pass has just filled), paid once per ``tfmec run`` and only
with ``--checkpoint-dir``. The cheaper alternatives are not safe: size + modification time misses
same-size rewrites whose time is preserved or restored, and a hash of sampled blocks misses every edit
outside the samples (one changed label in the middle of the file). Both would resume a checkpoint
against other data and report the result as the new run's: a silent wrong answer, which a few
seconds per run do not justify. Within one process a file whose identity and status (device, inode,
size, modification and change times) are unchanged is not hashed again (a change of content always
changes the change time, which no user call can set).

The paths are part of the report, not of the comparison: the same bytes under another path resume.
"""
from __future__ import annotations

import hashlib
import os
import stat

CHUNK_BYTES = 1 << 20
_CACHE: dict = {}


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sha256(path: str) -> dict:
    """``{"path", "bytes", "sha256"}`` of one regular file, streamed in :data:`CHUNK_BYTES` chunks.

    Raises ``ValueError`` for a path that is not a regular file (a FIFO or a device would block or
    never end) and ``OSError`` when it cannot be read."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file (a folder, FIFO, device or socket); tfmec reads data "
                         "from regular files")
    key = (os.path.realpath(path), _identity(st))
    digest = _CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped for something else since the stat
                raise ValueError(f"{path} is not a regular file")
            while True:
                block = fh.read(CHUNK_BYTES)
                if not block:
                    break
                h.update(block)
            after = os.fstat(fh.fileno())
        if _identity(after) != _identity(st):
            raise ValueError(f"{path} changed while tfmec was reading it; run again once it is complete")
        digest = h.hexdigest()
        _CACHE[key] = digest
    return {"path": path, "bytes": int(st.st_size), "sha256": digest, "identity": list(_identity(st))}


def input_files(data_paths, format: str | None = None, field_map: str | None = None) -> list[str]:
    """Every file a run with these data settings reads: the data files, the libSVM field map, for
    MIND the ``news.tsv`` beside the first behaviors file (which the reader uses when it exists), and
    for MovieLens the movies and users files beside the ratings."""
    paths = list(data_paths)
    if field_map:
        paths.append(field_map)
    if format == "movielens" and paths:  # the movies and users files the reader finds beside the ratings
        from tfmec.data.readers.movielens import MovieLensReader

        reader = MovieLensReader(paths)
        known = {os.path.abspath(p) for p in paths}
        paths += [p for p in (reader.movies_path, reader.users_path) if p and os.path.abspath(p) not in known]
    if format == "mind" and paths:
        news = os.path.join(os.path.dirname(os.path.abspath(paths[0])), "news.tsv")
        if os.path.isfile(news) and os.path.abspath(news) not in {os.path.abspath(p) for p in paths}:
            paths.append(news)
    return paths


def content_fingerprint(paths) -> list[dict]:
    """``[{"path", "bytes", "sha256", "identity"}]`` of ``paths`` in order (see :func:`file_sha256`)."""
    return [file_sha256(p) for p in paths]


def comparable(fingerprint: list[dict]) -> list[dict]:
    """What a checkpoint compares: sizes and digests in order (paths and file identities left out)."""
    return [{"bytes": f["bytes"], "sha256": f["sha256"]} for f in fingerprint]


def check_unchanged(fingerprint: list[dict]) -> None:
    """Raises ``ValueError`` naming the file when one of the hashed files changed since it was hashed
    (e.g. rewritten while tfmec read it): the data read would not be the data the checkpoint is bound to."""
    for f in fingerprint:
        try:
            now = _identity(os.stat(f["path"]))
        except OSError as err:
            raise ValueError(f"{f['path']} disappeared while tfmec was reading it ({err.strerror})") from None
        if list(now) != list(f["identity"]):
            raise ValueError(f"{f['path']} changed while tfmec was reading it; run again once it is complete")


__all__ = ["file_sha256", "input_files", "content_fingerprint", "comparable", "check_unchanged",
           "CHUNK_BYTES"]
