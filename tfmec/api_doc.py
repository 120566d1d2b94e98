"""``docs/api.md``: the public API of tfmec, generated from the ``@tfmec_export`` registry.

::

    python -m tfmec.api_doc --write docs/api.md     # after adding, removing or renaming a public name

``tests/test_api.py`` checks that the file is up to date. One section per public package or module, one
row per name: its kind and the summary line of its docstring (a value's ``doc`` from
:func:`~tfmec.api_export.export_value`). It lives apart from :mod:`tfmec.api_export`, which imports
nothing of tfmec, because it must import the whole package to see every declaration.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys

import tfmec
from tfmec import api_export

HEADER = """# The public API of tfmec

Generated from the `@tfmec_export` / `export_value` declarations in the source (`tfmec/api_export.py`) by
`python -m tfmec.api_doc --write docs/api.md`; do not edit it by hand. Each package's `__all__` is
exactly its list here.
"""


#: Public packages that ``import tfmec`` does not import (they need an extra: ``tfmec[tune]``).
OPTIONAL_PACKAGES = ("tfmec.tuning",)


def kind(obj) -> str:
    """``class``, ``function``, ``module`` or ``value``."""
    if inspect.isclass(obj):
        return "class"
    if inspect.ismodule(obj):
        return "module"
    return "function" if inspect.isroutine(obj) else "value"


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = inspect.cleandoc(doc or "").split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    match = re.search(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(\s|$)", text)
    return text[: match.start() + 1] if match else text


def describe(package: str, name: str, obj) -> tuple[str, str]:
    """``(kind, summary)`` of one public name. A class's own docstring only (never a base class's, which
    would differ between Keras 3 and tf-keras)."""
    what = kind(obj)
    if what == "class":
        doc = vars(obj).get("__doc__")
    elif what == "function":
        doc = obj.__doc__
    else:
        doc = api_export.value_doc(f"{package}.{name}") or (obj.__doc__ if what == "module" else "")
    return what, summary(doc)


def render(root=tfmec) -> str:
    """The text of ``docs/api.md``: every public name of ``root`` (imported, so its declarations ran) and
    of the packages below it."""
    import importlib

    for optional in OPTIONAL_PACKAGES:  # not imported by ``import tfmec``: the list must not depend on what ran before
        importlib.import_module(optional)
    lines = [HEADER]
    for package in sorted(api_export.packages()):
        if package != root.__name__ and not package.startswith(root.__name__ + "."):
            continue
        lines += [f"## `{package}`", "", "| name | kind | summary |", "|---|---|---|"]
        for name, obj in sorted(api_export.exported(package).items()):
            what, text = describe(package, name, obj)
            lines.append(f"| `{name}` | {what} | {text.replace('|', '&#124;')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m tfmec.api_doc [--write PATH]``: prints docs/api.md, or writes it to PATH."""
    parser = argparse.ArgumentParser(prog="python -m tfmec.api_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="write the API list to PATH (default: print it)")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
