"""TensorFlow's C++ start-up logs, quieted for the ``tfmec`` command (standard library only).

``import tensorflow`` prints C++ log lines before any Python code of tfmec can choose otherwise: absl's
``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``, then
``I0000 ... port.cc:153] oneDNN custom operations are on ...``, ``cudart_stub.cc ... Could not find cuda
drivers``, ``cpu_feature_guard.cc ...`` (some of them once per TensorFlow shared library), and at the
first operation ``E0000 ... failed call to cuInit`` on a machine without a GPU. None of it concerns the
user of ``tfmec run``. TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it loads, and in TensorFlow
2.21 the lines written through absl before ``absl::InitializeLog()`` ignore it; so both must be handled
before tensorflow is imported, which for the command is when the ``tfmec`` package is imported (its
``__init__`` imports tensorflow, and ``tfmec.cli`` is inside the package).

:func:`quiet_tensorflow_import` wraps that first import in ``tfmec/__init__.py``. When this process is
the ``tfmec`` command (the console script, or ``python -m tfmec.cli``) without ``--verbose``, it sets
``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it: theirs is kept) and holds back, while tensorflow
loads, the C++ log lines below that level and absl's banner; anything else written to stderr meanwhile
(a Python warning, a fatal ``F`` line) is passed on. In any other process (a user's script, pytest) it
does nothing: a library does not change TensorFlow's logging. ``TF_ENABLE_ONEDNN_OPTS`` is never
touched (it changes numerics).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

QUIET_LEVEL = "3"
"""``TF_CPP_MIN_LOG_LEVEL`` of the quiet command: 0 shows I, W, E, F lines, 1 drops I, 2 drops W, 3 drops E."""

# "I0000 00:00:1796311723.429308   13686 port.cc:153] ..." (absl / TensorFlow C++ log line)
_LOG_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]*\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# continuation lines of a held-back log line (cpu_feature_guard writes its message over two lines)
_CONTINUATIONS = ("To enable the following instructions:",)


def command_args(argv=None, orig_argv=None) -> list | None:
    """The arguments after ``tfmec`` when this process runs the ``tfmec`` command (the console script
    ``tfmec ARGS`` or ``python [OPTIONS] -m tfmec.cli ARGS``), else ``None``."""
    argv = list(sys.argv if argv is None else argv)
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    i = 1  # the interpreter's options, up to the script or -m MODULE
    while i < len(orig):
        arg = orig[i]
        if arg in ("-X", "-W"):  # options with a separate value
            i += 2
            continue
        if arg == "-m":
            return orig[i + 2:] if orig[i + 1:i + 2] == ["tfmec.cli"] else None
        if arg.startswith("-m"):  # -mtfmec.cli
            return orig[i + 1:] if arg == "-mtfmec.cli" else None
        if arg.startswith("-c") or arg in ("-", "--") or not arg.startswith("-"):
            break
        i += 1
    name = os.path.basename(argv[0]) if argv else ""
    if name in ("tfmec", "tfmec.exe", "tfmec-script.py"):
        return argv[1:]
    return None


def filter_startup_lines(text: str, min_level: int) -> str:
    """``text`` without the C++ log lines below ``min_level`` (``TF_CPP_MIN_LOG_LEVEL``: 1 drops ``I``
    lines, 2 also ``W``, 3 also ``E``; ``F`` lines always stay), their known continuation lines, and
    absl's banner (when ``min_level`` > 0); every other line is kept as it is."""
    if min_level <= 0:
        return text
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        match = _LOG_LINE.match(stripped)
        if match:
            dropping = _SEVERITY[match["severity"]] < min_level
        elif stripped == _ABSL_BANNER:
            dropping = True
        elif not (dropping and stripped.startswith(_CONTINUATIONS)):
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


def _min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def quiet_tensorflow_import():
    """Around the first ``import tensorflow`` of the ``tfmec`` command: ``TF_CPP_MIN_LOG_LEVEL=3``
    unless set, and the C++ start-up lines below that level held back (see the module's docstring).
    Does nothing with ``--verbose``, outside the command, or when tensorflow is already loaded."""
    args = command_args()
    if args is None or "--verbose" in args or "tensorflow" in sys.modules:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    level = _min_level()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (an embedding host): the level alone
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = filter_startup_lines(held.read().decode("utf-8", errors="replace"), level)
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


__all__ = ["quiet_tensorflow_import", "command_args", "filter_startup_lines", "QUIET_LEVEL"]
