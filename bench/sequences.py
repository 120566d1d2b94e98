"""Behaviour sequences on the real samples (issue 20): does the history earn its place, and what do
MEC and mec+afm do to DIN?

Per (sample, seed), two ``tfmec run`` processes (what a user types):

- ``din``: ``<sample's flags> --model din --method none,mec,mec+afm --target-ratio 8`` (the history
  attends to the candidate through the shared item table; MEC fits the tables in 1/8 of their float
  bytes, the shared table counted and compressed once);
- ``deepfm``: ``<sample's flags> --model deepfm --drop history --method none`` (the model without
  the history, as tfmec read these samples before: MIND keeps its log2 history-length bucket);
- ``deepfm-history`` (``--models deepfm-history``): ``--model deepfm --method none`` with the history
  mean-pooled, which tells the history's value from DIN's architecture.

Their ``metrics.json`` runs go to ``--results`` as JSON lines. ``--summarise`` prints the BENCHMARKS
tables, paired per seed with a two-sided Wilcoxon signed-rank test (scipy): (a) DIN with the history
against DeepFM without it; (b) MEC and mec+afm on DIN: embedding and whole-model ratios and test AUC
against the uncompressed DIN. Throughput (c) is ``bench/budget_throughput.py --sample NAME --run
<a din run folder> --methods baseline,mec,mec+afm``.

    python bench/sequences.py --samples mind-small-5k,movielens-1m-din --seeds 0,1,2,3,4
    python bench/sequences.py --summarise bench/results/sequences.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from real_data import cli_data_args, latest_results, run_cli  # noqa: E402

MODELS = {
    "din": ["--model", "din", "--method", "none,mec,mec+afm", "--target-ratio", "8"],
    "deepfm": ["--model", "deepfm", "--drop", "history", "--method", "none"],
    # the history mean-pooled into DeepFM: tells the history's value from DIN's architecture
    "deepfm-history": ["--model", "deepfm", "--method", "none"],
}


KEEP = ("method", "model", "test_auc", "test_logloss", "embedding_bytes", "model_bytes",
        "compression_ratio_embeddings", "compression_ratio_model", "train_seconds", "infer_samples_per_s")


def run_one(sample: str, seed: int, model: str, out: str, extra: list) -> dict:
    """One ``tfmec run``; returns ``{sample, seed, model, command, rc, seconds, commit, runs}``."""
    row = run_cli([*cli_data_args(sample), *MODELS[model], "--seed", str(seed), "--no-export", "--quiet", *extra],
                  os.path.join(out, sample, model, f"seed{seed}"))
    metrics = row.pop("metrics")
    runs = [{k: r[k] for k in KEEP if k in r} for r in metrics["runs"]] if metrics else []
    return {"sample": sample, "seed": seed, "model": model, **row, "runs": runs}


def _p(diffs) -> str:
    from scipy.stats import wilcoxon

    if len(diffs) < 2 or all(d == 0 for d in diffs):
        return "-"
    return f"{wilcoxon(diffs).pvalue:.3f}"


def summarise(path: str) -> str:
    """The markdown tables of a results file (the last line of each (sample, model, seed) counts)."""
    import numpy as np

    latest = {key: {r["method"]: r for r in row["runs"]}
              for key, row in latest_results(path, "sample", "model", "seed").items()}
    out = []
    for sample in sorted({s for s, _, _ in latest}):
        din = {seed: r for (s, m, seed), r in latest.items() if s == sample and m == "din"}
        dfm = {seed: r for (s, m, seed), r in latest.items() if s == sample and m == "deepfm"}
        dfh = {seed: r for (s, m, seed), r in latest.items() if s == sample and m == "deepfm-history"}
        out.append(f"**{sample}**")
        out.append("")
        rows = []
        for label, first, second in (("DIN with history - DeepFM without", din, dfm),
                                     ("DeepFM with history (mean-pooled) - DeepFM without", dfh, dfm),
                                     ("DIN with history - DeepFM with history", din, dfh)):
            paired = sorted(set(first) & set(second))
            if not paired:
                continue
            a = [first[s]["baseline"]["test_auc"] for s in paired]
            b = [second[s]["baseline"]["test_auc"] for s in paired]
            diffs = [x - y for x, y in zip(a, b)]
            rows.append(f"| {label} | {','.join(map(str, paired))} | {np.mean(a):.4f} | {np.mean(b):.4f} | "
                        f"{np.mean(diffs):+.4f} ({min(diffs):+.4f}, {max(diffs):+.4f}) | "
                        f"{sum(d > 0 for d in diffs)}/{len(diffs)} | {_p(diffs)} |")
        if rows:
            out += ["| comparison | seeds | first | second | difference (mean, min, max) | first better | Wilcoxon p |",
                    "|---|---|---|---|---|---|---|", *rows, ""]
        seeds = sorted(din)
        if seeds:
            out += ["| method | seeds | test AUC | delta to DIN (mean, min, max) | embedding ratio | model ratio | Wilcoxon p |",
                    "|---|---|---|---|---|---|---|"]
            for method in ("baseline", "mec", "mec+afm"):
                have = [s for s in seeds if method in din[s]]
                if not have:
                    continue
                auc = [din[s][method]["test_auc"] for s in have]
                d = [din[s][method]["test_auc"] - din[s]["baseline"]["test_auc"] for s in have]
                emb = [din[s]["baseline"]["embedding_bytes"] / din[s][method]["embedding_bytes"] for s in have]
                mod = [din[s]["baseline"]["model_bytes"] / din[s][method]["model_bytes"] for s in have]
                delta = "-" if method == "baseline" else f"{np.mean(d):+.4f} ({min(d):+.4f}, {max(d):+.4f})"
                out.append(f"| {'din' if method == 'baseline' else method} | {len(have)} | {np.mean(auc):.4f} | {delta} | "
                           f"{np.mean(emb):.1f}x | {np.mean(mod):.1f}x | {'-' if method == 'baseline' else _p(d)} |")
            out.append("")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", default="mind-small-5k,movielens-1m-din")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--models", default="din,deepfm")
    p.add_argument("--out", default=os.path.join(HERE, "out", "sequences"))
    p.add_argument("--results", default=os.path.join(HERE, "results", "sequences.jsonl"))
    p.add_argument("--summarise", default=None, metavar="RESULTS")
    p.add_argument("extra", nargs="*", help="more tfmec run flags after --")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return
    for seed in (int(s) for s in args.seeds.split(",")):  # seed-major: every sample gets its pairs early
        for sample in args.samples.split(","):
            for model in args.models.split(","):
                row = run_one(sample, seed, model, args.out, args.extra)
                print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
                with open(args.results, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
