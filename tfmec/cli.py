"""The ``tfmec`` command.

``tfmec run --data PATH[,PATH...]|synthetic [--rows N] --format FMT [--label COL] [--field-map FILE]
--model NAME --method METHOD[,METHOD...] --seed S --out DIR`` trains, evaluates, prints a table and
writes ``DIR/metrics.json``.
"""
from __future__ import annotations

import argparse
import sys


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tfmec`` command."""
    parser = argparse.ArgumentParser(prog="tfmec", description="Compress CTR models (MEC + AFM) in TensorFlow/Keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train, compress, evaluate and report")
    run.add_argument("--data", default="synthetic", help="file path(s), comma-separated, or 'synthetic' (default)")
    run.add_argument("--rows", type=int, default=None, help="rows to read (synthetic: rows to generate, default 200000)")
    run.add_argument("--format", default=None, help="criteo, avazu, csv, libsvm, parquet or tfrecord")
    run.add_argument("--label", default=None, help="label column (csv, parquet, tfrecord)")
    run.add_argument("--label-threshold", type=float, default=None, help="label = value >= threshold (e.g. ratings)")
    run.add_argument("--field-map", default=None, help="libsvm: file of 'field:value<TAB>index' lines")
    run.add_argument("--numeric", type=_csv_list, default=[], help="csv: comma-separated numeric columns")
    run.add_argument("--drop", type=_csv_list, default=[], help="csv: comma-separated columns to ignore")
    run.add_argument("--sep", default=None, help="csv: field separator (default: sniffed)")
    run.add_argument("--model", default="deepfm", help="lr, fm, deepfm, dcnv2, pnn, gdcn or autoint")
    run.add_argument("--method", dest="methods", type=_csv_list, default=["none"],
                     help="comma-separated methods run side by side: none (uncompressed baseline), mec, pq "
                          "(plain k-means PQ), pq-no-retrain, mec-no-pwr, mec-no-contrastive (ablations), afm, mec+afm")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="runs/latest", help="output directory")
    run.add_argument("--embedding-dim", type=int, default=16)
    run.add_argument("--min-count", type=int, default=2)
    run.add_argument("--batch-size", type=int, default=1024)
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--patience", type=int, default=3)
    run.add_argument("--learning-rate", type=float, default=1e-3)
    run.add_argument("--optimizer", default="adam", choices=["adam", "lazy_adam"],
                     help="adam (Keras's; densifies embedding gradients) or lazy_adam (updates only the rows a "
                          "batch touches: use it for large tables)")
    run.add_argument("--subspaces", type=int, default=4, help="MEC: sub-spaces M per table")
    run.add_argument("--codewords", type=int, default=256, help="MEC: codewords K per sub-space")
    run.add_argument("--alpha", type=float, default=1e-4, help="MEC: weight of the popularity-weighted regulariser")
    run.add_argument("--beta", type=float, default=2e-3, help="MEC: weight of the contrastive term")
    run.add_argument("--stage1-epochs", type=int, default=10, help="MEC: epochs of stage 1 (early stopping)")
    run.add_argument("--stage2", default="finetune", choices=["finetune", "retrain", "none"],
                     help="MEC stage 2: fine-tune the trained baseline with quantised tables (default) or "
                          "retrain a fresh model (the paper), or none (no training after quantisation)")
    run.add_argument("--stage2-lr-scale", type=float, default=0.1,
                     help="MEC fine-tuning: learning rate = --learning-rate times this")
    run.add_argument("--stage2-patience", type=int, default=1,
                     help="MEC/AFM fine-tuning: epochs without a better validation AUC before stopping")
    run.add_argument("--bits", type=int, default=None, help="MEC: store codes bit-packed at this width (4 for K=16)")
    run.add_argument("--share-codebooks", action="store_true",
                     help="MEC: small tables of the same width share one codebook set (beyond the paper)")
    run.add_argument("--afm-energy", type=float, default=0.9, help="AFM: share of output variance each layer keeps")
    run.add_argument("--afm-param-budget", type=float, default=None,
                     help="AFM: cap each factored layer at this share of its parameters (0 < share <= 1)")
    run.add_argument("--afm-calibration-batches", type=int, default=50, help="AFM: training batches for the PCA")
    run.add_argument("--afm-fine-tune-epochs", type=int, default=3,
                     help="AFM: at most this many fine-tuning epochs per step (early stopping keeps the best)")
    run.add_argument("--no-export", action="store_true",
                     help="skip the SavedModel / ONNX export (DIR/<method>/saved_model/<version>/, model.onnx)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``tfmec`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from tfmec.data import DataError
        from tfmec.experiment import RunConfig, format_table, run_experiment

        cfg = RunConfig(
            data=args.data, format=args.format, rows=args.rows, label=args.label, field_map=args.field_map,
            label_threshold=args.label_threshold, numeric=args.numeric, drop=args.drop, sep=args.sep,
            model=args.model, methods=args.methods, seed=args.seed, out=args.out,
            embedding_dim=args.embedding_dim, min_count=args.min_count, batch_size=args.batch_size,
            epochs=args.epochs, patience=args.patience, learning_rate=args.learning_rate, optimizer=args.optimizer,
            verbose=0 if args.quiet else 1, subspaces=args.subspaces, codewords=args.codewords,
            alpha=args.alpha, beta=args.beta, stage1_epochs=args.stage1_epochs, bits=args.bits,
            share_codebooks=args.share_codebooks,
            stage2=args.stage2, stage2_lr_scale=args.stage2_lr_scale,
            stage2_patience=args.stage2_patience,
            afm_energy=args.afm_energy, afm_param_budget=args.afm_param_budget,
            afm_calibration_batches=args.afm_calibration_batches,
            afm_fine_tune_epochs=args.afm_fine_tune_epochs,
            export=not args.no_export,
        )
        try:
            metrics = run_experiment(cfg)
        except (ValueError, FileNotFoundError, DataError) as err:
            print(f"tfmec: error: {err}", file=sys.stderr)
            return 2
        print(format_table(metrics["runs"]))
        print(f"wrote {args.out}/metrics.json")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
