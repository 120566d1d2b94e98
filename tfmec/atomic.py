"""Atomic files and folders: a reader sees the old artifact or the new one, never half of one.

Every artifact tfmec writes goes through a temporary name in the same folder and one ``os.replace``
/ ``os.rename`` (atomic on POSIX within one file system), so a process killed at any instant (even
with SIGKILL, which runs no cleanup) leaves the earlier artifact as it was. Temporary names start
with :data:`TMP_PREFIX` and carry the writer's process id and host (``.tmp-<pid>@<host>-...``); what a
killed writer left behind is removed by the next write into the same folder
(:func:`remove_stale_temporaries`), never while its writer is alive.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile

TMP_PREFIX = ".tmp-"


def host_tag() -> str:
    """A short name of this machine for temporary names (letters and digits of the host name)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def temporary_prefix(tag: str = "") -> str:
    """The prefix of this process's temporary names: ``.tmp-<pid>@<host>-[<tag>-]``."""
    return f"{TMP_PREFIX}{os.getpid()}@{host_tag()}-" + (f"{tag}-" if tag else "")


def _writer(name: str) -> tuple[int, str] | None:
    """``(pid, host)`` of a temporary name written by :func:`temporary_prefix` (None otherwise)."""
    match = re.match(re.escape(TMP_PREFIX) + r"(\d+)@([A-Za-z0-9]+)-", name)
    return (int(match.group(1)), match.group(2)) if match else None


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes the temporary files and folders in ``directory`` whose writer process (on this machine)
    is gone.

    Returns the removed names. Names without a process id, those of live processes and those written
    from another machine (a shared file system) are kept.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host = host_tag()
    for name in names:
        writer = _writer(name)
        if writer is None or writer[1] != host or writer[0] == os.getpid() or pid_alive(writer[0]):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def _fsync_directory(directory: str) -> None:
    """Flushes a folder's entries (the rename) to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Yields a temporary path beside ``path`` (ending in ``suffix``, e.g. ``".keras"`` for writers that
    check the extension); when the block succeeds the file is flushed and renamed onto ``path``; when
    it raises, the temporary file is removed and ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(), suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes, suffix: str = "") -> None:
    """Writes ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, suffix) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_json_atomic(path: str, payload, **dumps_kwargs) -> None:
    """Writes ``payload`` as JSON to ``path`` atomically; ``dumps_kwargs`` go to ``json.dumps``."""
    write_bytes_atomic(path, json.dumps(payload, **dumps_kwargs).encode("utf-8"), suffix=".json")


@contextlib.contextmanager
def atomic_directory(final_path: str):
    """Yields an empty temporary folder beside ``final_path``; renames it to ``final_path`` when the
    block succeeds and removes it when the block raises. Raises ``FileExistsError`` when
    ``final_path`` exists at rename time (nothing is overwritten)."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent)
    tmp = tempfile.mkdtemp(prefix=temporary_prefix(os.path.basename(final_path)), dir=parent)
    try:
        yield tmp
        if os.path.exists(final_path):
            raise FileExistsError(f"{final_path} already exists; versions are never overwritten")
        os.rename(tmp, final_path)
        _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["TMP_PREFIX", "atomic_file", "atomic_directory", "write_bytes_atomic", "write_json_atomic",
           "remove_stale_temporaries", "pid_alive", "temporary_prefix", "host_tag"]
