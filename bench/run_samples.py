"""``tfmec run --method none,mec,afm,mec+afm,int8,hash,pq`` on every real sample, and a check of each report.

Each sample runs as its own ``tfmec run`` process with the data flags of ``real_data.CLI_DATA_ARGS`` (what a
user types) and otherwise the command's defaults. Then every report is checked:

* ``report.md`` exists and lists every method of the command in its table;
* each figure named in the report opens as a PNG (Pillow), is at least 300 x 200 pixels, is not blank, and
  carries the heading of its report section as its ``Title`` text chunk (the title drawn on the figure);
* the figures' data match ``metrics.json``: one AUC-vs-bytes point per method, the code-usage figure
  drawn from the ``mec`` run's stage-1 statistics, the AFM spectra from both AFM methods' layers. A
  code-usage figure left out because MEC quantised no table (every vocabulary too small) is a note, not
  a problem.

Usage::

    python bench/run_samples.py --out bench/out/samples --results bench/results/run_samples.jsonl
    python bench/run_samples.py --check-only --out bench/out/samples --results ...   # re-check, no runs
    python bench/run_samples.py --check-only --render ...   # first redraw each report from its metrics.json
    python bench/run_samples.py --summarise bench/results/run_samples.jsonl           # the BENCHMARKS table

The run folders (models, SavedModels, ONNX files) stay under ``--out``; ``--keep`` copies each report
(``report.md``, its PNGs and ``metrics.json``) to ``bench/results/samples/<sample>/``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from real_data import CLI_DATA_ARGS, cli_data_args  # noqa: E402

METHODS = "none,mec,afm,mec+afm,int8,hash,pq"


def run_sample(name: str, out: str, methods: str, extra: list, log_dir: str) -> dict:
    """Runs ``tfmec run`` on one sample; returns ``{sample, command, rc, seconds, log}``."""
    cmd = [sys.executable, "-m", "tfmec.cli", "run", *cli_data_args(name), "--method", methods,
           "--out", os.path.join(out, name), *extra]
    log = os.path.join(log_dir, f"{name}.log")
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).returncode
    return {"sample": name, "command": " ".join(cmd[1:]), "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "log": log}


def _png_facts(path: str) -> dict:
    from PIL import Image
    import numpy as np

    with Image.open(path) as png:
        fmt, size, title = png.format, png.size, png.text.get("Title")
        pixels = np.asarray(png.convert("RGB"), dtype=np.float32) / 255.0
    return {"format": fmt, "width": size[0], "height": size[1], "title": title, "pixel_std": float(pixels.std())}


def _expected_figure_data(runs: list) -> dict:
    """What each checked figure must show, from metrics.json (the same selection rules as
    tfmec.report.figures)."""
    from tfmec.report.figures import _afm_layers, _stage1_run

    stage1 = _stage1_run(runs)
    return {
        "auc_vs_bytes": {"points": sorted(r["method"] for r in runs if r.get("embedding_bytes") and
                                          r.get("test_auc") is not None)},
        "code_usage": {"run": stage1["method"] if stage1 else None},
        "afm_spectra": {"layers": sorted({(m, l["name"], l.get("rank")) for m, l in _afm_layers(runs)})},
    }


def check_report(run_dir: str, methods: list) -> dict:
    """Checks one run's report (see the module docstring); returns the facts and a list of problems."""
    problems = []
    report = os.path.join(run_dir, "report.md")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(report) or not os.path.exists(metrics_path):
        return {"problems": [f"missing {'report.md' if not os.path.exists(report) else 'metrics.json'}"]}
    text = open(report, encoding="utf-8").read()
    metrics = json.load(open(metrics_path, encoding="utf-8"))
    runs = metrics["runs"]
    names = [r["method"] for r in runs]
    want = ["baseline" if m == "none" else m for m in methods]
    if sorted(names) != sorted(want):
        problems.append(f"metrics.json holds {names}, the command asked for {want}")
    for m in want:
        if not re.search(rf"^\| {re.escape(m)} \|", text, flags=re.M):
            problems.append(f"report table has no row for {m}")
    figures = re.findall(r"^### (.+)\n\n!\[(.+)\]\((.+\.png)\)", text, flags=re.M)
    facts = {}
    for heading, alt, file in figures:
        f = _png_facts(os.path.join(run_dir, file))
        facts[file] = {"heading": heading, **f}
        if f["format"] != "PNG":
            problems.append(f"{file} is {f['format']}, not PNG")
        if f["title"] != heading or alt != heading:
            problems.append(f"{file}: PNG title {f['title']!r} differs from its report heading {heading!r}")
        if f["width"] < 300 or f["height"] < 200 or f["pixel_std"] < 0.01:
            problems.append(f"{file}: {f['width']}x{f['height']} px, pixel std {f['pixel_std']:.3f} (blank?)")
    notes = []
    left_out = dict(re.findall(r"^- `(.+)\.png` left out: (.+)$", text, flags=re.M))
    expected = _expected_figure_data(runs)
    # A sample whose every vocabulary is too small for PQ to save bytes: MEC rightly quantises nothing,
    # and the report says so instead of drawing an empty code-usage figure.
    no_table = "code_usage" in left_out and expected["code_usage"]["run"] is None
    for stem, why in left_out.items():
        (notes if stem == "code_usage" and no_table else problems).append(f"{stem}.png left out: {why}")
    drawn = {file[:-4] for _, _, file in figures}
    for stem in ("auc_vs_bytes", "code_usage", "afm_spectra", "training_curves"):
        if stem not in drawn and stem not in left_out:
            problems.append(f"{stem}.png is neither in the report nor listed as left out")
    if len(expected["auc_vs_bytes"]["points"]) != len(want):
        problems.append(f"AUC-vs-bytes has points for {expected['auc_vs_bytes']['points']} only")
    if expected["code_usage"]["run"] != "mec" and not no_table:
        problems.append(f"code usage is drawn from {expected['code_usage']['run']}, not mec")
    afm_methods = {m for m, _, _ in expected["afm_spectra"]["layers"]}
    if afm_methods != {"afm", "mec+afm"}:
        problems.append(f"AFM spectra from {sorted(afm_methods)}, expected afm and mec+afm")
    return {"problems": problems, "notes": notes, "figures": facts, "expected": expected,
            "runs": [{k: r.get(k) for k in ("method", "test_auc", "test_logloss", "embedding_bytes", "model_bytes",
                                           "compression_ratio_embeddings", "compression_ratio_model",
                                           "infer_samples_per_s")} for r in runs],
            "rows": metrics.get("rows")}


def keep_report(run_dir: str, dest: str):
    """Copies report.md, its PNGs and metrics.json (no models) to ``dest``."""
    os.makedirs(dest, exist_ok=True)
    for f in os.listdir(run_dir):
        if f in ("report.md", "metrics.json") or f.endswith(".png"):
            shutil.copy2(os.path.join(run_dir, f), os.path.join(dest, f))


def summarise(path: str) -> str:
    """The markdown tables of a results file: one line per sample, then AUC and ratios per method."""
    lines = [json.loads(x) for x in open(path, encoding="utf-8") if x.strip()]
    # one row per sample: the last check, with rc and time of the last line that ran it (a --check-only
    # line has rc None)
    latest, ran = {}, {}
    for x in lines:
        if x.get("kind") == "sample":
            latest[x["sample"]] = x
            if x.get("rc") is not None:
                ran[x["sample"]] = x
    samples = [dict(x, rc=ran.get(n, x).get("rc"), seconds=ran.get(n, x).get("seconds", 0.0)) for n, x in latest.items()]
    out = ["| sample | rows (train / valid / test) | rc | minutes | figures (PNG, title = heading) | problems, notes |",
           "|---|---|---|---|---|---|"]
    for s in samples:
        rows = s.get("rows") or {}
        rows_text = " / ".join(f"{v:,}" for v in rows.values()) if rows else "-"
        figs = s.get("figures") or {}
        ok = sum(1 for f in figs.values() if f["format"] == "PNG" and f["title"] == f["heading"])
        remarks = (s.get("problems") or []) + [f"(expected) {n}" for n in s.get("notes") or []]
        out.append(f"| {s['sample']} | {rows_text} | {s['rc']} | {s['seconds'] / 60:.1f} | {ok} of {len(figs)} | "
                   f"{'; '.join(remarks) or 'none'} |")
    out += ["", "Test AUC (embedding ratio / whole-model ratio against the baseline):", "",
            "| sample | " + " | ".join(m for m in ["baseline", *METHODS.split(",")[1:]]) + " |",
            "|---|" + "---|" * len(METHODS.split(","))]
    for s in samples:
        by = {r["method"]: r for r in s.get("runs") or []}
        cells = []
        for m in ["baseline", *METHODS.split(",")[1:]]:
            r = by.get(m)
            if not r or r.get("test_auc") is None:
                cells.append("-")
                continue
            emb, whole = r.get("compression_ratio_embeddings"), r.get("compression_ratio_model")
            cells.append(f"{r['test_auc']:.4f}" + (f" ({emb:.1f}x / {whole:.1f}x)" if emb and m != "baseline" else ""))
        out.append(f"| {s['sample']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", default=",".join(CLI_DATA_ARGS), help="comma-separated (default: all)")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--out", default=os.path.join(HERE, "out", "samples"))
    p.add_argument("--results", default=os.path.join(HERE, "results", "run_samples.jsonl"))
    p.add_argument("--keep", action="store_true", help="copy each report to bench/results/samples/<sample>/")
    p.add_argument("--check-only", action="store_true", help="check existing run folders, run nothing")
    p.add_argument("--render", action="store_true",
                   help="with --check-only: rewrite each report.md and its figures from metrics.json first")
    p.add_argument("--summarise", metavar="JSONL")
    p.add_argument("extra", nargs="*", help="further tfmec run flags, after --")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return 0
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfmec"], capture_output=True, text=True,
                           cwd=HERE).stdout.strip()
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "machine", "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                             "nproc": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version(),
                             "commit": commit, "tfmec_dirty": bool(dirty), "methods": args.methods,
                             "extra": args.extra}) + "\n")
    failed = 0
    for name in [s for s in args.samples.split(",") if s]:
        if args.check_only:
            entry = {"sample": name, "rc": None, "seconds": 0.0}
            if args.render:
                from tfmec.report.markdown import write_report

                run_dir = os.path.join(args.out, name)
                with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
                    write_report(json.load(fh), run_dir)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            entry = run_sample(name, args.out, args.methods, args.extra, args.out)
        check = check_report(os.path.join(args.out, name), args.methods.split(","))
        entry.update(kind="sample", commit=commit, **check)
        if args.keep and not check["problems"]:
            keep_report(os.path.join(args.out, name), os.path.join(HERE, "results", "samples", name))
        failed += bool(entry["rc"]) or bool(check["problems"])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {entry['rc']}, {entry['seconds']:.0f} s, "
              f"problems: {check['problems'] or 'none'}", flush=True)
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
