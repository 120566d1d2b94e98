"""The ``tfmec`` command.

``tfmec run --data PATH[,PATH...]|synthetic [--rows N] --format FMT [--label COL] [--engine pyarrow|tfio]
[--field-map FILE] --model NAME --method METHOD[,METHOD...] --seed S --out DIR [--config FILE]`` trains,
evaluates, prints a table and writes ``DIR/metrics.json`` and ``DIR/report.md`` (with its PNG figures);
``--config FILE`` reads the settings from a JSON file of ``RunConfig`` settings, flat or by section (e.g.
``best_config.json`` of ``tfmec tune``), and flags given on the command line override it.

Every option that sets a ``RunConfig`` setting is generated from its declaration in
:mod:`tfmec.settings` (flag, default, type, choices, help); this module adds ``--config`` and
``--verbose`` and turns the parsed arguments into a ``RunConfig``.

``tfmec tune --data ... --model NAME --method mec|mec+afm --trials N [--memory-budget BYTES]
[--oracle random|bayesian|hyperband] --out DIR`` sweeps MEC's hyperparameters with KerasTuner
(:mod:`tfmec.tuning`) and writes ``DIR/results.md``, ``DIR/results.jsonl`` and ``DIR/best_config.json``.

Both keep TensorFlow's own logs out of the output (its C++ start-up lines and its Python logger's
warnings); ``--verbose`` lets them through.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

from tfmec.settings import (SECTIONS, AFMSettings, DataSettings, MECSettings, ModelSettings, RunSettings,
                            SettingsParser, SweepSettings, TrainingSettings, TuneSettings, add_setting_arguments)

TUNE_SECTIONS = (DataSettings, RunSettings, ModelSettings, TrainingSettings, MECSettings, AFMSettings)
"""The ``RunConfig`` sections ``tfmec tune`` takes flags of (its trials run ``mec`` or ``mec+afm``)."""


def _add_cli_options(groups: dict) -> None:
    """The options of the command itself, not settings of a run."""
    groups["model and training"].add_argument(
        "--verbose", dest="tf_logs", action="store_true",
        help="let TensorFlow's own logs through: its C++ start-up lines (oneDNN, CUDA, CPU features; hidden by "
             "default with TF_CPP_MIN_LOG_LEVEL=3 unless you set that variable) and its Python logger's warnings "
             "(e.g. tf.function retracing)")


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """Every option of ``tfmec run``: one per ``RunConfig`` setting (:mod:`tfmec.settings`), plus
    ``--config FILE`` and ``--verbose``."""
    groups = add_setting_arguments(run, list(SECTIONS.values()))
    run.add_argument("--config", default=None, metavar="FILE",
                     help="JSON file of RunConfig settings, flat ({\"alpha\": 1e-3}) or by section ({\"mec\": "
                          "{\"alpha\": 1e-3}}), e.g. best_config.json of 'tfmec tune'; flags given on the command "
                          "line override it")
    _add_cli_options(groups)


def add_tune_arguments(tune: argparse.ArgumentParser) -> None:
    """Every option of ``tfmec tune``: the data, model, training, MEC and AFM settings of ``RunConfig``
    (the swept ones as ranges, :class:`~tfmec.settings.SweepSettings`) and its own
    (:class:`~tfmec.settings.TuneSettings`)."""
    groups = add_setting_arguments(tune, TUNE_SECTIONS, skip=("methods", "out"), swept=SweepSettings)
    add_setting_arguments(tune, [TuneSettings], target="tune", groups=groups)
    _add_cli_options(groups)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tfmec`` command."""
    parser = SettingsParser(prog="tfmec", description="Compress CTR models (MEC + AFM) in TensorFlow/Keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="train, compress, evaluate and report"))
    add_tune_arguments(sub.add_parser("tune", help="sweep MEC's hyperparameters with KerasTuner"))
    return parser


def run_config_from_args(args, argv=None) -> "RunConfig":
    """The ``RunConfig`` of ``tfmec run``: the flags given (``args.given_settings``, the others keep their
    defaults), or with ``--config FILE`` the file's settings with the flags given on top (``argv`` is
    not needed any more). Raises ``ValueError`` for an unreadable file or unknown settings (naming
    them and the likely meant ones)."""
    from tfmec.experiment import RunConfig

    values = dict(args.given_settings)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                from_file = json.load(fh)
        except OSError as err:
            raise ValueError(f"--config {args.config}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {args.config}: not valid JSON ({err})") from None
        values = {**RunConfig.flatten(from_file, source=f"--config {args.config}"), **values}
    return RunConfig.from_dict(values, source="tfmec run")


def _run(args) -> int:
    from tfmec.data import DataError
    from tfmec.experiment import format_table, run_experiment

    cfg = None
    try:
        cfg = run_config_from_args(args)
        metrics = run_experiment(cfg)
    except (ValueError, OSError, DataError) as err:  # OSError: unreadable, missing or folder paths
        print(f"tfmec: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = cfg is not None and cfg.checkpoint_dir
        hint = f"; run the same command again to resume from {cfg.checkpoint_dir}" if resumable else ""
        print(f"tfmec: interrupted{hint}", file=sys.stderr)
        return 130
    print(format_table(metrics["runs"]))
    print(f"wrote {cfg.out}/metrics.json and {cfg.out}/{metrics['report']['path']}")
    return 0


def _tune(args) -> int:
    from tfmec.data import DataError
    from tfmec.experiment import RunConfig

    try:
        from tfmec.tuning import SearchSpace, tune
    except ImportError as err:
        print(f"tfmec: error: {err}", file=sys.stderr)
        return 2
    space = SearchSpace.from_namespace(args)
    own = TuneSettings.from_namespace(args)  # tune's --memory-budget rejects trials; it is not run's tiered budget
    try:
        own.validate()
        cfg = RunConfig.from_dict({**args.given_settings, "methods": [own.method], "out": own.out},
                                  source="tfmec tune")
        tuner = tune(cfg, own.method, max_trials=own.trials, oracle=own.oracle, space=space,
                     memory_budget_bytes=own.memory_budget, pack_codes=own.pack_codes)
    except (ValueError, FileNotFoundError, DataError) as err:
        print(f"tfmec: error: {err}", file=sys.stderr)
        return 2
    print(tuner.markdown())
    print(f"wrote {tuner.results_path('md')} and {tuner.results_path('jsonl')}")
    if tuner.best_record() is None:
        print("no trial was accepted: raise --memory-budget or offer smaller K/M choices")
        return 1
    print(f"best configuration: {cfg.out}/best_config.json  (tfmec run --config {cfg.out}/best_config.json)")
    return 0


@contextlib.contextmanager
def tensorflow_python_logs(verbose: bool):
    """Without ``verbose``, TensorFlow's Python logger (``WARNING:tensorflow:...`` lines) shows errors
    only while the command runs (restored after). Its C++ logs are quieted before TensorFlow loads, by
    :mod:`tfmec._tf_logs` from ``tfmec/__init__.py``: ``tfmec.cli`` is imported after the package."""
    if verbose:
        yield
        return
    import logging

    logger = logging.getLogger("tensorflow")  # tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv=None) -> int:
    """Entry point of the ``tfmec`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    with tensorflow_python_logs(getattr(args, "tf_logs", False)):
        if args.command == "run":
            return _run(args)
        if args.command == "tune":
            return _tune(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
