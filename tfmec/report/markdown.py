"""``DIR/report.md``: the table of a ``tfmec run`` and its figures (PNG files beside it)."""
from __future__ import annotations

import os

from tfmec.api_export import export_value, tfmec_export
from tfmec.report.figures import FIGURES, NoData

REPORT_FILE = "report.md"
export_value("tfmec.report.REPORT_FILE", REPORT_FILE, doc="the report's file name in the run folder")


def _ratio(run: dict, key: str, base: dict | None) -> float | None:
    """The run's compression ratio ``key`` (embeddings or model), else computed against ``base``."""
    name = "compression_ratio_embeddings" if key == "embedding_bytes" else "compression_ratio_model"
    if run.get(name) is not None:
        return float(run[name])
    if base is not None and run.get(key) and base.get(key):
        return base[key] / run[key]
    return None


def training_seconds(run: dict) -> float | None:
    """Seconds the method took to train: ``train_seconds`` plus MEC's ``stage1_seconds`` when present."""
    if run.get("train_seconds") is None:
        return None
    return float(run["train_seconds"]) + float(run.get("stage1_seconds") or 0.0)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@tfmec_export("tfmec.report.results_table")
def results_table(runs: list) -> str:
    """The main table as Markdown: method, test AUC, logloss, embedding and model bytes, their ratios
    against the baseline, prediction throughput and training time."""
    base = next((r for r in runs if r.get("method") == "baseline"), None)
    lines = ["| method | test AUC | test logloss | embedding bytes | model bytes | embedding ratio | model ratio "
             "| predictions/s | training s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        emb, mod = _ratio(r, "embedding_bytes", base), _ratio(r, "model_bytes", base)
        lines.append("| " + " | ".join([
            str(r.get("method", "?")),
            _fmt(r.get("test_auc"), ".4f"),
            _fmt(r.get("test_logloss"), ".4f"),
            _fmt(r.get("embedding_bytes"), ",d"),
            _fmt(r.get("model_bytes"), ",d"),
            "-" if emb is None else f"{emb:.1f}x",
            "-" if mod is None else f"{mod:.1f}x",
            _fmt(r.get("infer_samples_per_s"), ",.0f"),
            _fmt(training_seconds(r), ".1f"),
        ]) + " |")
    return "\n".join(lines)


def export_table(runs: list) -> str | None:
    """SavedModel / ONNX sizes and parity per method (None when nothing was exported)."""
    exported = [r for r in runs if r.get("saved_model_bytes") is not None]
    if not exported:
        return None
    lines = ["| method | SavedModel bytes | max abs diff (SavedModel) | ONNX bytes | max abs diff (ONNX) |",
             "|---|---:|---:|---:|---:|"]
    for r in exported:
        lines.append(f"| {r.get('method')} | {_fmt(r.get('saved_model_bytes'), ',d')} | "
                     f"{_fmt(r.get('saved_model_max_abs_diff'), '.2e')} | {_fmt(r.get('onnx_bytes'), ',d')} | "
                     f"{_fmt(r.get('onnx_max_abs_diff'), '.2e')} |")
    return "\n".join(lines)


def method_notes(runs: list) -> list:
    """One line per method setting worth stating (hash budget, int8 scales, MEC settings, AFM ranks)."""
    notes = []
    for r in runs:
        m = r.get("method")
        if isinstance(r.get("hash"), dict):
            h = r["hash"]
            notes.append(f"`{m}`: budget {h['budget_bytes']:,} bytes (from {h['budget_source']}); "
                         f"{len(h['hashed_tables'])} table(s) hashed into {h['bucket_cap']:,} rows each, "
                         f"the others kept whole; trained from scratch")
        for key in ("int8", "int4"):
            if isinstance(r.get(key), dict):
                q = r[key]
                sized = (f"budget {q['budget_bytes']:,} bytes: ids of {len(q['hashed_tables'])} table(s) hashed into "
                         f"{q['bucket_cap']:,} rows (the hashing trick trained first), then "
                         if q.get("budget_bytes") and q.get("hashed_tables") else "")
                notes.append(f"`{m}`: {sized}{q['tables']} table(s) {key} ({q['per_row_tables']} with a step per "
                             f"row, the narrower ones one step per table); largest |error| {q['max_abs_error']:.2e}; "
                             f"no training after quantisation")
        if isinstance(r.get("qr"), dict):
            q = r["qr"]
            notes.append(f"`{m}`: quotient-remainder tables, budget {q['budget_bytes']:,} bytes (from "
                         f"{q['budget_source']}); {len(q['qr_tables'])} table(s) split, row cap {q['row_cap']:,}; "
                         f"trained from scratch")
        if isinstance(r.get("budget"), dict):
            b = r["budget"]
            kinds = {}
            for tiers in b["tables"].values():
                for t in tiers:
                    kinds[t["kind"]] = kinds.get(t["kind"], 0) + int(t["rows"])
            rows = ", ".join(f"{n:,} ids {k}" for k, n in kinds.items())
            notes.append(f"`{m}`: memory budget {b['budget_bytes']:,} bytes, {b['bytes']:,} used; popularity tiers "
                         f"over {len(b['tables'])} table(s): {rows} (popularity exponent {b['alpha']}, chosen on "
                         f"validation AUC); the tiers of each table are in metrics.json (`budget`)")
        if isinstance(r.get("mec"), dict) and m != "mec+afm" and not isinstance(r.get("budget"), dict):
            s = r["mec"]
            quantised = f"{len(r['stage1'])} table(s) quantised, " if isinstance(r.get("stage1"), dict) else ""
            notes.append(f"`{m}`: {quantised}M={s.get('subspaces')}, K={s.get('codewords')}, alpha={s.get('alpha')}, "
                         f"beta={s.get('beta')}, stage 2 {s.get('stage2')}; training time includes stage 1 "
                         f"({_fmt(r.get('stage1_seconds'), '.1f')} s)")
        if isinstance(r.get("afm"), dict) and r["afm"].get("ranks"):
            ranks = ", ".join(f"{k} {v}" for k, v in r["afm"]["ranks"].items())
            notes.append(f"`{m}`: AFM ranks {ranks}; training time is compression plus fine-tuning")
    return notes


def frontier_table(points: list) -> str:
    """Markdown table of the frontier points: one row per ratio, one column per method (test AUC and
    embedding bytes)."""
    methods = sorted({p["method"] for p in points if p["method"] != "baseline"})
    ratios = sorted({p["ratio"] for p in points if p["method"] != "baseline"})
    at = {(p["method"], p["ratio"]): p for p in points}
    base = next((p for p in points if p["method"] == "baseline"), None)
    head = "| target ratio | " + " | ".join(f"{m} AUC (bytes)" for m in methods) + " |"
    rows = [head, "|---|" + "---|" * len(methods)]
    if base is not None:
        rows.append("| 1x (baseline) | " + " | ".join(f"{base['test_auc']:.4f} ({base['embedding_bytes']:,})"
                                                     for _ in methods) + " |")
    for r in ratios:
        cells = [f"{at[(m, r)]['test_auc']:.4f} ({at[(m, r)]['embedding_bytes']:,})"
                 if (m, r) in at and at[(m, r)].get("test_auc") is not None
                 else ("cannot reach" if (m, r) in at else "-") for m in methods]
        rows.append(f"| {r:g}x | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def draw_figures(runs: list, out_dir: str) -> tuple[list, dict]:
    """Draws every figure of :data:`FIGURES` into ``out_dir``.

    Returns:
        ``(figures, skipped)``: ``[{"file": "<name>.png", "title": ...}]`` of the figures drawn, and
        ``{name: reason}`` of those left out (no data, no matplotlib, or a drawing error).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        reason = "matplotlib is not installed (pip install matplotlib)"
        return [], {name: reason for name in FIGURES}
    figures, skipped = [], {}
    for name, draw in FIGURES.items():
        file = f"{name}.png"
        try:
            title = draw(runs, os.path.join(out_dir, file))
        except NoData as why:
            skipped[name] = str(why)
            continue
        except Exception as err:  # noqa: BLE001 - a figure must not cost a finished run its report
            skipped[name] = f"could not be drawn: {type(err).__name__}: {err}"
            continue
        figures.append({"file": file, "title": title})
    return figures, skipped


@tfmec_export("tfmec.report.write_report")
def write_report(metrics: dict, out_dir: str) -> dict:
    """Writes ``out_dir/report.md`` (and its PNG figures) for a ``metrics.json`` dict.

    Args:
        metrics: what :func:`tfmec.experiment.run_experiment` returns (``dataset``, ``rows``, ``runs``...).
        out_dir: the run's folder.

    Returns:
        ``{"path": "report.md", "figures": [{"file", "title"}], "skipped": {name: reason}}`` (paths
        relative to ``out_dir``).
    """
    runs = list(metrics.get("runs", []))
    os.makedirs(out_dir, exist_ok=True)
    figures, skipped = draw_figures(runs, out_dir)
    rows = metrics.get("rows")
    rows_text = ", ".join(f"{k} {v:,}" for k, v in rows.items()) if isinstance(rows, dict) else str(rows)
    lines = [f"# tfmec run: {metrics.get('dataset', '?')}", "",
             f"Rows: {rows_text}. Model: {runs[0].get('model', '?') if runs else '?'}. "
             f"Seed {metrics.get('seed')}. Keras: {metrics.get('keras')}.", "",
             "## Results", "", results_table(runs), "",
             "Ratios are against the uncompressed baseline of the same run (bytes at stored width: int8 and "
             "code tables at their integer width, float tables at 4 bytes). Predictions/s: one 4,096-row "
             "batch, graph mode. Training s: the method's own training (MEC: stage 1 plus stage 2; int8: the "
             "quantisation; AFM: compression plus fine-tuning)."]
    if metrics.get("warnings"):
        lines[2:2] = ["## Warnings", ""] + [f"- **{w}**" for w in metrics["warnings"]] + [""]
    notes = method_notes(runs)
    if notes:
        lines += ["", "## Methods", ""] + [f"- {n}" for n in notes]
    exports = export_table(runs)
    if exports:
        lines += ["", "## Export (SavedModel, ONNX)", "", exports]
    frontier = metrics.get("frontier")
    if frontier:
        lines += ["", "## Frontier: every method at the same bytes", "", frontier_table(frontier)]
        from tfmec.report.figures import plot_frontier

        try:
            title = plot_frontier(frontier, os.path.join(out_dir, "frontier.png"))
            figures.insert(0, {"file": "frontier.png", "title": title})
        except Exception as err:  # noqa: BLE001 - a figure must not cost a finished run its report
            skipped["frontier"] = f"could not be drawn: {type(err).__name__}: {err}"
    lines += ["", "## Figures", ""]
    for fig in figures:
        lines += [f"### {fig['title']}", "", f"![{fig['title']}]({fig['file']})", ""]
    for name, reason in skipped.items():
        lines += [f"- `{name}.png` left out: {reason}."]
    from tfmec.atomic import write_bytes_atomic

    write_bytes_atomic(os.path.join(out_dir, REPORT_FILE), ("\n".join(lines).rstrip() + "\n").encode("utf-8"),
                       suffix=".md")  # atomic; a full disk raises one line naming the file
    return {"path": REPORT_FILE, "figures": figures, "skipped": skipped}


__all__ = ["write_report", "results_table", "export_table", "draw_figures", "method_notes", "training_seconds",
           "REPORT_FILE"]
