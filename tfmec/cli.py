"""The ``tfmec`` command.

``tfmec run --data PATH[,PATH...]|synthetic [--rows N] --format FMT [--label COL] [--engine pyarrow|tfio]
[--field-map FILE] --model NAME --method METHOD[,METHOD...] --seed S --out DIR [--config FILE]`` trains,
evaluates, prints a table and writes ``DIR/metrics.json`` and ``DIR/report.md`` (with its PNG figures);
``--config FILE`` reads the settings from a JSON file of ``RunConfig`` field names (e.g.
``best_config.json`` of ``tfmec tune``), and flags given on the command line override it.

``tfmec tune --data ... --model NAME --method mec|mec+afm --trials N [--memory-budget BYTES]
[--oracle random|bayesian|hyperband] --out DIR`` sweeps MEC's hyperparameters with KerasTuner
(:mod:`tfmec.tuning`) and writes ``DIR/results.md``, ``DIR/results.jsonl`` and ``DIR/best_config.json``.

Both keep TensorFlow's own logs out of the output (its C++ start-up lines and its Python logger's
warnings); ``--verbose`` lets them through.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _float_range(text: str):
    """``LOW,HIGH`` -> (low, high); ``VALUE`` -> value (a fixed hyperparameter)."""
    try:
        values = [float(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH or one number, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH or one number, got {text!r}")
    return tuple(values)


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The data options shared by ``run`` and ``tune`` (field names of ``RunConfig``)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic", help="file path(s), comma-separated, or 'synthetic' (default)")
    g.add_argument("--rows", type=int, default=None, help="rows to read (synthetic: rows to generate, default 200000)")
    g.add_argument("--format", default=None,
                   help="criteo, avazu, csv, libsvm (libfm), mind (MIND behaviors.tsv; news.tsv beside it adds "
                        "category columns), movielens (ratings.dat or RecBole .inter; movies/users files beside it "
                        "add genres and user columns; history = earlier movies), parquet or tfrecord")
    g.add_argument("--label", default=None, help="label column (csv, parquet, tfrecord)")
    g.add_argument("--engine", default=None, choices=["pyarrow", "tfio"],
                   help="parquet: the reading library, pyarrow (default) or tfio (tensorflow-io's "
                        "IODataset.from_parquet; needs tensorflow-io 0.37.1 on TensorFlow 2.16.x: make test-io)")
    g.add_argument("--label-threshold", type=float, default=None, help="label = value >= threshold (e.g. ratings)")
    g.add_argument("--field-map", default=None, help="libsvm: file of 'field:value<TAB>index' lines")
    g.add_argument("--numeric", type=_csv_list, default=[], help="csv: comma-separated numeric columns")
    g.add_argument("--drop", type=_csv_list, default=[],
                   help="comma-separated columns to leave out (any format: e.g. --format mind --drop history "
                        "for a model without the click history)")
    g.add_argument("--sep", default=None, help="csv: field separator (default: sniffed)")
    g.add_argument("--names", type=_csv_list, default=[],
                   help="csv: comma-separated column names of a file without a header row (e.g. MovieLens "
                        "ratings.dat: user_id,movie_id,rating,timestamp)")
    g.add_argument("--list", dest="lists", action="append", default=[], metavar="COLUMN[:SEP]",
                   help="csv: a multi-valued column (repeat for several): its cells hold values oldest first, "
                        "separated by SEP (default: whitespace), e.g. --list 'genres:|' --list history")
    g.add_argument("--share", dest="shares", action="append", default=[], metavar="FIELD=OTHER",
                   help="FIELD uses OTHER's vocabulary and embedding table (repeatable), e.g. --share "
                        "history=movie_id (MIND's history shares news_id by itself)")
    g.add_argument("--max-length", type=int, default=50,
                   help="values kept per row of a multi-valued field, most recent first (default 50)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--min-count", type=int, default=2)
    g.add_argument("--batch-size", type=int, default=1024)


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The model and training options shared by ``run`` and ``tune``."""
    g = p.add_argument_group("model and training")
    g.add_argument("--model", default="deepfm",
                   help="lr, fm, deepfm, dcnv2, pnn, gdcn, autoint or din (target attention over a multi-valued "
                        "field that shares a single-valued field's table, e.g. MIND's history)")
    g.add_argument("--embedding-dim", type=int, default=16)
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--patience", type=int, default=3)
    g.add_argument("--learning-rate", type=float, default=1e-3)
    g.add_argument("--optimizer", default="adam", choices=["adam", "lazy_adam"],
                   help="adam (Keras's; densifies embedding gradients) or lazy_adam (updates only the rows a "
                        "batch touches: use it for large tables)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--verbose", dest="tf_logs", action="store_true",
                   help="let TensorFlow's own logs through: its C++ start-up lines (oneDNN, CUDA, CPU features; "
                        "hidden by default with TF_CPP_MIN_LOG_LEVEL=3 unless you set that variable) and its "
                        "Python logger's warnings (e.g. tf.function retracing)")


def add_mec_options(p: argparse.ArgumentParser, tuned: bool = False) -> None:
    """MEC's options shared by ``run`` and ``tune``; with ``tuned`` the swept ones (M, K, alpha, beta)
    take ranges instead of one value."""
    g = p.add_argument_group("MEC" + (" (swept: LOW,HIGH ranges or comma-separated choices; one value "
                                      "fixes it)" if tuned else ""))
    if tuned:
        g.add_argument("--subspaces", type=_int_list, default=[2, 4, 8], help="choices of M (default 2,4,8)")
        g.add_argument("--codewords", type=_int_list, default=[16, 64, 256], help="choices of K (default 16,64,256)")
        g.add_argument("--alpha", type=_float_range, default=(1e-6, 1e-2),
                       help="PWR weight range, log scale (default 1e-6,1e-2)")
        g.add_argument("--beta", type=_float_range, default=(1e-4, 1e-1),
                       help="contrastive weight range, log scale (default 1e-4,1e-1)")
    else:
        g.add_argument("--subspaces", type=int, default=4, help="MEC: sub-spaces M per table")
        g.add_argument("--codewords", type=int, default=256, help="MEC: codewords K per sub-space")
        g.add_argument("--alpha", type=float, default=1e-4, help="MEC: weight of the popularity-weighted regulariser")
        g.add_argument("--beta", type=float, default=2e-3, help="MEC: weight of the contrastive term")
    g.add_argument("--stage1-epochs", type=int, default=10, help="MEC: epochs of stage 1 (early stopping)")
    g.add_argument("--stage2", default="finetune", choices=["finetune", "retrain", "none"],
                   help="MEC stage 2: fine-tune the trained baseline with quantised tables (default) or "
                        "retrain a fresh model (the paper), or none (no training after quantisation)")
    g.add_argument("--stage2-lr-scale", type=float, default=0.1,
                   help="MEC fine-tuning: learning rate = --learning-rate times this")
    g.add_argument("--stage2-patience", type=int, default=1,
                   help="MEC/AFM fine-tuning: epochs without a better validation AUC before stopping")
    g.add_argument("--bits", type=int, default=None, help="MEC: store codes bit-packed at this width (4 for K=16)")
    g.add_argument("--share-codebooks", action="store_true",
                   help="MEC: small tables of the same width share one codebook set (beyond the paper)")
    g.add_argument("--head-rows", type=float, default=0.0,
                   help="MEC: keep the most frequent rows of each table exact (beyond the paper): a share "
                        "of each table's rows when < 1, else a count (default 0: none)")


def add_afm_options(p: argparse.ArgumentParser, tuned: bool = False) -> None:
    """AFM's options shared by ``run`` and ``tune`` (with ``tuned``, the energy is a range)."""
    g = p.add_argument_group("AFM")
    if tuned:
        g.add_argument("--afm-energy", type=_float_range, default=(0.7, 0.99),
                       help="mec+afm: range of the share of output variance each layer keeps (default 0.7,0.99)")
    else:
        g.add_argument("--afm-energy", type=float, default=0.9, help="AFM: share of output variance each layer keeps")
    g.add_argument("--afm-param-budget", type=float, default=None,
                   help="AFM: cap each factored layer at this share of its parameters (0 < share <= 1)")
    g.add_argument("--afm-calibration-batches", type=int, default=50, help="AFM: training batches for the PCA")
    g.add_argument("--afm-fine-tune-epochs", type=int, default=3,
                   help="AFM: at most this many fine-tuning epochs per step (early stopping keeps the best)")


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """Every option of ``tfmec run``."""
    add_data_options(run)
    add_training_options(run)
    run.add_argument("--method", dest="methods", type=_csv_list, default=["none"],
                     help="comma-separated methods run side by side: none (uncompressed baseline), mec, pq "
                          "(plain k-means PQ), pq-no-retrain, mec-no-pwr, mec-no-contrastive (ablations), afm, "
                          "mec+afm, int8 / int4 (post-training int8 / int4 tables; with --memory-budget or "
                          "--target-ratio, ids hashed into fewer quantised rows to fit), hash (hashing trick at "
                          "--hash-bytes), qr (quotient-remainder tables at the budget)")
    run.add_argument("--out", default="runs/latest", help="output directory")
    run.add_argument("--config", default=None, metavar="FILE",
                     help="JSON file of RunConfig settings (e.g. best_config.json of 'tfmec tune'); flags given "
                          "on the command line override it")
    add_mec_options(run)
    add_afm_options(run)
    g = run.add_argument_group("hashing trick (method hash)")
    g.add_argument("--hash-bytes", type=int, default=None, metavar="BYTES",
                   help="bytes of the hashed embedding tables (default: the MEC model's embedding bytes when "
                        "mec runs too, else 1/8 of the baseline's)")
    g = run.add_argument_group("byte budget (mec tiers; every competitor sized to the same bytes)")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--memory-budget", type=int, default=None, metavar="BYTES",
                   help="bytes of all embedding tables together: mec chooses popularity tiers per table "
                        "(exact head rows, PQ codes, a zero-byte hashed tail) for the best validation AUC within "
                        "them; hash, qr, int8, int4 and pq are sized to the same bytes")
    b.add_argument("--target-ratio", type=float, default=None, metavar="R",
                   help="the same budget as a ratio: the uncompressed tables' bytes / R")
    g.add_argument("--frontier", type=_float_list, default=[], metavar="R1,R2,...",
                   help="also train every budgeted method of --method (mec, pq, hash, qr, int8, int4) at each of "
                        "these ratios and draw test AUC against bytes, one line per method, into the report")
    run.add_argument("--no-export", action="store_true",
                     help="skip the SavedModel / ONNX export (DIR/<method>/saved_model/<version>/, model.onnx)")
    run.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                     help="checkpoint every training run after each epoch and MEC stage 1 every 100 steps in DIR; "
                          "the same command run again resumes where a killed run stopped")


def add_tune_arguments(tune: argparse.ArgumentParser) -> None:
    """Every option of ``tfmec tune``."""
    add_data_options(tune)
    add_training_options(tune)
    tune.add_argument("--method", default="mec", choices=["mec", "mec+afm"], help="what to tune (default mec)")
    tune.add_argument("--trials", type=int, default=10, help="trials to run (default 10)")
    tune.add_argument("--memory-budget", type=int, default=None, metavar="BYTES",
                      help="reject trials whose compressed embedding tables would need more bytes (not run)")
    tune.add_argument("--oracle", default="random", choices=["random", "bayesian", "hyperband"],
                      help="KerasTuner search algorithm (default random; hyperband varies stage-2 epochs up to "
                           "--epochs)")
    tune.add_argument("--pack-codes", action="store_true",
                      help="store each trial's codes bit-packed at ceil(log2 K) bits")
    tune.add_argument("--out", default="runs/tune", help="output directory")
    add_mec_options(tune, tuned=True)
    add_afm_options(tune, tuned=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tfmec`` command."""
    parser = argparse.ArgumentParser(prog="tfmec", description="Compress CTR models (MEC + AFM) in TensorFlow/Keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="train, compress, evaluate and report"))
    add_tune_arguments(sub.add_parser("tune", help="sweep MEC's hyperparameters with KerasTuner"))
    return parser


_UNSET = object()


def _explicit_options(add_arguments, argv) -> set:
    """The destinations of the options given explicitly in ``argv`` (a subcommand's arguments)."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    p.set_defaults(**{dest: _UNSET for dest in vars(p.parse_args([]))})
    appending = {a.dest for a in p._actions if isinstance(a, argparse._AppendAction)}
    p.set_defaults(**{dest: None for dest in appending})  # an append action appends to its default
    return {dest for dest, value in vars(p.parse_args(argv)).items()
            if value is not _UNSET and not (dest in appending and value is None)}


def _config_values(args, dests=None) -> dict:
    """``RunConfig`` field values from parsed arguments (``--quiet`` -> verbose, ``--no-export`` ->
    export); with ``dests``, only those given by these destinations."""
    from tfmec.experiment import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and (dests is None or k in dests)}
    if dests is None or "quiet" in dests:
        values["verbose"] = 0 if args.quiet else 1
    if hasattr(args, "no_export") and (dests is None or "no_export" in dests):
        values["export"] = not args.no_export
    return values


def run_config_from_args(args, argv) -> "RunConfig":
    """The ``RunConfig`` of ``tfmec run``: the flags, or with ``--config FILE`` the file's settings with
    the flags given explicitly in ``argv`` on top. Raises ``ValueError`` for an unreadable file or
    unknown settings (naming them)."""
    from tfmec.experiment import RunConfig

    values = _config_values(args)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                from_file = json.load(fh)
        except OSError as err:
            raise ValueError(f"--config {args.config}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {args.config}: not valid JSON ({err})") from None
        RunConfig.from_dict(from_file, source=f"--config {args.config}")  # names unknown keys
        explicit = _explicit_options(add_run_arguments, argv)
        values = {**values, **from_file, **_config_values(args, explicit)}
    return RunConfig.from_dict(values, source="tfmec run")


def _run(args, argv) -> int:
    from tfmec.data import DataError
    from tfmec.experiment import format_table, run_experiment

    cfg = None
    try:
        cfg = run_config_from_args(args, argv)
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
    space = SearchSpace(alpha=args.alpha, beta=args.beta, codewords=args.codewords, subspaces=args.subspaces,
                        afm_energy=args.afm_energy)
    searched = {"alpha", "beta", "codewords", "subspaces", "afm_energy"}
    # tune's --memory-budget rejects trials over it; it is not run's tiered budget (RunConfig.memory_budget)
    values = {k: v for k, v in _config_values(args).items() if k not in searched | {"memory_budget"}}
    try:
        if args.trials < 1:
            raise ValueError("--trials must be at least 1")
        cfg = RunConfig.from_dict({**values, "methods": [args.method]}, source="tfmec tune")
        tuner = tune(cfg, args.method, max_trials=args.trials, oracle=args.oracle, space=space,
                     memory_budget_bytes=args.memory_budget, pack_codes=args.pack_codes)
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
    rest = argv[argv.index(args.command) + 1:]
    with tensorflow_python_logs(getattr(args, "tf_logs", False)):
        if args.command == "run":
            return _run(args, rest)
        if args.command == "tune":
            return _tune(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
