"""Saving and loading ``.keras`` model files: atomic writes, and a loader that runs nothing it reads.

:func:`save_model` writes the file under a temporary name beside it and renames it into place
(:mod:`tfmec.atomic`), so a process killed mid-save leaves the previous file intact.

:func:`load_model` reads a ``.keras`` archive only after checking its ``config.json`` without
deserialising anything: every object in it must be a Keras built-in or a class tfmec registered
(``"tfmec>Name"``), and nothing may carry Python code. Refused, with :class:`UnsafeModelError` naming
the offending entry:

* a ``Lambda`` layer or a serialised Python lambda (``__lambda__``), whose bytecode Keras would run;
* an object whose ``module`` is outside ``keras`` / ``tf_keras`` / ``tfmec`` (Keras imports that
  module while loading, which runs its code), or a registered name of another package;
* a class the current Keras does not have (an unknown layer);
* archive members other than ``config.json``, ``metadata.json``, the weights file and ``assets/``.

The model is then loaded with Keras's ``safe_mode=True``. tfmec's own artifacts never need anything
else: no pickle, no ``eval``, no lambda layers anywhere in tfmec.
"""
from __future__ import annotations

import json
import os
import zipfile

from tfmec.atomic import atomic_file

ALLOWED_MODULE_ROOTS = ("keras", "tf_keras", "tfmec")
ALLOWED_MEMBERS = ("config.json", "metadata.json", "model.weights.h5", "model.weights.npz")
CODE_CLASS_NAMES = ("Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda")
# Keras public submodules a built-in's ``module`` names ("keras.layers" -> keras.layers)
_PUBLIC_SUBMODULES = ("layers", "initializers", "regularizers", "constraints", "optimizers", "losses", "metrics",
                      "activations", "models", "dtype_policies", "mixed_precision", "saving")


class UnsafeModelError(ValueError):
    """A model file tfmec refuses to load; the message names the file and the offending entry."""


def save_model(model, path: str) -> str:
    """Saves ``model`` as a ``.keras`` file at ``path`` atomically and returns ``path``.

    The file is written under a temporary name in the same folder and renamed onto ``path`` once
    complete: a reader (or a process killed mid-save) sees the earlier file or the new one, never
    a partial archive.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"the model file must end in .keras, got {path!r}")
    with atomic_file(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def _module_allowed(module: str | None) -> bool:
    if module is None:
        return True
    root = module.split(".", 1)[0]
    return root in ALLOWED_MODULE_ROOTS


def _known_builtin(keras, module: str, class_name: str) -> bool:
    """False when ``module`` names a public Keras submodule that has no ``class_name``."""
    parts = module.split(".")
    if parts[0] not in ("keras", "tf_keras"):
        return True
    if len(parts) == 1:
        return hasattr(keras, class_name) or hasattr(keras.layers, class_name)
    if parts[1] in _PUBLIC_SUBMODULES and len(parts) == 2:
        sub = getattr(keras, parts[1], None)
        return sub is None or hasattr(sub, class_name)
    return True  # an internal module (keras.src....): Keras resolves it itself


def _object_name(obj: dict) -> str:
    config = obj.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return f"{obj.get('class_name')!r}" + (f" (named {name!r})" if isinstance(name, str) else "")


def config_problems(config, keras=None) -> list[str]:
    """The reasons to refuse a ``.keras`` ``config.json`` (an already parsed JSON value); [] when safe.

    Walks every nested object with a ``class_name``; see the module docstring for the rules.
    """
    if keras is None:
        from tfmec.backend import keras
    import tfmec.layers  # noqa: F401  (registers tfmec's classes)
    import tfmec.mec  # noqa: F401
    import tfmec.models  # noqa: F401
    import tfmec.optimizers  # noqa: F401

    problems: list[str] = []

    def walk(obj, where):
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(obj, dict):
            return
        class_name = obj.get("class_name")
        if isinstance(class_name, str):
            module = obj.get("module")
            registered = obj.get("registered_name")
            what = _object_name(obj)
            at = where or "the model"
            if class_name in CODE_CLASS_NAMES or (class_name == "function" and module == "builtins"):
                problems.append(f"{at}: {what} is a Lambda / Python function whose code would run on load")
            elif not isinstance(module, (str, type(None))) or not _module_allowed(module):
                problems.append(f"{at}: {what} comes from module {module!r}, which is neither Keras nor "
                                f"tfmec (loading it would import and run that module)")
            elif isinstance(registered, str) and ">" in registered:
                package = registered.split(">", 1)[0]
                if package != "tfmec":
                    problems.append(f"{at}: {what} is registered by package {package!r}, not by Keras or tfmec")
                elif keras.saving.get_registered_object(registered) is None:
                    problems.append(f"{at}: unknown tfmec class {registered!r} (not in this version of tfmec)")
            elif module is None and not (class_name.startswith("__") or hasattr(keras.layers, class_name)
                                         or keras.saving.get_registered_object(class_name) is not None):
                problems.append(f"{at}: unknown layer or object {what}")
            elif module is not None and not _known_builtin(keras, module, class_name):
                problems.append(f"{at}: unknown layer or object {what}: module {module!r} has no such class")
        for key, value in obj.items():
            if isinstance(value, (dict, list)):
                walk(value, f"{where}.{key}" if where else key)

    walk(config, "")
    return problems


def check_keras_file(path: str) -> dict:
    """Checks a ``.keras`` archive without deserialising it; returns its parsed ``config.json``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeModelError: not a ``.keras`` archive, an unexpected member, unreadable config, or any
            problem :func:`config_problems` finds (all of them are listed).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise UnsafeModelError(f"{path} is a folder, not a .keras file (a SavedModel loads with "
                               "tfmec.export.load_signature)")
    if not zipfile.is_zipfile(path):
        raise UnsafeModelError(f"{path} is not a .keras archive (not a zip file; truncated or another format)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            unexpected = [n for n in names if n not in ALLOWED_MEMBERS and not n.startswith("assets/")]
            if unexpected:
                raise UnsafeModelError(f"{path}: unexpected files in the archive {unexpected}; a .keras file holds "
                                       f"only {list(ALLOWED_MEMBERS)} and assets/")
            if "config.json" not in names:
                raise UnsafeModelError(f"{path}: the archive has no config.json")
            raw = archive.read("config.json")
    except zipfile.BadZipFile as err:
        raise UnsafeModelError(f"{path}: damaged .keras archive ({err})") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnsafeModelError(f"{path}: config.json is not valid JSON ({err})") from None
    problems = config_problems(config)
    if problems:
        listed = "\n  ".join(problems)
        raise UnsafeModelError(f"refusing to load {path}: it holds objects tfmec does not trust:\n  {listed}")
    return config


def load_model(path: str, *, compile: bool = True, custom_objects: dict | None = None):
    """Loads a ``.keras`` model file after :func:`check_keras_file`, with ``safe_mode=True``.

    Args:
        path: the ``.keras`` file (tfmec's ``DIR/<method>/model.keras``, or any Keras model made of
            Keras built-ins and tfmec layers).
        compile: restore the training configuration too (as ``keras.models.load_model``).
        custom_objects: extra classes the caller vouches for; their names are still checked against
            the rules above unless they are registered under the ``tfmec>`` package.
    Returns:
        the Keras model (Keras 3 or tf-keras, as :mod:`tfmec.backend` selects).
    Raises:
        UnsafeModelError: the file is refused (see the module docstring) or Keras cannot rebuild it.
    """
    from tfmec.backend import keras

    check_keras_file(path)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True, custom_objects=custom_objects)
    except (TypeError, ValueError, KeyError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeModelError(f"{path}: Keras could not rebuild the model ({type(err).__name__}: {message})") from None


__all__ = ["save_model", "load_model", "check_keras_file", "config_problems", "UnsafeModelError",
           "ALLOWED_MODULE_ROOTS"]
