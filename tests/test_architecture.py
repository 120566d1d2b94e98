"""The import rules of docs/architecture.md, checked on the source (``ast`` only: no TensorFlow import).

Every ``.py`` file under ``tfmec/`` is parsed; each ``import`` / ``from ... import`` naming a tfmec module
(at module level, in a class body or inside a function; relative imports resolved) is an edge from the
importing module to the imported one. A *unit* is a top-level module or subpackage of tfmec
(``tfmec.layers``, ``tfmec.training``); the package's own ``__init__.py`` is the unit ``tfmec``.

The checks:

* every unit has a level in :data:`LEVELS`, and ``docs/architecture.md`` lists the same levels;
* no import goes to a unit of a higher level ("a module may import only modules at its own level or
  below");
* no cycle between units, counting every import (a function's imports too);
* no load-time cycle between two modules: imports that run when a module is first imported
  (module level and class bodies, not function bodies nor ``if TYPE_CHECKING:`` blocks);
* the rules DESIGN.md states in words, checked by name; and only :mod:`tfmec.backend` imports Keras.

Imports inside functions are left out of the module-level cycle check only: they run when the function
is called, after every module it could reach has finished loading, so they cannot meet a half-loaded
module. They still count for the levels and for the unit cycles, because they are still knowledge of
the imported code.
"""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "tfmec"
DOC = REPO_ROOT / "docs" / "architecture.md"
THIS = "tests/test_architecture.py"

#: The levels, lowest first: ``(name, units)``. A module may import only modules at its own level or
#: below. docs/architecture.md lists the same table (checked by :func:`test_doc_lists_the_same_levels`).
LEVELS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("tfmec._tf_logs", "tfmec.api_export", "tfmec.atomic", "tfmec.backend", "tfmec.distribute",
                    "tfmec.optimizers", "tfmec.outlock", "tfmec.validation")),
    ("data", ("tfmec.data",)),
    ("building blocks", ("tfmec.graph", "tfmec.layers")),
    ("models and measurement", ("tfmec.evaluation", "tfmec.models", "tfmec.towers")),
    ("training", ("tfmec.callbacks", "tfmec.resume", "tfmec.training")),
    ("methods", ("tfmec.afm", "tfmec.baselines", "tfmec.mec")),
    ("artifacts and adapters", ("tfmec.export", "tfmec.integrations", "tfmec.io", "tfmec.report")),
    ("experiment", ("tfmec.experiment", "tfmec.settings")),
    ("tuning", ("tfmec.tuning",)),
    ("entry points", ("tfmec", "tfmec.api_doc", "tfmec.cli", "tfmec.testing")),
]

#: The rules DESIGN.md section 2 states in words: ``(importer unit, imported unit)`` pairs that must
#: never occur. The levels imply them; they are listed so that a change of levels cannot drop them.
FORBIDDEN = [
    ("tfmec.layers", "tfmec.mec"),  # layers know nothing of mec
    ("tfmec.mec", "tfmec.cli"),  # mec and afm never import cli
    ("tfmec.afm", "tfmec.cli"),
    ("tfmec.data", "tfmec.models"),  # data knows nothing of models
    ("tfmec.data", "tfmec.layers"),
]

#: Third-party Keras packages: only tfmec.backend imports them (DESIGN.md 2.1).
KERAS_PACKAGES = ("keras", "tf_keras")


@dataclasses.dataclass(frozen=True)
class Import:
    """One import of a tfmec module: who imports what, where, and whether it runs at load time."""

    source: str  # the importing module, e.g. "tfmec.layers.fm"
    target: str  # the imported module, e.g. "tfmec.backend" (a submodule when ``from pkg import submodule``)
    path: pathlib.Path
    line: int
    at_load: bool  # module level or class body (not a function body, not ``if TYPE_CHECKING:``)

    def where(self) -> str:
        """``tfmec/x.py:12`` for failure messages."""
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def module_name(path: pathlib.Path) -> str:
    """The dotted module name of a file under tfmec/ (``tfmec/layers/__init__.py`` -> ``tfmec.layers``)."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The unit of a module: ``tfmec`` itself, or ``tfmec.<first component>``."""
    return ".".join(module.split(".")[:2])


def source_files() -> list[pathlib.Path]:
    """Every ``.py`` file of the tfmec package, sorted."""
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def is_type_checking(test: ast.expr) -> bool:
    """True for the condition ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST):
    """Yields ``(node, at_load)`` for every Import / ImportFrom node of a module's tree.

    ``at_load`` is False inside a function body (it runs when called) and in the body of an
    ``if TYPE_CHECKING:`` block (it never runs).
    """
    def visit(node, at_load):
        """Walks ``node``'s children, tracking whether they run at load time."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, at_load
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), at_load)
            else:
                yield from visit(child, at_load)

    yield from visit(tree, True)


def resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module named by a ``from X import ...`` (relative levels resolved)."""
    if not node.level:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan() -> tuple[set[str], list[Import]]:
    """All tfmec modules, and every import of a tfmec module made by one of them."""
    files = source_files()
    modules = {module_name(p): p for p in files}
    imports = []
    for path in files:
        source = module_name(path)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, at_load in import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = resolve_from(source, is_package, node)
                # ``from pkg import name``: the submodule pkg.name when there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in dict.fromkeys(targets):
                if target == "tfmec" or target.startswith("tfmec."):
                    imports.append(Import(source, target, path, node.lineno, at_load))
    return set(modules), imports


MODULES, IMPORTS = scan()
LEVEL_OF = {unit: i for i, (_, units) in enumerate(LEVELS) for unit in units}
LEVEL_NAMES = [name for name, _ in LEVELS]


def describe(unit: str) -> str:
    """``tfmec.mec (level 6, methods)``."""
    level = LEVEL_OF[unit]
    return f"{unit} (level {level + 1}, {LEVEL_NAMES[level]})"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as ``[a, b, ..., a]``, or None (iterative DFS, nodes sorted)."""
    state: dict[str, int] = {}  # 1: on the DFS path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(graph.get(root, ())))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every node reachable from ``start`` (``start`` included)."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node: every tangle, not just the first."""
    reverse: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            reverse.setdefault(b, set()).add(a)
    cycles, done = [], set()
    for node in sorted(graph):
        if node in done:
            continue
        component = reachable(graph, node) & reachable(reverse, node)
        done |= component
        if len(component) > 1:
            cycles.append(find_cycle({a: graph.get(a, set()) & component for a in component}))
    return cycles


def cycle_report(cycle: list[str], edges: dict[tuple[str, str], list[Import]]) -> str:
    """Each edge of a cycle with the import lines that make it."""
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        sites = ", ".join(f"{imp.where()} imports {imp.target}" for imp in edges[(a, b)])
        lines.append(f"  {a} -> {b}: {sites}")
    return "\n".join(lines)


def test_scan_sees_the_package():
    """The scan found the package and its imports (guards the other checks against a vacuous pass)."""
    assert "tfmec.backend" in MODULES and "tfmec.layers.fm" in MODULES, sorted(MODULES)[:10]
    assert any(i.source == "tfmec.layers.fm" and i.target == "tfmec.backend" for i in IMPORTS)


def test_every_unit_has_one_level():
    """Each unit of tfmec is in exactly one level of LEVELS, and LEVELS names no unit that is gone."""
    listed = [u for _, units in LEVELS for u in units]
    twice = sorted({u for u in listed if listed.count(u) > 1})
    assert not twice, f"units listed at more than one level of LEVELS in {THIS}: {twice}; keep one"
    units = {unit_of(m) for m in MODULES}
    missing = sorted(units - set(listed))
    assert not missing, (f"units without a level: {missing}. Add each to the level of LEVELS in {THIS} "
                         "whose units it imports (the lowest level that allows its imports), and to the same "
                         "level in docs/architecture.md")
    gone = sorted(set(listed) - units)
    assert not gone, (f"LEVELS in {THIS} lists units that no longer exist under tfmec/: {gone}; remove them "
                      "there and in docs/architecture.md")


def test_no_upward_import():
    """A module imports only modules at its own level or below."""
    bad = [i for i in IMPORTS if LEVEL_OF.get(unit_of(i.target), -1) > LEVEL_OF.get(unit_of(i.source), 99)]
    assert not bad, "imports of a higher level (docs/architecture.md, 'The rules'):\n" + "\n".join(
        f"  {i.where()}: {i.source} imports {i.target}, but {describe(unit_of(i.target))} is above "
        f"{describe(unit_of(i.source))}" for i in bad) + (
        "\nMove the code the import needs down to the importing level (or below), or pass it in as an "
        "argument; change LEVELS only if the unit itself sits at the wrong level.")


def test_no_cycle_between_units():
    """The unit graph (every import, function bodies included) has no cycle."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for i in IMPORTS:
        a, b = unit_of(i.source), unit_of(i.target)
        if a != b:
            edges.setdefault((a, b), []).append(i)
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles = all_cycles(graph)
    assert not cycles, "\n".join(
        "import cycle between units " + " -> ".join(c) + ":\n" + cycle_report(c, edges) for c in cycles) + (
        "\nBreak each: move what the lower unit needs into it (or into a new unit below both), so that the "
        "imports point one way.")


def test_no_load_time_cycle_between_modules():
    """Imports that run at load time form no cycle between two modules of tfmec.

    Importing ``a.b.c`` first loads the packages ``a`` and ``a.b``, so a load-time import is an edge to
    its target and to the target's packages, except the importing module's own packages: those are
    always loaded (or loading) before the module itself, so that edge never changes the order.
    """
    edges: dict[tuple[str, str], list[Import]] = {}
    for i in IMPORTS:
        if not i.at_load:
            continue
        parts = i.target.split(".")
        own_packages = {".".join(i.source.split(".")[:n]) for n in range(1, i.source.count(".") + 1)}
        targets = {i.target} | {".".join(parts[:n]) for n in range(1, len(parts))} - own_packages
        for target in targets:
            if target != i.source and target in MODULES:
                edges.setdefault((i.source, target), []).append(i)
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles = all_cycles(graph)
    assert not cycles, "\n".join(
        "load-time import cycle between modules " + " -> ".join(c) + ":\n" + cycle_report(c, edges)
        for c in cycles) + ("\nBreak each: import from the module that defines the name rather than from its "
                            "package, move the shared code into a module both import, or import inside the "
                            "function that needs it.")


@pytest.mark.parametrize("importer,imported", FORBIDDEN)
def test_design_rules(importer, imported):
    """DESIGN.md's rules in words: layers know nothing of mec, mec and afm never import cli, data knows
    nothing of models."""
    bad = [i for i in IMPORTS if unit_of(i.source) == importer and unit_of(i.target) == imported]
    assert not bad, f"{importer} must not import {imported} (DESIGN.md section 2):\n" + "\n".join(
        f"  {i.where()} imports {i.target}" for i in bad)


def test_only_backend_imports_keras():
    """Every module gets Keras from tfmec.backend (DESIGN.md 2.1)."""
    bad = []
    for path in source_files():
        if module_name(path) == "tfmec.backend":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, _ in import_nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative: inside tfmec
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] in KERAS_PACKAGES for n in names):
                bad.append(f"  {path.relative_to(REPO_ROOT)}:{node.lineno} imports {', '.join(names)}")
    assert not bad, ("only tfmec/backend.py imports Keras; use `from tfmec.backend import keras` instead:\n"
                     + "\n".join(bad))


def doc_levels() -> list[tuple[str, tuple[str, ...]]]:
    """The level list of docs/architecture.md: the numbered items between the ``levels`` markers.

    Each item reads ``N. **name**: `unit`, `unit` -- what the level holds``; the units are the
    backquoted names before the first `` -- `` (an em dash).
    """
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- levels: begin -->(.*?)<!-- levels: end -->", text, re.S)
    assert match, f"{DOC} has no '<!-- levels: begin -->' ... '<!-- levels: end -->' block around its level list"
    out = []
    for line in match.group(1).splitlines():
        item = re.match(r"\s*(\d+)\.\s+\*\*(.+?)\*\*:\s*(.*)", line)
        if item:
            units = re.findall(r"`([^`]+)`", item.group(3).split(" \u2014 ")[0])
            out.append((item.group(2), tuple(sorted(units))))
    return out


def test_doc_lists_the_same_levels():
    """docs/architecture.md's level list is LEVELS: same names, same order, same units."""
    expected = [(name, tuple(sorted(units))) for name, units in LEVELS]
    found = doc_levels()
    diffs = [f"  level {n + 1}: the doc has {d}, LEVELS has {e}"
             for n, (d, e) in enumerate(zip(found + [None] * len(expected), expected + [None] * len(found)))
             if d != e]
    assert not diffs, (f"the level list of {DOC.relative_to(REPO_ROOT)} differs from LEVELS in {THIS}; make them "
                       "the same:\n" + "\n".join(diffs))


def test_doc_folder_map_names_every_module():
    """Every file of tfmec/ has its line in the folder map of docs/architecture.md."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- folder map: begin -->(.*?)<!-- folder map: end -->", text, re.S)
    assert match, f"{DOC} has no '<!-- folder map: begin -->' ... '<!-- folder map: end -->' block"
    listed, stack = set(), []
    for line in match.group(1).splitlines():
        entry = re.match(r"( *)(\S+\.py|\S+/)(\s|$)", line)
        if not entry or entry.group(2) == "tfmec/":
            continue
        depth = len(entry.group(1)) // 2 - 1  # the map indents two spaces per folder below tfmec/
        stack[depth:] = [entry.group(2)]
        listed.add("".join(stack))
        if entry.group(2).endswith("/"):
            listed.add("".join(stack) + "__init__.py")  # a subpackage's line covers its __init__.py
    files = {str(p.relative_to(PACKAGE_DIR)) for p in source_files()}
    missing = sorted(files - listed)
    assert not missing, (f"files of tfmec/ without a line in the folder map of {DOC.relative_to(REPO_ROOT)}: "
                         f"{missing}; add one line each saying the file's one job")
    stale = sorted(f for f in listed - files if f.endswith(".py"))
    assert not stale, f"the folder map of {DOC.relative_to(REPO_ROOT)} lists files that are gone: {stale}"
