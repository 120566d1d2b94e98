"""Test AUC and bytes of compression methods against the uncompressed baseline, over seeds.

    python bench/methods_auc.py --datasets frappe --model deepfm --methods none,mec --seeds 0,1,2,3,4

Each (dataset, seed) loads the data once and runs the methods through ``tfmec.experiment`` (the
code path of ``tfmec run``), so the baseline is trained once and MEC's stage 1 reads its tables.
Extra ``--set key=value`` pairs override ``RunConfig`` fields (e.g. ``--set codewords=16``). Export
(SavedModel + ONNX) is off unless ``--set export=1``: bench/export_parity.py measures it.
After each seed the prediction throughput of all its models is measured side by side (batch 4096,
9 rounds; ``--throughput-rounds 0`` skips it). ``--summarise FILES --table afm`` prints issue 5's
table (MLP and cross-network parameters, model bytes, throughput ratio). Writes one JSON line per
run and prints mean +- std of AUC, bytes and ratios per method, with the Wilcoxon signed-rank
p-value of each method's AUC against the baseline's (paired by seed).
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
from zoo_auc import DEFAULT_BATCH  # noqa: E402

from tfmec.backend import KERAS_MODE  # noqa: E402
from tfmec.data import load  # noqa: E402
from tfmec.experiment import METHODS, RunConfig, RunContext  # noqa: E402


def _number_or_text(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _parse_sets(pairs):
    fields = RunConfig.setting_fields()
    defaults = RunConfig()
    out = {}
    for pair in pairs or []:
        key, value = pair.split("=", 1)
        if key not in fields:
            raise SystemExit(f"unknown RunConfig field {key!r}")
        current = getattr(defaults, key)
        if isinstance(current, bool):  # bool("0") is True: parse the words
            if value.strip().lower() not in _BOOL_WORDS:
                raise SystemExit(f"{key}={value!r}: give one of {sorted(_BOOL_WORDS)}")
            out[key] = _BOOL_WORDS[value.strip().lower()]
        else:
            out[key] = type(current)(value) if current is not None else _number_or_text(value)
    return out


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _against_baseline(rs: list[dict], base: dict, is_baseline: bool) -> tuple[float, str]:
    """Mean AUC difference of runs ``rs`` against the baseline run of the same seed (``base``:
    seed -> run), and the Wilcoxon signed-rank p-value as text ('-' below 5 pairs or for the baseline)."""
    from scipy.stats import wilcoxon

    paired = [(r["test_auc"], base[r["seed"]]["test_auc"]) for r in rs if r["seed"] in base]
    delta = np.mean([a - b for a, b in paired]) if paired else float("nan")
    if is_baseline or len(paired) < 5:
        return delta, "-"
    return delta, f"{wilcoxon([a for a, _ in paired], [b for _, b in paired]).pvalue:.3f}"


def summarise(runs: list[dict]) -> str:
    """Markdown table per dataset and method: AUC mean +- std, bytes, ratio, p-value vs baseline. A method
    run under several ``--set`` settings gets one row per setting."""
    settings_of = {}  # (dataset, method) -> the distinct --set settings it ran under
    for r in runs:
        settings_of.setdefault((r["dataset"], r["method"]), set()).add(str(sorted(r.get("settings", {}).items())))

    def label(r):
        if r["method"] == "baseline" or len(settings_of[(r["dataset"], r["method"])]) < 2:
            return r["method"]
        return r["method"] + " [" + " ".join(f"{k}={v}" for k, v in sorted(r.get("settings", {}).items())) + "]"

    lines = ["| dataset | method | n | test AUC | delta vs baseline | Wilcoxon p | embedding bytes | emb. ratio | model ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in dict.fromkeys(r["dataset"] for r in runs):
        base = {r["seed"]: r for r in runs if r["dataset"] == d and r["method"] == "baseline"}
        for m in dict.fromkeys(label(r) for r in runs if r["dataset"] == d):
            rs = [r for r in runs if r["dataset"] == d and label(r) == m]
            auc = np.array([r["test_auc"] for r in rs])
            delta, p = _against_baseline(rs, base, m == "baseline")
            ratio = np.mean([r.get("compression_ratio_embeddings", 1.0) for r in rs])
            mratio = np.mean([r.get("compression_ratio_model", 1.0) for r in rs])
            lines.append(f"| {d} | {m} | {len(rs)} | {auc.mean():.4f} ± {auc.std():.4f} | {delta:+.4f} | {p} | "
                         f"{int(np.mean([r['embedding_bytes'] for r in rs])):,} | {ratio:.1f}x | {mratio:.1f}x |")
    return "\n".join(lines)


def _add_side_by_side_throughput(ctx, seed_runs, batch_size, rounds):
    """Prediction throughput of every model of the seed, measured side by side (models alternated
    within each round) on one ``batch_size`` batch of the test split: ``side_by_side_rows_per_s`` and
    ``throughput_ratio`` (against the baseline of the same rounds) in each run."""
    from tfmec.evaluation import throughput_side_by_side

    models = {r["method"]: ctx.models[r["method"]][0] for r in seed_runs}
    speeds = throughput_side_by_side(models, ctx.data.test, batch_size=batch_size, rounds=rounds)
    for r in seed_runs:
        r["side_by_side_rows_per_s"] = speeds[r["method"]]
        r["side_by_side_batch"] = batch_size
        if "baseline" in speeds:
            r["throughput_ratio"] = speeds[r["method"]] / speeds["baseline"]
    print("    side-by-side rows/s at batch", batch_size, {k: round(v) for k, v in speeds.items()}, flush=True)


def summarise_afm(runs: list[dict]) -> str:
    """Markdown table per (dataset, model, setting) and method for AFM (issue 5): AUC, delta and Wilcoxon p
    against the baseline, MLP (Dense) parameters and their ratio, whole-model bytes ratio, and the
    median side-by-side throughput ratio against the baseline."""
    lines = ["| dataset | model | setting | method | n | test AUC | delta vs baseline | Wilcoxon p | MLP params "
             "| MLP ratio | cross-net ratio | model bytes | model ratio | throughput ratio (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def setting(r):  # what distinguishes the runs of one data set and model
        st = r.get("settings", {})
        return (f"AFM {st.get('afm_energy', '0.9')}/{st.get('afm_param_budget', '-')}, "
                f"MEC M={st.get('subspaces', '4')} K={st.get('codewords', '256')} head {st.get('head_rows', '0')}")

    groups = dict.fromkeys((r["dataset"], r["model"], setting(r)) for r in runs)
    for d, model, label in groups:
        rs_all = [r for r in runs if r["dataset"] == d and r["model"] == model and setting(r) == label]
        base = {r["seed"]: r for r in rs_all if r["method"] == "baseline"}
        base_mlp = [r["afm"]["dense_params_before"] for r in rs_all if "afm" in r]
        for m in dict.fromkeys(r["method"] for r in rs_all):
            rs = [r for r in rs_all if r["method"] == m]
            auc = np.array([r["test_auc"] for r in rs])
            delta, p = _against_baseline(rs, base, m == "baseline")
            if "afm" in rs[0]:
                mlp = np.mean([r["afm"]["dense_params_after"] for r in rs])
                mlp_ratio = f"{np.mean([r['afm']['dense_params_before'] / r['afm']['dense_params_after'] for r in rs]):.1f}x"
            elif base_mlp:
                mlp, mlp_ratio = np.mean(base_mlp), "1.0x"
            else:
                mlp, mlp_ratio = float("nan"), "-"
            cross = [r["afm"]["cross_params_before"] / r["afm"]["cross_params_after"] for r in rs
                     if r.get("afm", {}).get("cross_params_after")]
            cross_text = f"{np.mean(cross):.1f}x" if cross else "-"
            mratio = np.mean([r.get("compression_ratio_model", 1.0) for r in rs])
            tr = [r["throughput_ratio"] for r in rs if "throughput_ratio" in r]
            tr_text = f"{np.median(tr):.2f}" if tr else "-"
            lines.append(f"| {d} | {model} | {label} | {m} | {len(rs)} | {auc.mean():.4f} ± {auc.std():.4f} | {delta:+.4f} | {p} | "
                         f"{mlp:,.0f} | {mlp_ratio} | {cross_text} | {int(np.mean([r['model_bytes'] for r in rs])):,} | "
                         f"{mratio:.1f}x | {tr_text} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="frappe")
    p.add_argument("--model", default="deepfm")
    p.add_argument("--methods", default="none,mec")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--set", nargs="*", default=[], help="RunConfig overrides key=value")
    p.add_argument("--synthetic-rows", type=int, default=200_000)
    p.add_argument("--out", default="bench/out/methods_auc.jsonl")
    p.add_argument("--throughput-rounds", type=int, default=9,
                   help="rounds of the side-by-side prediction throughput per seed (0: skip)")
    p.add_argument("--throughput-batch", type=int, default=4096)
    p.add_argument("--summarise", nargs="+", metavar="JSONL")
    p.add_argument("--table", choices=["mec", "afm"], default="mec", help="the --summarise table's columns")
    args = p.parse_args(argv)
    if args.summarise:
        loaded = [json.loads(line) for f in args.summarise for line in open(f) if line.strip()]
        print((summarise_afm if args.table == "afm" else summarise)(loaded))
        return
    overrides = _parse_sets(args.set)
    methods = args.methods.split(",")
    runs = []
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for name in args.datasets.split(","):
        batch = overrides.get("batch_size", DEFAULT_BATCH.get(name, 1024))
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            reader, schema = open_any(name, args.synthetic_rows)
            data = load(reader, schema, seed=seed, batch_size=batch, progress=False)
            cfg = RunConfig(**{**dict(model=args.model, seed=seed, batch_size=batch, epochs=30, patience=3,
                                      out=os.path.join("bench", "out", "methods", name, str(seed)), verbose=0,
                                      export=False),
                               **overrides})
            ctx = RunContext(cfg, data, log=lambda msg: print("   ", msg, flush=True))
            seed_runs = []
            for method in methods:
                run = METHODS[method](ctx)
                run.update(dataset=name, seed=seed, keras=KERAS_MODE, settings={k: str(v) for k, v in overrides.items()})
                seed_runs.append(run)
                print(f"{name} seed {seed} {run['method']}: AUC {run['test_auc']:.4f} emb bytes {run['embedding_bytes']:,} "
                      f"ratio {run.get('compression_ratio_embeddings', 1.0):.1f}x", flush=True)
            if args.throughput_rounds > 0:
                _add_side_by_side_throughput(ctx, seed_runs, args.throughput_batch, args.throughput_rounds)
            runs.extend(seed_runs)
            with open(args.out, "a") as fh:
                for run in seed_runs:
                    fh.write(json.dumps(run, default=float) + "\n")
            print(f"  [{name} seed {seed}: {time.perf_counter() - t0:.0f}s]", flush=True)
    print(summarise(runs))


if __name__ == "__main__":
    main()
