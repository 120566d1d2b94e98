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

Every member is bounded by tfmec's own checks before Keras reads it (:class:`LoadLimits`), from the
sizes the archive declares and without trusting them: ``config.json`` is read through a stream that
stops at its bound (at most 32 MiB and 2,000,000 JSON values, nested at most 200 deep), ``metadata.json``
at most 1 MiB, all of ``assets/`` together at most 64 MiB, at most 10,000 members (checked from the
end-of-archive record before the member list is read), no member expanding more than 100 times its
compressed size (above 1 MiB), and the HDF5 weights file may declare at most 100 times its own size in
arrays and must not point outside itself (external storage, external or soft links, virtual datasets).
The path must be a regular file (a FIFO or a device is refused before it is opened).

The model is then loaded with Keras's ``safe_mode=True``. tfmec's own artifacts never need anything
else: no pickle, no ``eval``, no lambda layers anywhere in tfmec.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
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


@dataclasses.dataclass(frozen=True)
class LoadLimits:
    """The bounds :func:`check_keras_file` enforces on a ``.keras`` archive (see the module docstring).

    The defaults leave room for any model tfmec or Keras writes (Keras stores members uncompressed, so
    their expansion is 1; a lookup layer's vocabulary of a million strings takes ~20 MB of config or
    assets) while bounding what one file can make the loader read to a few hundred MB beyond the
    weights themselves."""

    max_config_bytes: int = 32 << 20
    max_config_values: int = 2_000_000
    max_config_depth: int = 200
    max_metadata_bytes: int = 1 << 20
    max_asset_bytes: int = 64 << 20
    max_members: int = 10_000
    max_expansion: float = 100.0
    expansion_floor: int = 1 << 20
    max_weight_objects: int = 100_000
    max_compressed_weights: int = 256 << 20


DEFAULT_LIMITS = LoadLimits()
WEIGHT_MEMBERS = ("model.weights.h5", "model.weights.npz")
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _entries_declared(path: str) -> int | None:
    """The member count the end-of-archive record declares (read before ``ZipFile`` parses the member
    list, whose size it bounds); None when the record cannot be found."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return None
    try:
        with open(path, "rb") as fh:
            record = end_record(fh)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return None if not record else int(record[4])  # _ECD_ENTRIES_TOTAL


def _member_problems(infos: list, limits: LoadLimits) -> list[str]:
    """Names, count, compression and declared sizes of the archive's members."""
    problems = []
    names = [i.filename for i in infos]
    if len(infos) > limits.max_members:
        return [f"{len(infos):,} members (at most {limits.max_members:,})"]
    seen, twice = set(), []
    for n in names:
        if n in seen and n not in twice:
            twice.append(n)
        seen.add(n)
    if twice:
        problems.append(f"members stored twice {twice[:5]} (a checker and a loader could read different copies)")
    assets = 0
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or ":" in parts[0]:
            problems.append(f"member {name!r} has an absolute or escaping path")
            continue
        if info.flag_bits & 0x1:
            problems.append(f"member {name!r} is encrypted")
            continue
        if info.compress_type not in _COMPRESSIONS:
            problems.append(f"member {name!r} uses an unsupported compression (method {info.compress_type})")
            continue
        expands = info.file_size > limits.max_expansion * max(1, info.compress_size)
        if info.file_size > limits.expansion_floor and expands:
            problems.append(f"member {name!r} expands from {_mib(info.compress_size)} to {_mib(info.file_size)} "
                            f"(more than {limits.max_expansion:g} times: a decompression bomb)")
        if name == "config.json" and info.file_size > limits.max_config_bytes:
            problems.append(f"config.json holds {_mib(info.file_size)} (at most {_mib(limits.max_config_bytes)})")
        elif name == "metadata.json" and info.file_size > limits.max_metadata_bytes:
            problems.append(f"metadata.json holds {_mib(info.file_size)} (at most {_mib(limits.max_metadata_bytes)})")
        elif name.startswith("assets/"):
            assets += info.file_size
    if assets > limits.max_asset_bytes:
        problems.append(f"assets/ holds {_mib(assets)} in all (at most {_mib(limits.max_asset_bytes)})")
    return problems


def _read_bounded(archive: zipfile.ZipFile, info, limit: int) -> bytes:
    """A member's bytes, reading at most ``limit + 1`` whatever its header declares."""
    with archive.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeModelError(f"{info.filename} holds more than {_mib(limit)}")
    return data


def _json_problems(raw: bytes, limits: LoadLimits) -> str | None:
    """A reason to refuse ``config.json``'s text before parsing it (the number of values it may create)."""
    values = raw.count(b",") + raw.count(b"[") + raw.count(b"{") + raw.count(b":") + 1
    if values > limits.max_config_values:
        return f"config.json holds up to {values:,} JSON values (at most {limits.max_config_values:,})"
    return None


def _depth(value, limit: int) -> bool:
    """True when ``value`` nests at most ``limit`` containers deep (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _weights_problems(archive: zipfile.ZipFile, info, limits: LoadLimits) -> list[str]:
    """What the weights file declares: arrays of at most ``max_expansion`` times its own size, and nothing
    read from outside it (HDF5 external storage, external or soft links, virtual datasets)."""
    budget = limits.max_expansion * max(1, info.file_size) + limits.expansion_floor
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > limits.max_compressed_weights:
        return [f"{info.filename} is compressed and holds {_mib(info.file_size)} (Keras stores weights "
                f"uncompressed; at most {_mib(limits.max_compressed_weights)} compressed)"]
    if info.filename.endswith(".npz"):
        try:
            with archive.open(info) as member:
                source = member if info.compress_type == zipfile.ZIP_STORED else io.BytesIO(
                    _read_bounded(archive, info, info.file_size))
                with zipfile.ZipFile(source) as inner:
                    inner_infos = inner.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            return [f"{info.filename} is not a readable .npz ({err})"]
        total = sum(i.file_size for i in inner_infos)
        if len(inner_infos) > limits.max_weight_objects or total > budget:
            return [f"{info.filename} declares {len(inner_infos):,} arrays of {_mib(total)} in a "
                    f"{_mib(info.file_size)} file (at most {limits.max_expansion:g} times its size)"]
        return []
    try:
        import h5py
    except ImportError:  # pragma: no cover - Keras depends on h5py
        return []
    problems: list[str] = []
    try:
        with archive.open(info) as member:
            source = member if info.compress_type == zipfile.ZIP_STORED else io.BytesIO(
                _read_bounded(archive, info, info.file_size))
            with h5py.File(source, "r") as h5:
                stack, objects, total = [(h5, "")], 0, 0
                while stack and not problems:
                    group, where = stack.pop()
                    for name in group:
                        objects += 1
                        at = f"{where}/{name}"
                        if objects > limits.max_weight_objects:
                            problems.append(f"{info.filename} holds more than {limits.max_weight_objects:,} objects")
                            break
                        link = group.get(name, getlink=True)
                        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                            problems.append(f"{info.filename}: {at} is a link ({type(link).__name__}); weights "
                                            "must be stored inside the file")
                            break
                        obj = group[name]
                        if isinstance(obj, h5py.Group):
                            stack.append((obj, at))
                        elif isinstance(obj, h5py.Dataset):
                            if obj.external or obj.is_virtual:
                                problems.append(f"{info.filename}: dataset {at} reads its data from outside the "
                                                "file (external storage or a virtual dataset)")
                                break
                            total += int(obj.size or 0) * int(obj.dtype.itemsize)
                            if total > budget:
                                problems.append(f"{info.filename} declares more than {_mib(int(budget))} of arrays "
                                                f"in a {_mib(info.file_size)} file (at most "
                                                f"{limits.max_expansion:g} times its size)")
                                break
    except UnsafeModelError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises many kinds for damaged files
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        problems.append(f"{info.filename} is not a readable HDF5 weights file ({type(err).__name__}: {line[:200]})")
    return problems


def check_keras_file(path: str, limits: LoadLimits | None = None) -> dict:
    """Checks a ``.keras`` archive without deserialising it; returns its parsed ``config.json``.

    ``limits``: the bounds on what the archive may make the loader read (:class:`LoadLimits`; default
    :data:`DEFAULT_LIMITS`).

    Raises:
        FileNotFoundError: no such file.
        UnsafeModelError: not a regular file or not a ``.keras`` archive, an unexpected, oversized or
            escaping member, unreadable config, or any problem :func:`config_problems` finds (all of
            them are listed).
    """
    limits = limits or DEFAULT_LIMITS
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    except OSError as err:
        raise UnsafeModelError(f"{path}: cannot read the model file ({err.strerror or err})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnsafeModelError(f"{path} is a folder, not a .keras file (a SavedModel loads with "
                               "tfmec.export.load_signature)")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeModelError(f"{path} is not a regular file (a FIFO, device or socket); a .keras model is a file")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise UnsafeModelError(f"{path}: cannot read the model file ({err.strerror or err})") from None
    if not is_zip:
        raise UnsafeModelError(f"{path} is not a .keras archive (not a zip file; truncated or another format)")
    declared = _entries_declared(path)
    if declared is not None and declared > limits.max_members:
        raise UnsafeModelError(f"refusing to load {path}: the archive declares {declared:,} members (at most "
                               f"{limits.max_members:,})")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            unexpected = [n for n in dict.fromkeys(names) if n not in ALLOWED_MEMBERS and not n.startswith("assets/")]
            if unexpected:
                raise UnsafeModelError(f"{path}: unexpected files in the archive {unexpected[:20]}; a .keras file "
                                       f"holds only {list(ALLOWED_MEMBERS)} and assets/")
            if "config.json" not in names:
                raise UnsafeModelError(f"{path}: the archive has no config.json")
            problems = _member_problems(infos, limits)
            if not problems:
                for info in infos:
                    if info.filename in WEIGHT_MEMBERS:
                        problems += _weights_problems(archive, info, limits)
            if problems:
                listed = "\n  ".join(problems)
                raise UnsafeModelError(f"refusing to load {path}: the archive exceeds tfmec's bounds:\n  {listed}")
            raw = _read_bounded(archive, archive.getinfo("config.json"), limits.max_config_bytes)
    except UnsafeModelError as err:
        text = str(err)
        raise UnsafeModelError(text if path in text else f"refusing to load {path}: {text}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError, ValueError,
            OSError) as err:  # damaged members (CRC, truncation), unsupported features
        raise UnsafeModelError(f"{path}: damaged .keras archive ({type(err).__name__}: {err})") from None
    reason = _json_problems(raw, limits)
    if reason:
        raise UnsafeModelError(f"refusing to load {path}: {reason}")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnsafeModelError(f"{path}: config.json is not valid JSON ({err})") from None
    except RecursionError:
        raise UnsafeModelError(f"refusing to load {path}: config.json nests deeper than Python can parse") from None
    if not _depth(config, limits.max_config_depth):
        raise UnsafeModelError(f"refusing to load {path}: config.json nests more than {limits.max_config_depth} "
                               "levels deep")
    problems = config_problems(config)
    if problems:
        listed = "\n  ".join(problems)
        raise UnsafeModelError(f"refusing to load {path}: it holds objects tfmec does not trust:\n  {listed}")
    return config


def load_model(path: str, *, compile: bool = True, custom_objects: dict | None = None,
               limits: LoadLimits | None = None):
    """Loads a ``.keras`` model file after :func:`check_keras_file`, with ``safe_mode=True``.

    Args:
        path: the ``.keras`` file (tfmec's ``DIR/<method>/model.keras``, or any Keras model made of
            Keras built-ins and tfmec layers).
        compile: restore the training configuration too (as ``keras.models.load_model``).
        custom_objects: extra classes the caller vouches for; their names are still checked against
            the rules above unless they are registered under the ``tfmec>`` package.
        limits: the bounds on the archive's members (:class:`LoadLimits`; default :data:`DEFAULT_LIMITS`).
    Returns:
        the Keras model (Keras 3 or tf-keras, as :mod:`tfmec.backend` selects).
    Raises:
        UnsafeModelError: the file is refused (see the module docstring) or Keras cannot rebuild it.
    """
    from tfmec.backend import keras

    check_keras_file(path, limits)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True, custom_objects=custom_objects)
    except (zipfile.BadZipFile, EOFError) as err:  # a member damaged past what the checks read (CRC, truncation)
        raise UnsafeModelError(f"{path}: damaged .keras archive ({type(err).__name__}: {err})") from None
    except (TypeError, ValueError, KeyError, OSError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeModelError(f"{path}: Keras could not rebuild the model ({type(err).__name__}: {message})") from None


__all__ = ["save_model", "load_model", "check_keras_file", "config_problems", "UnsafeModelError",
           "ALLOWED_MODULE_ROOTS", "LoadLimits", "DEFAULT_LIMITS"]
