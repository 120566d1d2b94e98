"""One writer per output folder: ``tfmec run`` holds an exclusive lock on ``<out>/.tfmec.lock``.

Two runs writing into one ``--out`` at once would leave a folder mixing the two runs' models,
vocabularies and metrics while both exit 0. The first run takes an exclusive ``flock`` on the lock
file before writing anything; a second run finds it taken and stops at once with an error naming the
folder and the process holding it. The operating system releases the lock when its holder exits,
killed or not, so a crashed run never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import functools
import os

LOCK_FILE = ".tfmec.lock"


class OutputInUseError(ValueError):
    """Another process is writing into the same output folder."""


@contextlib.contextmanager
def output_lock(out_dir: str):
    """Holds the exclusive lock of ``out_dir`` (created if missing) for the ``with`` block; raises
    :class:`OutputInUseError` at once when another process holds it."""
    import fcntl

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise OutputInUseError(
                f"--out {out_dir} is being written by another tfmec run{f' (pid {holder})' if holder else ''}; "
                f"wait for it to finish or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def holds_output_lock(run):
    """Decorates ``run(cfg, ...)`` so that it runs holding the lock of ``cfg.out`` (after
    ``cfg.validate()``, so a bad command line never creates the folder)."""

    @functools.wraps(run)
    def wrapper(cfg, *args, **kwargs):
        cfg.validate()
        with output_lock(cfg.out):
            return run(cfg, *args, **kwargs)

    return wrapper


__all__ = ["output_lock", "holds_output_lock", "OutputInUseError", "LOCK_FILE"]
