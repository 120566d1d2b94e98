"""Issue 7's benchmark: a KerasTuner search over MEC's hyperparameters, then its best trial against the
default configuration over several seeds, on real data.

Per dataset:

1. **Search** (seed ``--search-seed``): :class:`tfmec.tuning.MECTuner` runs ``--trials`` trials (random
   search by default) over alpha, beta, K in {16, 64, 256} and M in {2, 4, 8}, codes bit-packed at
   ceil(log2 K) bits, under a memory budget equal to the compressed embedding bytes of the default
   configuration (M=4, K=256, uint8 codes): the search must find a configuration no larger than the
   default. The objective is validation AUC; test data is never looked at during the search. The
   tuner's table goes to ``bench/out/tune/<dataset>/results.md`` and is copied into the JSON output.
2. **Best vs default** (seeds ``--seeds``): per seed, the baseline is trained once, then MEC with the
   default configuration and MEC with the best trial's configuration are trained from that baseline on
   the same split; one JSON line per run in ``--out`` with ``config`` = ``"default"`` or ``"best"``.

Summary: ``python bench/tune_search.py --summarise bench/results/tune_*.jsonl``.

Example (the recorded run)::

    python bench/tune_search.py --datasets frappe,criteo --trials 12 --seeds 0,1,2,3,4
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from real_data import open_any  # noqa: E402
from zoo_auc import DEFAULT_BATCH  # noqa: E402

from tfmec.backend import KERAS_MODE  # noqa: E402
from tfmec.data import load  # noqa: E402
from tfmec.experiment import METHODS, RunConfig, RunContext  # noqa: E402
from tfmec.tuning import MECTuner  # noqa: E402
from tfmec.tuning.budget import EmbeddingTables, compressed_embedding_bytes  # noqa: E402

SEARCHED = ("alpha", "beta", "codewords", "subspaces", "bits")


def base_config(dataset: str, model: str, seed: int, out: str) -> RunConfig:
    """The run settings shared by the search and the seeds (those of bench/methods_auc.py)."""
    return RunConfig(model=model, seed=seed, batch_size=DEFAULT_BATCH.get(dataset, 1024), epochs=30, patience=3,
                     out=out, verbose=0, export=False)


def search(dataset: str, model: str, trials: int, oracle: str, seed: int) -> dict:
    """Runs the tuner on ``dataset``; returns the budget, the best trial's settings and the trial table."""
    out = os.path.join(ROOT, "bench", "out", "tune", dataset)
    cfg = base_config(dataset, model, seed, out)
    reader, schema = open_any(dataset, 0)
    data = load(reader, schema, seed=seed, batch_size=cfg.batch_size, progress=False)
    tables = EmbeddingTables.of_model(RunContext(cfg, data, None).build())
    budget = compressed_embedding_bytes(tables, num_subspaces=cfg.subspaces, num_codewords=cfg.codewords,
                                        bits=cfg.bits, contrastive=cfg.beta > 0)  # the default configuration's compressed bytes
    t0 = time.perf_counter()
    tuner = MECTuner(cfg, "mec", oracle=oracle, max_trials=trials, data=data, directory=out, pack_codes=True,
                     memory_budget_bytes=budget, log=lambda msg: print("   ", msg, flush=True))
    tuner.search(verbose=0)
    best = tuner.best_record()
    if best is None:
        raise RuntimeError(f"{dataset}: no trial was accepted under the budget of {budget:,} bytes")
    best_cfg = tuner.best_config()
    return {"dataset": dataset, "model": model, "trials": trials, "oracle": oracle, "search_seed": seed,
            "memory_budget_bytes": budget, "search_seconds": time.perf_counter() - t0,
            "default": {k: getattr(cfg, k) for k in SEARCHED},
            "best": {k: getattr(best_cfg, k) for k in SEARCHED},
            "best_trial": best, "trials_table": tuner.markdown(),
            "rejected": sum(r.get("status") == "rejected" for r in tuner.results)}


def best_vs_default(dataset: str, model: str, found: dict, seeds, out_path: str) -> None:
    """Baseline, MEC (default) and MEC (best) per seed on one split; appends JSON lines to ``out_path``."""
    for seed in seeds:
        t0 = time.perf_counter()
        reader, schema = open_any(dataset, 0)
        cfg = base_config(dataset, model, seed, os.path.join(ROOT, "bench", "out", "tune_seeds", dataset, str(seed)))
        data = load(reader, schema, seed=seed, batch_size=cfg.batch_size, progress=False)
        log = lambda msg: print("   ", msg, flush=True)  # noqa: E731
        default_ctx = RunContext(cfg, data, log)
        rows = [dict(METHODS["none"](default_ctx), config="baseline"),
                dict(METHODS["mec"](default_ctx), config="default")]
        best_cfg = dataclasses.replace(cfg, **found["best"], out=cfg.out + "-best")
        best_ctx = RunContext(best_cfg, data, log, baseline=default_ctx.baseline())
        rows.append(dict(METHODS["mec"](best_ctx), config="best"))
        with open(out_path, "a") as fh:
            for r in rows:
                r.update(dataset=dataset, seed=seed, keras=KERAS_MODE, settings=found[r["config"]]
                         if r["config"] != "baseline" else {})
                r.pop("history", None)
                fh.write(json.dumps(r, default=float) + "\n")
        print(f"  [{dataset} seed {seed}: " + ", ".join(f"{r['config']} {r['test_auc']:.4f}" for r in rows)
              + f"; {time.perf_counter() - t0:.0f}s]", flush=True)


def summarise(lines: list[dict]) -> str:
    """Markdown: per dataset, the search (budget, best settings) and test AUC over seeds of the three."""
    out = []
    searches = [r for r in lines if r.get("kind") == "search"]
    runs = [r for r in lines if r.get("kind") != "search"]
    for s in searches:
        ds = s["dataset"]
        out.append(f"**{ds}** ({s['model']}, {s['trials']} trials, {s['oracle']} search on seed {s['search_seed']}, "
                   f"{s['rejected']} rejected over the budget of {s['memory_budget_bytes']:,} bytes, "
                   f"{s['search_seconds']:.0f} s): default {s['default']}, best {s['best']} "
                   f"(val AUC {s['best_trial'].get('val_auc', float('nan')):.4f})")
        out.append("")
        table = [line for line in s["trials_table"].splitlines() if not line.startswith("# ")]
        out += ["Trials (validation AUC on the search seed's split):", *table, ""]
        out.append("Test AUC over seeds, each seed's baseline and both MEC configurations trained on the same split:")
        out.append("")
        out.append("| config | seeds | test AUC mean ± sd | Δ vs baseline | emb bytes | emb ratio |")
        out.append("|---|---|---|---|---|---|")
        for config in ("baseline", "default", "best"):
            rs = [r for r in runs if r["dataset"] == ds and r["config"] == config]
            if not rs:
                continue
            aucs = [r["test_auc"] for r in rs]
            base = {r["seed"]: r["test_auc"] for r in runs if r["dataset"] == ds and r["config"] == "baseline"}
            deltas = [r["test_auc"] - base[r["seed"]] for r in rs if r["seed"] in base]
            sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            out.append(f"| {config} | {len(rs)} | {statistics.mean(aucs):.4f} ± {sd:.4f} | "
                       f"{statistics.mean(deltas):+.4f} | {int(statistics.median(r['embedding_bytes'] for r in rs)):,} | "
                       f"{statistics.median(r.get('compression_ratio_embeddings', 1.0) for r in rs):.1f}x |")
        best = {r["seed"]: r["test_auc"] for r in runs if r["dataset"] == ds and r["config"] == "best"}
        default = {r["seed"]: r["test_auc"] for r in runs if r["dataset"] == ds and r["config"] == "default"}
        paired = sorted(set(best) & set(default))
        if paired:
            diff = [best[k] - default[k] for k in paired]
            p = _wilcoxon_p(diff)
            out.append(f"Best minus default, paired by seed: {statistics.mean(diff):+.4f} test AUC "
                       f"(better on {sum(d > 0 for d in diff)} of {len(diff)} seeds; Wilcoxon p = {p})")
        out.append("")
    return "\n".join(out)


def _wilcoxon_p(diff) -> str:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy), as text."""
    if len(diff) < 2 or all(d == 0 for d in diff):
        return "-"
    from scipy.stats import wilcoxon

    return f"{wilcoxon(diff).pvalue:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="frappe,criteo")
    p.add_argument("--model", default="deepfm")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--oracle", default="random", choices=["random", "bayesian", "hyperband"])
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--summarise", nargs="+", metavar="JSONL")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise([json.loads(line) for f in args.summarise for line in open(f) if line.strip()]))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out_dir, exist_ok=True)
    for dataset in args.datasets.split(","):
        out_path = os.path.join(args.out_dir, f"tune_{dataset}.jsonl")
        found = search(dataset, args.model, args.trials, args.oracle, args.search_seed)
        with open(out_path, "a") as fh:
            fh.write(json.dumps(dict(found, kind="search", keras=KERAS_MODE), default=float) + "\n")
        print(found["trials_table"], flush=True)
        best_vs_default(dataset, args.model, found, seeds, out_path)
    print(summarise([json.loads(line) for d in args.datasets.split(",")
                     for line in open(os.path.join(args.out_dir, f"tune_{d}.jsonl")) if line.strip()]))


if __name__ == "__main__":
    main()
