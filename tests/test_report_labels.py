"""Every label of the report's figures is tied to its own point (both Keras modes).

The figures are checked from their matplotlib artists, not from pixels, on runs whose results nearly
coincide as in ``make demo`` (afm a hair above the baseline at the same bytes, mec+afm on mec, int8 and
hash at mec's bytes), plus two methods at exactly the same coordinates:

- a legend entry names one method, and its marker and colour are those of exactly one plotted artist,
  the one that holds that method's coordinates and no other method's;
- a text placed on the axes (an annotation) says one method and points (``xy``) at that method's point,
  and without a leader line it sits nearer that point than any other method's;
- no two methods share a style, so nothing in a figure can be read as another method.
"""
from __future__ import annotations

import numpy as np
import pytest

from tfmec.report import figures
from tfmec.report.figures import method_styles, plot_auc_vs_bytes, plot_frontier, plot_training_curves


def _close_runs():
    """``make demo``'s shape: baseline and afm 4e-5 AUC apart at the same bytes, mec+afm 2e-4 above mec at
    the same bytes, int8 and hash a few hundred bytes below mec; qr exactly on hash."""
    history = {"loss": [0.55, 0.39], "val_auc": [0.655, 0.696]}
    return [
        {"method": "baseline", "embedding_bytes": 5_950_476, "test_auc": 0.69997, "history": history},
        {"method": "mec", "embedding_bytes": 247_931, "test_auc": 0.70371, "history": {"loss": [0.38], "val_auc": [0.6965]}},
        {"method": "afm", "embedding_bytes": 5_950_476, "test_auc": 0.70002, "history": None,
         "afm": {"fine_tune": [{"stage": "mlp", "history": {"loss": [0.2], "val_auc": [0.694]}}]}},
        {"method": "mec+afm", "embedding_bytes": 247_931, "test_auc": 0.70392,
         "history": {"loss": [0.38], "val_auc": [0.7012]}},
        {"method": "int8", "embedding_bytes": 247_725, "test_auc": 0.69974, "history": None},
        {"method": "hash", "embedding_bytes": 247_248, "test_auc": 0.67063, "history": {"loss": [0.556, 0.496],
                                                                                      "val_auc": [0.64, 0.669]}},
        {"method": "qr", "embedding_bytes": 247_248, "test_auc": 0.67063, "history": {"loss": [0.556, 0.496],
                                                                                    "val_auc": [0.64, 0.669]}},
    ]


@pytest.fixture
def drawn(monkeypatch):
    """Calls a figure function and returns its matplotlib figure (kept after it is saved and closed)."""
    kept = []
    save = figures._save

    def keep(fig, path, title):
        kept.append(fig)
        return save(fig, path, title)

    monkeypatch.setattr(figures, "_save", keep)

    def draw(plot, data, path):
        plot(data, str(path))
        assert path.exists()
        return kept.pop()

    return draw


def _style(artist):
    """What a reader tells methods apart by: marker, colour(s), line style."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_rgba

    if isinstance(artist, PathCollection):
        path = artist.get_paths()[0]
        return ("scatter", tuple(np.round(path.vertices, 6).ravel()),
                tuple(np.round(artist.get_edgecolor(), 6).ravel()), tuple(np.round(artist.get_facecolor(), 6).ravel()))
    return ("line", str(artist.get_marker()), to_rgba(artist.get_color()), artist.get_linestyle(),
            str(artist.get_markerfacecolor()))


def _points(artist) -> set:
    from matplotlib.collections import PathCollection

    xy = artist.get_offsets() if isinstance(artist, PathCollection) else artist.get_xydata()
    return {(float(x), float(y)) for x, y in np.asarray(xy)}


def check_labels(ax, expected: dict) -> None:
    """``expected``: ``{method: {(x, y), ...}}``, the coordinates each method's artist must hold. Every
    method is named exactly once, by a legend entry or by annotations, and each name is tied to its points."""
    data_artists = [a for a in list(ax.collections) + list(ax.get_lines()) if _points(a)]
    canvas = ax.figure.canvas
    if not hasattr(canvas, "get_renderer"):  # a figure closed by pyplot keeps a bare canvas
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(ax.figure)
    renderer = canvas.get_renderer()
    named = set()
    for text in ax.texts:  # annotations: the text is a method, xy is one of its points
        method = text.get_text()
        assert method in expected, f"text {method!r} on the axes names no method"
        assert hasattr(text, "xy") and tuple(map(float, text.xy)) in expected[method], \
            f"label {method!r} points at {getattr(text, 'xy', None)}, not at one of {sorted(expected[method])}"
        if text.arrow_patch is None:  # no leader line: the text itself must sit nearer its point than any other
            box = text.get_window_extent(renderer)
            centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])

            def distance(xy):
                return float(np.hypot(*(ax.transData.transform(xy) - centre)))

            own = min(distance(xy) for xy in expected[method])
            for other, others in expected.items():
                if other != method:
                    nearest = min(distance(xy) for xy in others)
                    assert nearest > own + 3, (f"label {method!r} is {own:.0f} px from its point and {nearest:.0f} px "
                                               f"from {other!r}'s: it reads as {other}'s label")
        named.add(method)
    legend = ax.get_legend()
    entries = [] if legend is None else list(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    styles = {}
    for text, handle in entries:
        method = text.split(":")[0]
        if method not in expected:
            continue  # e.g. "baseline AUC", a reference line
        assert method not in named, f"{method!r} is named twice"
        named.add(method)
        same = [a for a in data_artists if _style(a) == _style(handle)]
        assert len(same) == 1, f"legend entry {text!r}: {len(same)} plotted artists have its marker and colour"
        assert _points(same[0]) == expected[method], \
            f"legend entry {text!r} keys the artist at {sorted(_points(same[0]))}, not {method}'s {sorted(expected[method])}"
        styles[method] = _style(handle)
    assert named == set(expected), f"methods without a label: {sorted(set(expected) - named)}"
    assert len(set(styles.values())) == len(styles), "two methods share a marker and colour"


def test_auc_vs_bytes_labels_sit_on_their_own_points(tmp_path, drawn):
    runs = _close_runs()
    fig = drawn(plot_auc_vs_bytes, runs, tmp_path / "auc_vs_bytes.png")
    (ax,) = fig.axes
    check_labels(ax, {r["method"]: {(float(r["embedding_bytes"]), float(r["test_auc"]))} for r in runs})
    assert len(ax.texts) == 0  # legend-keyed: no free text beside a point
    # the legend gives each method's numbers, so coinciding points are still told apart
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "afm: AUC 0.7000, 5,950,476 bytes" in texts and "mec+afm: AUC 0.7039, 247,931 bytes" in texts
    # a point drawn on an earlier one is larger, around it: both stay visible
    size = {c.get_label().split(":")[0]: float(c.get_sizes()[0]) for c in ax.collections}
    assert size["afm"] > size["baseline"] and size["mec+afm"] > size["mec"] and size["qr"] > size["hash"]


def test_frontier_lines_are_keyed_to_their_methods(tmp_path, drawn):
    points = [{"method": "baseline", "ratio": 1.0, "embedding_bytes": 5_950_476, "test_auc": 0.69997}]
    for method, aucs, nbytes in (("mec", (0.7037, 0.7123), (247_931, 92_238)),
                                 ("int8", (0.6997, 0.6802), (247_725, 92_829)),
                                 ("hash", (0.6706, 0.6289), (247_248, 91_460)),
                                 ("pq", (0.7037, 0.7120), (247_931, 92_238))):  # pq's first point is mec's
        points += [{"method": method, "ratio": r, "embedding_bytes": b, "test_auc": a}
                   for r, a, b in zip((24.0, 64.0), aucs, nbytes)]
    fig = drawn(plot_frontier, points, tmp_path / "frontier.png")
    (ax,) = fig.axes
    expected = {}
    for p in points:
        if p["method"] != "baseline":
            expected.setdefault(p["method"], set()).add((float(p["embedding_bytes"]), float(p["test_auc"])))
    check_labels(ax, expected)


def test_training_curves_are_keyed_to_their_methods(tmp_path, drawn):
    runs = _close_runs()
    fig = drawn(plot_training_curves, runs, tmp_path / "training_curves.png")
    left, right = fig.axes
    for ax, key in ((left, "loss"), (right, "val_auc")):
        expected = {}
        for r in runs:
            values = figures.training_history(r).get(key)
            if values:
                expected[r["method"]] = {(float(i + 1), float(v)) for i, v in enumerate(values)}
        check_labels(ax, expected)


def test_the_checker_catches_a_label_on_the_wrong_point(tmp_path):
    """The old way (a text offset from each point) fails the check once a label names the wrong point;
    an annotation tied to its own point passes."""
    plt = figures._pyplot()
    fig, ax = plt.subplots()
    ax.scatter([1.0], [0.7000], label="_baseline")
    ax.scatter([1.0], [0.7001], label="_afm")
    expected = {"baseline": {(1.0, 0.7000)}, "afm": {(1.0, 0.7001)}}
    ax.set_ylim(0.6999, 0.7002)  # the two points 25% of the axes apart
    ax.annotate("baseline", (1.0, 0.7000), textcoords="offset points", xytext=(6, -4))
    ax.annotate("afm", (1.0, 0.7001), textcoords="offset points", xytext=(6, 4))
    check_labels(ax, expected)
    ax.texts[0].xy = (1.0, 0.7001)  # "baseline" now points at afm's point
    with pytest.raises(AssertionError, match="label 'baseline' points at"):
        check_labels(ax, expected)
    ax.texts[0].xy = (1.0, 0.7000)
    ax.set_ylim(0.6, 0.8)  # the points now a pixel apart: an offset text is as near the other point
    with pytest.raises(AssertionError, match="reads as afm's label|reads as baseline's label"):
        check_labels(ax, expected)
    ax.texts[0].remove()  # a leader line ties the text to its point wherever the text sits
    ax.annotate("baseline", (1.0, 0.7000), textcoords="offset points", xytext=(40, -30),
                arrowprops={"arrowstyle": "-"})
    ax.texts[0].remove()
    ax.annotate("afm", (1.0, 0.7001), textcoords="offset points", xytext=(40, 30), arrowprops={"arrowstyle": "-"})
    check_labels(ax, expected)
    plt.close(fig)
    fig, ax = plt.subplots()  # a legend whose entry keys another method's marker
    ax.scatter([1.0], [0.7000], marker="o", color="C0", label="baseline")
    ax.scatter([1.0], [0.7001], marker="o", color="C0", label="afm")
    ax.legend()
    with pytest.raises(AssertionError, match="2 plotted artists have its marker and colour"):
        check_labels(ax, expected)
    plt.close(fig)


def test_method_styles_are_distinct_and_stable():
    many = ["baseline", "mec", "afm", "mec+afm", "int8", "int4", "hash", "qr", "pq", "pq-no-retrain", "mec-no-pwr",
            "mec-no-contrastive"] + [f"user{i}" for i in range(30)]
    styles = method_styles(many)
    assert len(set(styles.values())) == len(many)
    assert method_styles(["hash", "mec"])["mec"] == styles["mec"]  # a method looks the same in every figure
