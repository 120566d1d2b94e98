"""Checks of a run's settings that span settings: the methods, data paths and formats, the settings a
method needs, settings that contradict each other.

Each setting's own type, choices and range are declared with its field (:mod:`tfmec.settings`);
:meth:`tfmec.experiment.RunConfig.validate` checks those first, then calls :func:`check_run_settings`
(with the methods and formats there are: they live above this module), so ``tfmec run`` refuses a
bad command line in a second, naming the flag, instead of failing (or silently ignoring a flag)
after minutes of training.
"""
from __future__ import annotations

import os

MEC_METHODS = ("mec", "pq", "pq-no-retrain", "mec-no-pwr", "mec-no-contrastive", "mec+afm")
AFM_METHODS = ("afm", "mec+afm")
CSV_ONLY = (("numeric", "--numeric"), ("sep", "--sep"), ("label_threshold", "--label-threshold"),
            ("names", "--names"), ("lists", "--list"))
BUDGET_METHODS = ("mec", "pq", "hash", "qr", "int8", "int4")  # sized to --memory-budget / --target-ratio


def flag_name(name: str) -> str:
    """The flag of a setting: ``"stage2_lr_scale"`` -> ``"--stage2-lr-scale"``."""
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
            _require(not os.path.isfile(value),
                     f"{flag_name(name)} {value} is a file; it must be a folder (or not exist)")


def check_contradictions(cfg) -> None:
    """Settings that only apply to another data format or method than the ones requested."""
    methods = set(cfg.methods)
    if cfg.data == "synthetic":
        _require(cfg.format is None, f"--format {cfg.format} applies to data files; --data synthetic is generated "
                                     "(drop --format, or give a file)")
        for name in ("label", "field_map"):
            _require(getattr(cfg, name) is None, f"{flag_name(name)} applies to data files, not to --data synthetic")
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


class BudgetTooSmallError(ValueError):
    """A byte budget below the least a method's tables can take (the message gives that least). A
    ``ValueError``, so callers that catch those keep working; :func:`tfmec.experiment.run_frontier`
    reports it as "cannot reach this ratio" instead of failing the run."""


def check_methods(methods, known, planned=None) -> None:
    """At least one method, none twice, each of ``known`` (``planned``: ``{method: issue}`` of those
    not available yet)."""
    planned = planned or {}
    if not methods:
        raise ValueError("give at least one method")
    repeated = sorted({m for m in methods if list(methods).count(m) > 1})
    if repeated:
        raise ValueError(f"method(s) {repeated} given more than once")
    for m in methods:
        if m in planned:
            raise ValueError(f"method {m!r} is not available in this version yet (tracked in issue {planned[m]})")
        if m not in known:
            raise ValueError(f"unknown method {m!r}; choose from {sorted(set(known) | set(planned))}")


def check_data(cfg, formats) -> None:
    """A data path needs ``--format`` (one of ``formats``), and its files must exist."""
    if cfg.data == "synthetic":
        return
    if cfg.format is None:
        raise ValueError(f"--format is required for a data path; one of {formats}")
    for p in cfg.data_paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"data file not found: {p}")


def check_methods_settings(cfg) -> None:
    """Settings that need a method, or a code width that must hold the codewords."""
    if cfg.bits is not None and not (1 <= cfg.bits <= 16 and 2**cfg.bits >= cfg.codewords):
        raise ValueError(f"--bits {cfg.bits} cannot hold {cfg.codewords} codewords; use at least "
                         f"{max(1, (cfg.codewords - 1).bit_length())}")
    methods = set(cfg.methods)
    if cfg.memory_budget is not None and cfg.target_ratio is not None:
        raise ValueError("give --memory-budget or --target-ratio, not both")
    if (cfg.memory_budget is not None or cfg.target_ratio is not None) and not (
            methods & (set(BUDGET_METHODS) | {"mec+afm"})):
        flag = "--memory-budget" if cfg.memory_budget is not None else "--target-ratio"
        raise ValueError(f"{flag} sizes the embedding methods ({', '.join(BUDGET_METHODS)}, mec+afm); none of "
                         f"them is requested (--method {','.join(cfg.methods)})")
    if cfg.frontier and not methods & set(BUDGET_METHODS):
        raise ValueError(f"--frontier trains the budgeted methods of --method ({', '.join(BUDGET_METHODS)}); "
                         f"none is requested")


def check_run_settings(cfg, *, methods, formats, planned=None) -> None:
    """Raises ``ValueError`` naming the first setting of ``cfg`` (a :class:`~tfmec.experiment.RunConfig`
    whose fields each passed their own checks, :meth:`~tfmec.experiment.RunConfig.validate`) that
    does not fit: no method, a method twice or not among ``methods`` (``planned``: ``{method: issue}``
    not available yet), a data path without ``--format`` (listing ``formats``) or a missing file
    (``FileNotFoundError``), a folder as a data file (or a file as a folder), a code width too small
    for K, a budget or frontier without a budgeted method, a csv-only flag with another format,
    ``--format`` with synthetic data, ``--hash-bytes`` without ``--method hash``, an embedding width M
    does not divide."""
    check_methods(cfg.methods, methods, planned)
    check_data(cfg, formats)
    check_methods_settings(cfg)
    check_paths(cfg)
    check_contradictions(cfg)


__all__ = ["BudgetTooSmallError", "check_run_settings", "check_methods", "check_data", "check_methods_settings",
           "check_paths", "check_contradictions", "flag_name", "MEC_METHODS", "AFM_METHODS", "BUDGET_METHODS"]
