"""The figures of ``tfmec run``'s report, one function per figure, drawn with matplotlib (Agg).

Each ``plot_*(runs, path)`` takes the ``runs`` list of ``metrics.json`` (one dict per method), writes a
PNG to ``path`` and returns the figure's title (also drawn on the figure and stored as the PNG's
``Title`` text chunk), or raises :class:`NoData`
saying which data the figure needs when the runs do not hold it (for example no AFM run).
"""
from __future__ import annotations

import math

from tfmec.api_export import export_value, tfmec_export

FIGURE_DPI = 110


@tfmec_export("tfmec.report.NoData")
class NoData(Exception):
    """The runs hold no data for this figure; the message says why (it goes into the report)."""


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, title: str) -> str:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    from tfmec.atomic import atomic_file

    try:
        with atomic_file(path, suffix=".png") as tmp:  # a full disk: one line naming the figure
            fig.savefig(tmp, dpi=FIGURE_DPI, metadata={"Title": title, "Software": "tfmec"})  # PNG tEXt chunks
    finally:
        _pyplot().close(fig)
    return title


def _label(run: dict) -> str:
    return str(run.get("method", "?"))


# One style per method, the same in every figure (a method keeps its colour and marker from figure to
# figure). Figures name their points and lines through a legend keyed by these styles, never by free
# text placed near a point: two methods with nearly equal results would put a label on the wrong point.
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_MARKERS = "osD^vP*X<>hp"
_METHOD_STYLES = {  # method -> (colour, marker)
    "baseline": ("#1f77b4", "o"), "mec": ("#ff7f0e", "s"), "afm": ("#2ca02c", "D"), "mec+afm": ("#d62728", "^"),
    "int8": ("#9467bd", "v"), "hash": ("#8c564b", "P"), "pq": ("#e377c2", "*"), "qr": ("#7f7f7f", "X"),
    "int4": ("#bcbd22", "<"), "pq-no-retrain": ("#17becf", ">"), "mec-no-pwr": ("#e377c2", "h"),
    "mec-no-contrastive": ("#17becf", "p"),
}


def method_styles(methods) -> dict:
    """``{method: (colour, marker)}`` for the methods of one figure, pairwise distinct: a known method
    keeps its own style (the same in every figure), any other takes the first unused pair."""
    styles, used = {}, set()
    for m in dict.fromkeys(methods):
        if m in _METHOD_STYLES and _METHOD_STYLES[m] not in used:
            styles[m] = _METHOD_STYLES[m]
            used.add(styles[m])
    pairs = ((c, mk) for mk in _MARKERS for c in _COLORS)  # every marker in every colour: 120 pairs
    for m in dict.fromkeys(methods):
        if m not in styles:
            styles[m] = next(p for p in pairs if p not in used)
            used.add(styles[m])
    return styles


# ----------------------------------------------------------------------------- AUC vs bytes
def plot_auc_vs_bytes(runs: list, path: str) -> str:
    """Test AUC (y) against embedding bytes (x, log scale), one point per method, legend-keyed: each
    method has its own hollow marker and colour (:func:`method_styles`), and the legend, outside the
    plot, names it with its AUC and bytes. No text is placed beside a point, so methods with nearly equal
    results (afm on the baseline, mec+afm on mec) cannot swap labels; a point on top of earlier ones is
    drawn larger, around them, so both stay visible. The baseline's AUC is a dashed line when there is
    one."""
    points = [(r["embedding_bytes"], r["test_auc"], _label(r)) for r in runs
              if r.get("embedding_bytes") and r.get("test_auc") is not None]
    if not points:
        raise NoData("no run has both a test AUC and embedding bytes")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    styles = method_styles(name for _, _, name in points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span = math.log10(max(xs) / min(xs)) + 2 * math.log10(2) if min(xs) > 0 else 1.0  # the x limits below
    y_span = (max(ys) - min(ys)) or 1.0
    drawn = []
    for x, y, name in points:
        # a point on (or within 2% of the axes of) points drawn before it gets a larger marker around them
        near = sum(1 for px, py in drawn if abs(math.log10(x / px)) < 0.02 * x_span and abs(y - py) < 0.02 * y_span)
        drawn.append((x, y))
        color, marker = styles[name]
        ax.scatter([x], [y], s=70 * 2.4 ** near, marker=marker, facecolors="none", edgecolors=color, linewidths=1.6,
                   zorder=3, label=f"{name}: AUC {y:.4f}, {x:,} bytes")
    base = [r for r in runs if r.get("method") == "baseline" and r.get("test_auc") is not None]
    if base:
        ax.axhline(base[0]["test_auc"], color="grey", linestyle="--", linewidth=1, zorder=1, label="baseline AUC")
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.set_xlabel("embedding bytes (log scale)")
    ax.set_ylabel("test AUC")
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    for handle in legend.legend_handles:  # one marker size in the legend, whatever the size on the plot
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([60])
    return _save(fig, path, "Test AUC against embedding bytes, one point per method")


# ----------------------------------------------------------------------------- frontier
def plot_frontier(points: list, path: str) -> str:
    """Test AUC (y) against embedding bytes (x, log scale) of ``metrics.json``'s ``frontier`` points:
    one line per method through its ratios (legend-keyed: each line's colour and marker name it, no
    free-floating labels), the baseline as a dashed horizontal line."""
    lines = {}
    for p in points:
        if p.get("method") != "baseline" and p.get("embedding_bytes") and p.get("test_auc") is not None:
            lines.setdefault(p["method"], []).append((p["embedding_bytes"], p["test_auc"]))
    if not lines:
        raise NoData("no frontier point has both a test AUC and embedding bytes")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = method_styles(sorted(lines))
    for method, xy in sorted(lines.items()):
        xy.sort()
        color, marker = styles[method]
        ax.plot([x for x, _ in xy], [y for _, y in xy], color=color, marker=marker, markerfacecolor="none",
                markeredgewidth=1.4, linewidth=1.4, markersize=7, label=method)
    base = [p for p in points if p.get("method") == "baseline"]
    if base:
        ax.axhline(base[0]["test_auc"], color="grey", linestyle="--", linewidth=1,
                   label=f"baseline ({base[0]['embedding_bytes']:,} bytes)")
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (log scale)")
    ax.set_ylabel("test AUC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path, "Frontier: test AUC against embedding bytes, one line per method")


# ----------------------------------------------------------------------------- code usage
def _stage1_run(runs: list):
    """The run whose MEC stage-1 statistics are shown: ``mec`` first, else the first run with any."""
    with_stats = [r for r in runs if r.get("stage1")]
    if not with_stats:
        budgeted = [r.get("method") for r in runs if isinstance(r.get("budget"), dict)]
        if budgeted:
            raise NoData(f"{', '.join(budgeted)} ran at a memory budget: popularity tiers, not stage-1 codes of one "
                         f"setting (the tiers of each table are in metrics.json, under budget)")
        return None
    mec = [r for r in with_stats if r.get("method") == "mec"]
    return (mec or with_stats)[0]


def plot_code_usage(runs: list, path: str, max_tables: int = 30) -> str:
    """MEC code usage of the head (the 10% most frequent ids of each table) against the tail (the rest),
    per quantised table: mean distinct codewords per sub-space (with ``K``) and mean usage entropy (with
    its maximum ``log K``), from stage 1's statistics (``run["stage1"][table]``). At most ``max_tables``
    tables, the largest vocabularies first."""
    run = _stage1_run(runs)
    if run is None:
        quantising = [r for r in runs if isinstance(r.get("mec"), dict)]
        if quantising:
            s = quantising[0]["mec"]
            raise NoData(f"{', '.join(_label(r) for r in quantising)} quantised no table: at M={s.get('subspaces')}, "
                         f"K={s.get('codewords')} no table is smaller as codes plus codebooks than as floats (every "
                         "vocabulary is small); fewer codewords (--codewords 16) or --share-codebooks make room")
        raise NoData("no MEC-family run (mec, pq, mec+afm, ...) with stage-1 statistics")
    stats = run["stage1"]
    names = sorted(stats, key=lambda n: -int(stats[n].get("vocab_size", 0)))[:max_tables]
    needed = ("head_distinct_codewords", "tail_distinct_codewords", "head_usage_entropy", "tail_usage_entropy")
    names = [n for n in names if all(k in stats[n] for k in needed)]
    if not names:
        raise NoData(f"the stage-1 statistics of {_label(run)} have no head/tail usage entries")
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.5, 0.45 * len(names) + 2), 6.4), sharex=True)
    xs = list(range(len(names)))
    w = 0.38
    for ax, kind, label in ((top, "distinct_codewords", "distinct codewords per sub-space"),
                            (bottom, "usage_entropy", "code usage entropy (nats)")):
        ax.bar([x - w / 2 for x in xs], [stats[n][f"head_{kind}"] for n in names], w,
               label="head: top 10% most frequent ids")
        ax.bar([x + w / 2 for x in xs], [stats[n][f"tail_{kind}"] for n in names], w, label="tail: the other 90%")
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    k = run.get("mec", {}).get("codewords") if isinstance(run.get("mec"), dict) else None
    if k:
        top.axhline(k, color="grey", linestyle="--", linewidth=1, label=f"K = {k}")
    max_entropy = [stats[n].get("usage_entropy_max") for n in names if stats[n].get("usage_entropy_max")]
    if max_entropy:
        bottom.axhline(max(max_entropy), color="grey", linestyle="--", linewidth=1, label="log K (uniform use)")
    for ax in (top, bottom):  # head room for the legend above the bars
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(fontsize=8, loc="upper right", ncol=3)
    bottom.set_xticks(xs)
    bottom.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    bottom.set_xlabel("quantised table (largest vocabulary first)")
    return _save(fig, path, f"MEC code usage ({_label(run)}): top 10% most frequent IDs (head) vs the rest (tail)")


# ----------------------------------------------------------------------------- AFM spectra
def _afm_layers(runs: list) -> list:
    """``[(method, layer dict)]`` of every AFM layer report that holds eigenvalues."""
    out = []
    for r in runs:
        afm = r.get("afm")
        if not isinstance(afm, dict):
            continue
        for layer in afm.get("layers", []):
            if layer.get("eigenvalues"):
                out.append((_label(r), layer))
    return out


def plot_afm_spectra(runs: list, path: str, max_layers: int = 9) -> str:
    """AFM: the eigenvalues of each factored layer's output covariance (log scale), one panel per
    layer, one line per AFM method, with the chosen rank as a dashed vertical line (none when the
    layer was left as it is)."""
    found = _afm_layers(runs)
    if not any(r.get("afm") for r in runs):
        raise NoData("no AFM run (afm or mec+afm)")
    if not found:
        raise NoData("the AFM runs hold no eigenvalues (layers left without a PCA)")
    layer_names = list(dict.fromkeys(layer["name"] for _, layer in found))[:max_layers]
    methods = list(dict.fromkeys(m for m, _ in found))
    plt = _pyplot()
    cols = min(3, len(layer_names))
    rows = math.ceil(len(layer_names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    styles = method_styles(methods)
    for ax, name in zip(axes.flat, layer_names):
        for method, layer in found:
            if layer["name"] != name:
                continue
            color = styles[method][0]
            values = [max(float(v), 1e-12) for v in layer["eigenvalues"]]
            ax.plot(range(1, len(values) + 1), values, color=color, linewidth=1.4, label=method)
            if layer.get("rank"):
                ax.axvline(layer["rank"], color=color, linestyle="--", linewidth=1,
                           label=f"{method}: rank {layer['rank']}")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("component")
        ax.set_ylabel("eigenvalue")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(layer_names):]:
        ax.axis("off")
    return _save(fig, path, "AFM: eigenvalue spectra of each layer's outputs with the chosen ranks")


# ----------------------------------------------------------------------------- training curves
@tfmec_export("tfmec.report.training_history")
def training_history(run: dict) -> dict:
    """``{metric: [value per epoch]}`` of a run's training: ``run["history"]`` (baseline, MEC stage 2,
    hash) or the concatenated fine-tuning histories of an AFM run; ``{}`` when it did not train."""
    if run.get("history"):
        return run["history"]
    afm = run.get("afm")
    merged = {}
    if isinstance(afm, dict):
        for stage in afm.get("fine_tune", []):
            for key, values in (stage.get("history") or {}).items():
                merged.setdefault(key, []).extend(values)
    return merged


def plot_training_curves(runs: list, path: str) -> str:
    """Training loss and validation AUC per epoch, one line per method that trained (MEC: stage 2;
    AFM: its fine-tuning epochs; int8 trains nothing)."""
    curves = [(_label(r), training_history(r)) for r in runs]
    curves = [(m, h) for m, h in curves if h.get("loss") or h.get("val_auc")]
    if not curves:
        raise NoData("no run recorded a training history")
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    # a marker and dash pattern per method, so that methods with equal curves (e.g. afm and mec+afm
    # fine-tuned from the same start) stay visible on top of each other
    styles, dashes = method_styles(m for m, _ in curves), ["-", "--", "-.", ":"]
    for i, (method, h) in enumerate(curves):
        color, marker = styles[method]
        style = dict(color=color, marker=marker, linestyle=dashes[i % len(dashes)], markersize=4,
                     markerfacecolor="none", label=method)
        if h.get("loss"):
            left.plot(range(1, len(h["loss"]) + 1), h["loss"], **style)
        if h.get("val_auc"):
            right.plot(range(1, len(h["val_auc"]) + 1), h["val_auc"], **style)
    left.set_title("training loss", fontsize=9)
    right.set_title("validation AUC", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch of the method's own training")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path, "Training curves: training loss and validation AUC per epoch")


FIGURES = {
    "auc_vs_bytes": plot_auc_vs_bytes,
    "code_usage": plot_code_usage,
    "afm_spectra": plot_afm_spectra,
    "training_curves": plot_training_curves,
}
"""File stem -> figure function, in report order."""
export_value("tfmec.report.FIGURES", FIGURES, doc="file stem -> figure function, in report order")

__all__ = ["NoData", "FIGURES", "plot_auc_vs_bytes", "plot_code_usage", "plot_afm_spectra", "plot_training_curves",
           "plot_frontier", "training_history", "method_styles"]
