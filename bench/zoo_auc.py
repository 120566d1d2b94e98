"""Test AUC of zoo models (uncompressed) on the real samples and on synthetic data, over seeds.

    python bench/zoo_auc.py --datasets frappe,movielens-100k --models lr,fm,deepfm --seeds 0,1,2,3,4

For each (dataset, seed) the data is loaded once (split by that seed, vocabularies with min_count 2
on the training split) and every model is trained on it with early stopping on validation AUC
(``tfmec.experiment.run_baseline``, the same code path as ``tfmec run --method none``). Writes one
JSON line per run to ``--out`` and prints a Markdown table of mean +- std test AUC.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from real_data import open_any  # noqa: E402

from tfmec.backend import KERAS_MODE  # noqa: E402
from tfmec.data import load  # noqa: E402
from tfmec.experiment import RunConfig, RunContext, run_baseline  # noqa: E402


# Rows per batch: 256 for the sets under 100k rows (more updates per epoch), larger for the big ones.
DEFAULT_BATCH = {"criteo": 256, "avazu": 256, "movielens-100k": 256, "frappe": 256,
                 "movielens-1m-part": 2048, "mind-small-5k": 2048, "synthetic": 1024}


def batch_size_for(name: str, args) -> int:
    return args.batch_size or DEFAULT_BATCH.get(name, 1024)


def load_dataset(name: str, seed: int, args):
    reader, schema = open_any(name, args.synthetic_rows)
    return load(reader, schema, seed=seed, batch_size=batch_size_for(name, args), min_count=args.min_count, progress=False)


def summarise(results: list[dict]) -> str:
    """Markdown table: dataset x model -> mean +- std test AUC (n seeds)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    models = list(dict.fromkeys(r["model"] for r in results))
    lines = ["| dataset | rows (train/valid/test) | " + " | ".join(models) + " |",
             "|---|---|" + "---|" * len(models)]
    for d in datasets:
        rows = next(r["rows"] for r in results if r["dataset"] == d)
        cells = []
        for m in models:
            aucs = [r["test_auc"] for r in results if r["dataset"] == d and r["model"] == m]
            cells.append(f"{np.mean(aucs):.4f} ± {np.std(aucs):.4f} (n={len(aucs)})" if aucs else "-")
        lines.append(f"| {d} | {rows['train']}/{rows['valid']}/{rows['test']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="criteo,avazu,frappe,movielens-100k,movielens-1m-part,mind-small-5k")
    p.add_argument("--models", default="lr,fm,deepfm")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: per data set, see DEFAULT_BATCH")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--synthetic-rows", type=int, default=200_000)
    p.add_argument("--out", default="bench/out/zoo_auc.jsonl")
    p.add_argument("--summarise", nargs="+", metavar="JSONL", help="only print the table of earlier runs")
    args = p.parse_args(argv)
    if args.summarise:
        runs = [json.loads(line) for f in args.summarise for line in open(f) if line.strip()]
        print(summarise(runs))
        return
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    results = []
    for name in args.datasets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            data = load_dataset(name, seed, args)
            for model in args.models.split(","):
                cfg = RunConfig(model=model, seed=seed, embedding_dim=args.embedding_dim, batch_size=batch_size_for(name, args),
                                epochs=args.epochs, patience=args.patience, learning_rate=args.learning_rate,
                                out=os.path.join("bench", "out", "models", name, model, str(seed)), verbose=0,
                                export=False)
                run = run_baseline(RunContext(cfg, data, log=None))
                run.update(dataset=name, seed=seed, rows=data.rows, keras=KERAS_MODE)
                results.append(run)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(run) + "\n")
                print(f"{name} seed {seed} {model}: test AUC {run['test_auc']:.4f} logloss {run['test_logloss']:.4f} "
                      f"epochs {run['epochs']} ({run['train_seconds']:.0f}s)", flush=True)
            print(f"  [{name} seed {seed}: {time.perf_counter() - t0:.0f}s]", flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
