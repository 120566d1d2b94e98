"""The public API of tfmec, declared where each name is defined (standard library only).

A public class or function says where users import it from, at its definition::

    @tfmec_export("tfmec.layers.QuantizedEmbedding")
    class QuantizedEmbedding(...): ...

    @tfmec_export("tfmec.layers.dense_params", "tfmec.afm.dense_params")   # public in two packages
    def dense_params(...): ...

    MODELS = export_value("tfmec.models.MODELS", {...}, doc="model name -> builder")

and each package's ``__init__.py`` imports the modules that hold those definitions and builds its
``__all__`` from what they registered::

    from tfmec.layers import attention, cross, fm   # their decorators register tfmec.layers.* names
    __all__ = public_names(globals(), attention, cross, fm)

So a public name is written once, beside its code, and the package's namespace, its ``__all__`` and
``docs/api.md`` (``python -m tfmec.api_doc --write docs/api.md``) all follow from the registry here.
"""
from __future__ import annotations

import inspect
import types

_MISSING = object()

#: ``{package: {name: object}}``: every public name, by the package it is imported from.
_REGISTRY: dict[str, dict[str, object]] = {}
#: ``{path: doc}``: the one-line description of each value registered with :func:`export_value`.
_VALUE_DOCS: dict[str, str] = {}
#: Packages whose ``__all__`` :func:`public_names` has built: a new name for them would be missing there.
_SEALED: set[str] = set()


class ExportError(ValueError):
    """A public path that cannot be registered: malformed, outside ``tfmec``, taken by another object, or
    added to a package after its ``__all__`` was built."""


def split_path(path: str) -> tuple[str, str]:
    """``"tfmec.layers.QuantizedEmbedding"`` -> ``("tfmec.layers", "QuantizedEmbedding")``; raises
    :class:`ExportError` unless the package is ``tfmec`` or below it and every part is an identifier."""
    package, _, name = path.rpartition(".") if isinstance(path, str) else ("", "", "")
    if not package or not all(part.isidentifier() for part in path.split(".")):
        raise ExportError(f"a public path is 'tfmec.<package>.<name>' made of identifiers; got {path!r}")
    if package.split(".")[0] != "tfmec":
        raise ExportError(f"public path {path!r}: its package {package!r} is not tfmec or a package of tfmec")
    return package, name


def _same_definition(a, b) -> bool:
    """True when ``b`` is ``a`` defined again (the module was reloaded): same module, same qualified name."""
    key = lambda obj: (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))  # noqa: E731
    return key(a)[1] is not None and key(a) == key(b)


def _register(path: str, obj) -> None:
    package, name = split_path(path)
    names = _REGISTRY.setdefault(package, {})
    old = names.get(name, _MISSING)
    if old is _MISSING and package in _SEALED:
        raise ExportError(f"{path} is registered after {package}'s __all__ was built; import the module that "
                          f"defines it in {package}'s __init__.py (before public_names)")
    if old is not _MISSING and old is not obj and not _same_definition(old, obj):
        raise ExportError(f"public path {path} is registered twice: for {old!r} and for {obj!r}")
    names[name] = obj


def tfmec_export(*paths: str):
    """Decorator: the class or function is public under each of ``paths`` (``"tfmec.<package>.<name>"``;
    several when one object is imported from two packages). Returns the object unchanged, with
    ``obj._tfmec_api = paths`` (read it with :func:`api_paths`)."""
    if not paths:
        raise ExportError("tfmec_export needs at least one public path")
    for path in paths:
        split_path(path)

    def decorate(obj):
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            raise ExportError(f"tfmec_export decorates classes and functions; use export_value for {obj!r}")
        for path in paths:
            _register(path, obj)
        obj._tfmec_api = tuple(paths)
        return obj

    return decorate


def export_value(path: str, value, doc: str = ""):
    """Makes ``value`` (a constant, or a module) public under ``path``, described in ``docs/api.md`` by
    ``doc`` (a module's own docstring when ``doc`` is empty); returns ``value``."""
    _register(path, value)
    _VALUE_DOCS[path] = doc
    return value


def api_paths(obj) -> tuple[str, ...]:
    """The public paths :func:`tfmec_export` gave ``obj`` itself (a subclass does not inherit them)."""
    return tuple(vars(obj).get("_tfmec_api", ())) if hasattr(obj, "__dict__") else ()


def value_doc(path: str) -> str:
    """The ``doc`` that :func:`export_value` registered ``path`` with ("" for a decorated object)."""
    return _VALUE_DOCS.get(path, "")


def packages() -> list[str]:
    """Every package with a registered public name, sorted."""
    return sorted(_REGISTRY)


def exported(package: str) -> dict:
    """``{name: object}`` of every public name registered for ``package`` (a copy; empty if none)."""
    return dict(_REGISTRY.get(package, {}))


def public_names(namespace: dict, *modules: types.ModuleType) -> list[str]:
    """Binds every public name of the package ``namespace["__name__"]`` into ``namespace`` and returns
    them sorted: a package's ``__init__.py`` ends with ``__all__ = public_names(globals(), sub1, sub2)``.

    ``modules`` are the modules the package imports only so that their decorators run; naming them here
    says so (and keeps linters from calling those imports unused). Once this ran, a name registered for
    the package later raises :class:`ExportError` (it would be missing from ``__all__``). A registered
    name may replace a submodule of the same name in the namespace (``tfmec.afm.compress``, the function,
    as before), never another object.
    """
    package = namespace["__name__"]
    for module in modules:
        if not isinstance(module, types.ModuleType):
            raise TypeError(f"public_names({package}): {module!r} is not a module")
    names = _REGISTRY.get(package, {})
    for name, obj in names.items():
        bound = namespace.get(name, _MISSING)
        if bound is not _MISSING and bound is not obj and not isinstance(bound, types.ModuleType):
            raise ExportError(f"{package}.{name} is public as {obj!r}, but {package} already binds that name "
                              f"to {bound!r}")
        namespace[name] = obj
    _SEALED.add(package)
    return sorted(names)


__all__ = ["ExportError", "api_paths", "export_value", "exported", "packages", "public_names", "split_path",
           "tfmec_export", "value_doc"]
