"""Checks of a run's settings before any work starts: ranges, and settings that contradict each other.

:func:`check_run_settings` is called by :meth:`tfmec.experiment.RunConfig.validate`, so ``tfmec run``
refuses a bad command line in a second, naming the flag, instead of failing (or silently ignoring a
flag) after minutes of training.
"""
from __future__ import annotations

import dataclasses
import math
import os

MEC_METHODS = ("mec", "pq", "pq-no-retrain", "mec-no-pwr", "mec-no-contrastive", "mec+afm")
AFM_METHODS = ("afm", "mec+afm")
CSV_ONLY = (("numeric", "--numeric"), ("sep", "--sep"), ("label_threshold", "--label-threshold"),
            ("names", "--names"), ("lists", "--list"))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_paths(cfg) -> None:
    """Data paths are files (not folders); ``out`` and ``checkpoint_dir`` are not files."""
    if cfg.data != "synthetic":
        for p in cfg.data_paths:
            _require(not os.path.isdir(p), f"--data {p} is a folder; give the data file(s), comma-separated")
    for name in ("out", "checkpoint_dir"):
        value = getattr(cfg, name, None)
        if value is not None:
            _require(not os.path.isfile(value), f"{_flag(name)} {value} is a file; it must be a folder (or not exist)")


def check_contradictions(cfg) -> None:
    """Settings that only apply to another data format or method than the ones requested."""
    methods = set(cfg.methods)
    if cfg.data == "synthetic":
        _require(cfg.format is None, f"--format {cfg.format} applies to data files; --data synthetic is generated "
                                     "(drop --format, or give a file)")
        for name in ("label", "field_map"):
            _require(getattr(cfg, name) is None, f"{_flag(name)} applies to data files, not to --data synthetic")
    if cfg.format not in (None, "csv"):
        for name, flag in CSV_ONLY:
            if name == "label_threshold" and cfg.format == "movielens":
                continue  # the rating threshold of the MovieLens reader
            value = getattr(cfg, name)
            _require(value in (None, (), []), f"{flag} applies to --format csv only, not {cfg.format}")
    if getattr(cfg, "engine", None) is not None:
        _require(cfg.format == "parquet", f"--engine applies to --format parquet only, not {cfg.format or 'synthetic'}")
    if cfg.field_map is not None and cfg.format is not None:
        _require(cfg.format in ("libsvm", "libfm"), f"--field-map applies to --format libsvm only, not {cfg.format}")
    if cfg.hash_bytes is not None:
        _require("hash" in methods, "--hash-bytes applies to --method hash, which is not requested")
    if methods & set(MEC_METHODS):
        _require(cfg.embedding_dim % cfg.subspaces == 0,
                 f"--embedding-dim {cfg.embedding_dim} is not divisible by --subspaces {cfg.subspaces}")


def check_ranges(cfg) -> None:
    """Numbers inside their valid ranges (each message names the flag)."""
    _require(cfg.learning_rate > 0, f"--learning-rate must be positive, got {cfg.learning_rate}")
    _require(cfg.patience >= 1, f"--patience must be at least 1, got {cfg.patience}")
    _require(cfg.stage2_patience >= 1, f"--stage2-patience must be at least 1, got {cfg.stage2_patience}")
    _require(cfg.min_count >= 1, f"--min-count must be at least 1, got {cfg.min_count}")
    _require(cfg.max_length >= 1, f"--max-length must be at least 1, got {cfg.max_length}")
    for item in cfg.shares:
        field, eq, other = str(item).partition("=")
        _require(bool(eq and field and other and field != other),
                 f"--share {item!r}: expected FIELD=OTHER with two different column names (e.g. history=movie_id)")
    for item in cfg.lists:
        _require(bool(str(item).partition(":")[0]), f"--list {item!r}: expected COLUMN or COLUMN:SEPARATOR")
    _require(cfg.subspaces >= 1, f"--subspaces must be at least 1, got {cfg.subspaces}")
    _require(2 <= cfg.codewords <= 65536, f"--codewords must be in [2, 65536], got {cfg.codewords}")
    _require(cfg.alpha >= 0 and cfg.beta >= 0, f"--alpha and --beta must be >= 0, got {cfg.alpha}, {cfg.beta}")
    _require(cfg.stage1_epochs >= 0, f"--stage1-epochs must be >= 0, got {cfg.stage1_epochs}")
    _require(0 < cfg.afm_energy <= 1, f"--afm-energy must be in (0, 1], got {cfg.afm_energy}")
    _require(cfg.afm_param_budget is None or 0 < cfg.afm_param_budget <= 1,
             f"--afm-param-budget must be in (0, 1], got {cfg.afm_param_budget}")
    _require(cfg.afm_calibration_batches >= 1,
             f"--afm-calibration-batches must be at least 1, got {cfg.afm_calibration_batches}")
    _require(cfg.afm_fine_tune_epochs >= 0, f"--afm-fine-tune-epochs must be >= 0, got {cfg.afm_fine_tune_epochs}")
    _require(cfg.export_rows >= 1, f"export_rows must be at least 1, got {cfg.export_rows}")
    if cfg.label_threshold is not None:
        _require(cfg.label_threshold == cfg.label_threshold and abs(cfg.label_threshold) != float("inf"),
                 f"--label-threshold must be a finite number, got {cfg.label_threshold}")


def _kind(annotation: str) -> tuple[str, bool]:
    """``("int" | "float" | "bool" | "str" | "seq_str" | "seq_float" | "", optional)`` of a field's
    annotation text (``from __future__ import annotations`` keeps annotations as strings)."""
    text = str(annotation).replace(" ", "")
    optional = "|None" in text or "Optional[" in text
    text = text.replace("|None", "").replace("Optional[", "").rstrip("]") if optional else text
    return {"int": "int", "float": "float", "bool": "bool", "str": "str", "Sequence[str]": "seq_str",
            "Sequence[float]": "seq_float"}.get(text, ""), optional


def _number_problem(value, kind: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r} ({type(value).__name__})"
    if kind == "int" and not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return ""
        return f"must be an integer, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return ""


class BudgetTooSmallError(ValueError):
    """A byte budget below the least a method's tables can take (the message gives that least). A
    ``ValueError``, so callers that catch those keep working; :func:`tfmec.experiment.run_frontier`
    reports it as "cannot reach this ratio" instead of failing the run."""


def check_types(cfg) -> None:
    """Every setting of the type its field declares: integers are integers, numbers are finite
    (``inf`` and ``nan`` are refused everywhere), flags are booleans, names are strings, lists hold
    the right items; whether the value came from a flag or from a ``--config`` file. Integral floats
    of an integer setting (``16.0`` from JSON) are turned into ints."""
    for field in dataclasses.fields(cfg):
        kind, optional = _kind(field.type)
        value = getattr(cfg, field.name)
        if not kind or (optional and value is None):
            continue
        where = f"{_flag(field.name)} (setting {field.name!r})"
        if kind in ("int", "float"):
            problem = _number_problem(value, kind)
            _require(not problem, f"{where} {problem}")
            if kind == "int" and isinstance(value, float):
                object.__setattr__(cfg, field.name, int(value))
        elif kind == "bool":
            _require(isinstance(value, bool), f"{where} must be true or false, got {value!r} ({type(value).__name__})")
        elif kind == "str":
            _require(isinstance(value, str), f"{where} must be a string, got {value!r} ({type(value).__name__})")
        else:
            _require(isinstance(value, (list, tuple)), f"{where} must be a list, got {value!r}")
            for item in value:
                if kind == "seq_str":
                    _require(isinstance(item, str), f"{where} must hold strings, got {item!r}")
                else:
                    problem = _number_problem(item, "float")
                    _require(not problem, f"{where}: every entry {problem}")


def check_run_settings(cfg) -> None:
    """Raises ``ValueError`` naming the first setting of ``cfg`` (a :class:`~tfmec.experiment.RunConfig`)
    that is out of range, names a folder as a data file (or a file as a folder), or contradicts
    another setting (a csv-only flag with another format, ``--format`` with synthetic data,
    ``--hash-bytes`` without ``--method hash``, an embedding width M does not divide) or has the wrong
    type (:func:`check_types`: a string where a number belongs, ``inf`` or ``nan``)."""
    check_types(cfg)
    check_paths(cfg)
    check_contradictions(cfg)
    check_ranges(cfg)


__all__ = ["BudgetTooSmallError", "check_run_settings", "check_types", "check_paths", "check_contradictions", "check_ranges", "MEC_METHODS"]
