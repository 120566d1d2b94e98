"""The AUC-vs-bytes frontier on the real samples (issue 19): every budgeted method at each ratio.

Each (sample, seed) is one ``tfmec run <sample's data flags> --method none,<methods> --frontier <ratios>``
process (what a user types; the baseline is trained once and every method is trained again at each
ratio's byte budget: the uncompressed embedding bytes / ratio). The frontier points of its
``metrics.json`` go to ``--results`` as JSON lines; ``--summarise`` prints the BENCHMARKS table: per
sample and ratio the mean test AUC of each method over the seeds, its delta to the baseline, and
whether the budgeted MEC is at or above every competitor (paired per seed: the number of seeds where
it is).

Usage::

    python bench/frontier.py --samples movielens-100k,frappe --seeds 0,1,2 --ratios 8,16,32,64 \\
        --results bench/results/frontier.jsonl
    python bench/frontier.py --summarise bench/results/frontier.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from real_data import cli_data_args, latest_results, run_cli  # noqa: E402

METHODS = "mec,pq,hash,qr,int8,int4"


def run_one(sample: str, seed: int, ratios: str, methods: str, out: str, extra: list) -> dict:
    """One ``tfmec run`` with ``--frontier``; returns ``{sample, seed, command, rc, seconds, points}``."""
    row = run_cli([*cli_data_args(sample), "--method", f"none,{methods}", "--frontier", ratios, "--seed", str(seed),
                   "--no-export", "--quiet", *extra], os.path.join(out, sample, f"seed{seed}"))
    metrics = row.pop("metrics")
    return {"sample": sample, "seed": seed, **row, "points": metrics.get("frontier", []) if metrics else []}


def summarise(path: str) -> str:
    """The markdown table of a results file (the last line of each (sample, seed) counts)."""
    import numpy as np

    latest = latest_results(path, "sample", "seed")
    out = []
    for sample in sorted({s for s, _ in latest}):
        rows = [r for (s, _), r in sorted(latest.items()) if s == sample]
        seeds = [r["seed"] for r in rows]
        by = {}  # (method, ratio) -> {seed: point}
        for r in rows:
            for p in r["points"]:
                by.setdefault((p["method"], p["ratio"]), {})[r["seed"]] = p
        base = by.get(("baseline", 1.0), {})
        methods = sorted({m for m, _ in by if m != "baseline"}, key=lambda m: (m != "mec", m))
        ratios = sorted({q for m, q in by if m != "baseline"})
        base_auc = np.mean([base[s]["test_auc"] for s in seeds if s in base])
        out += [f"**{sample}** ({len(seeds)} seeds: {', '.join(map(str, seeds))}; baseline test AUC {base_auc:.4f})", "",
                "| ratio | " + " | ".join(methods) + " | mec >= all competitors (seeds) |",
                "|---|" + "---|" * (len(methods) + 1)]
        for q in ratios:
            cells, wins = [], 0
            for m in methods:
                pts = by.get((m, q), {})
                aucs = [pts[s]["test_auc"] for s in seeds if s in pts and pts[s].get("test_auc") is not None]
                if not aucs:
                    cells.append("cannot reach")
                    continue
                delta = np.mean([pts[s]["test_auc"] - base[s]["test_auc"] for s in seeds
                                 if s in pts and pts[s].get("test_auc") is not None and s in base])
                byts = np.mean([pts[s]["embedding_bytes"] for s in seeds if s in pts and pts[s].get("embedding_bytes")])
                cells.append(f"{np.mean(aucs):.4f} ({delta:+.4f}; {byts:,.0f} B)")
            for s in seeds:
                mec = by.get(("mec", q), {}).get(s, {}).get("test_auc")
                others = [by[(m, q)][s]["test_auc"] for m in methods if m != "mec" and s in by.get((m, q), {})
                          and by[(m, q)][s].get("test_auc") is not None]
                wins += int(mec is not None and all(mec >= o for o in others))
            out.append(f"| {q:g}x | " + " | ".join(cells) + f" | {wins}/{len(seeds)} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", default="movielens-100k")
    p.add_argument("--seeds", default="0")
    p.add_argument("--ratios", default="8,16,32,64")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--out", default=os.path.join(HERE, "out", "frontier"))
    p.add_argument("--results", default=os.path.join(HERE, "results", "frontier.jsonl"))
    p.add_argument("--summarise", default=None, metavar="RESULTS")
    p.add_argument("extra", nargs="*", help="more tfmec run flags after --")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return
    for sample in args.samples.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_one(sample, seed, args.ratios, args.methods, args.out, args.extra)
            print(json.dumps({k: v for k, v in row.items() if k != "points"}), flush=True)
            with open(args.results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
