"""Atomic files and folders: a reader sees the old artifact or the new one, never half of one.

Every artifact tfmec writes goes through a temporary name in the same folder and one ``os.replace``
/ ``os.rename`` (atomic on POSIX within one file system), so a process killed at any instant (even
with SIGKILL, which runs no cleanup) leaves the earlier artifact as it was. Temporary names start
with :data:`TMP_PREFIX` and carry the writer's process id and host (``.tmp-<pid>@<host>-...``); what a
killed writer left behind is removed by the next write into the same folder
(:func:`remove_stale_temporaries`), never while its writer is alive.

Modes: an artifact gets the permissions a plain write would give it, ``0666 & ~umask`` for files and
``0777 & ~umask`` for folders (``0644`` / ``0755`` under the usual umask 022), so a model server running
as another user (TF Serving) can read what tfmec exported. (``tempfile.mkstemp`` / ``mkdtemp`` make
``0600`` / ``0700`` temporaries, which a rename would carry onto the artifact.)

Errors: a write that fails for lack of space, quota, permissions or an I/O error (``OSError`` or a
TensorFlow ``OpError`` such as ``ResourceExhaustedError`` inside ``SaveV2``) raises
:class:`ArtifactWriteError`, an ``OSError`` whose message is one line naming the artifact's path and
the reason; the artifact is left as it was.
"""
from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import threading

TMP_PREFIX = ".tmp-"
_UMASK_LOCK = threading.Lock()


class ArtifactWriteError(OSError):
    """Writing an artifact failed (disk full, quota, permissions, I/O error). ``str()`` is one line:
    ``cannot write <what><path>: <reason>``; ``path`` and ``errno`` (when known) are attributes."""

    def __init__(self, path: str, reason: str, code: int | None = None, what: str = ""):
        super().__init__(code if code is not None else errno_codes.EIO, reason)
        self.errno = code
        self.path = self.filename = path
        self.reason, self.what = reason, what

    def __str__(self) -> str:
        return f"cannot write {self.what}{self.path}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.errno, self.what))


_TF_ERRNO = (("No space left on device", errno_codes.ENOSPC), ("Disk quota exceeded", errno_codes.EDQUOT),
             ("Read-only file system", errno_codes.EROFS), ("Permission denied", errno_codes.EACCES),
             ("Input/output error", errno_codes.EIO), ("File too large", errno_codes.EFBIG))


def _tf_op_error(err: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None) if tf is not None else None
    return errors is not None and isinstance(err, errors.OpError)


def write_error(path: str, err: BaseException, what: str = "") -> ArtifactWriteError | None:
    """``err`` (raised while writing ``path``) as an :class:`ArtifactWriteError`, or None when it is not an
    I/O failure (a programming error, an ``ArtifactWriteError`` already, or ``FileExistsError``, which
    the atomic writers raise on purpose)."""
    if isinstance(err, (ArtifactWriteError, FileExistsError)):
        return None
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit
        return None
    if isinstance(err, OSError) and isinstance(err.errno, int):
        code = err.errno
        reason = f"{err.strerror or os.strerror(code)} ({errno_codes.errorcode.get(code, code)})"
        if err.filename and os.fsdecode(err.filename) != path:
            reason += f" at {os.fsdecode(err.filename)}"
        return ArtifactWriteError(path, reason[:400], code, what)
    text = str(getattr(err, "message", "") or err)
    for phrase, code in _TF_ERRNO:  # TensorFlow's and h5py's errors carry the C library's message
        if phrase.lower() in text.lower():
            return ArtifactWriteError(path, f"{os.strerror(code)} ({errno_codes.errorcode[code]})", code, what)
    if isinstance(err, OSError):
        return ArtifactWriteError(path, (" ".join(text.split()) or type(err).__name__)[:400], None, what)
    if _tf_op_error(err):
        text = re.sub(r"\{\{[^}]*\}\}", "", text)  # TensorFlow's node names and op tags
        text = re.sub(r"\[Op:[^\]]*\]", "", text)
        line = next((x.strip() for x in text.splitlines() if x.strip()), "")
        return ArtifactWriteError(path, f"{type(err).__name__}: {line}"[:400], None, what)
    return None


@contextlib.contextmanager
def writing(path: str, what: str = ""):
    """Turns an I/O failure inside the block into :class:`ArtifactWriteError` naming ``path`` (see
    :func:`write_error`); anything else passes through unchanged."""
    try:
        yield
    except BaseException as err:
        translated = write_error(path, err, what)
        if translated is None:
            raise
        raise translated from err


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (briefly visible to other threads)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def plain_file_mode(executable: bool = False) -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0666 & ~umask`` (``0777`` for executables)."""
    return (0o777 if executable else 0o666) & ~current_umask()


def plain_directory_mode() -> int:
    """The mode a plain ``os.mkdir(path)`` gives a new folder: ``0777 & ~umask``."""
    return 0o777 & ~current_umask()


def give_plain_modes(root: str) -> None:
    """Sets every folder under ``root`` (itself included) to :func:`plain_directory_mode` and every file
    to :func:`plain_file_mode` (executable when its writer made it so). Symbolic links are left alone."""
    mask = current_umask()
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o777 & ~mask)
        for name in files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, (0o777 if st.st_mode & 0o111 else 0o666) & ~mask)


def _new_temporary(directory: str, tag: str, suffix: str, folder: bool) -> str:
    """Creates a new temporary file or folder in ``directory`` with the modes a plain write gives
    (the kernel applies the umask, and a default ACL where the folder has one)."""
    for _ in range(100):
        path = os.path.join(directory, f"{temporary_prefix(tag)}{secrets.token_hex(6)}{suffix}")
        try:
            if folder:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno_codes.EEXIST, "no free temporary name", directory)


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
    with writing(path):
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(directory)
        tmp = _new_temporary(directory, "", suffix, folder=False)
    try:
        with writing(path):
            yield tmp
            os.chmod(tmp, plain_file_mode())  # as a plain write: a writer may have replaced the file
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(OSError):
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
    with writing(final_path):
        os.makedirs(parent, exist_ok=True)
        remove_stale_temporaries(parent)
        tmp = _new_temporary(parent, os.path.basename(final_path), "", folder=True)
    try:
        with writing(final_path):
            yield tmp
            give_plain_modes(tmp)  # what a plain write gives: readable by a server running as another user
            if os.path.exists(final_path):
                raise FileExistsError(f"{final_path} already exists; versions are never overwritten")
            os.rename(tmp, final_path)
            _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["TMP_PREFIX", "atomic_file", "atomic_directory", "write_bytes_atomic", "write_json_atomic",
           "remove_stale_temporaries", "pid_alive", "temporary_prefix", "host_tag", "ArtifactWriteError",
           "write_error", "writing", "current_umask", "plain_file_mode", "plain_directory_mode", "give_plain_modes"]
