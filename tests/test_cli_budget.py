"""``tfmec run --memory-budget / --target-ratio / --frontier`` (issue 19) end to end on small data."""
import json

import pytest

from tfmec.cli import main


def test_budgeted_methods_and_frontier_stay_within_their_budgets(tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--data", "synthetic", "--rows", "3000", "--model", "fm", "--method", "none,mec,pq",
                 "--target-ratio", "4", "--frontier", "8", "--stage2", "none", "--seed", "1", "--out", str(out),
                 "--epochs", "1", "--batch-size", "256", "--no-export", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base, mec, pq = metrics["runs"]
    for run in (mec, pq):  # the main runs at --target-ratio 4, with their allocation recorded
        plan = run["budget"]
        assert plan["budget_bytes"] == base["embedding_bytes"] // 4
        assert run["embedding_bytes"] == plan["bytes"] <= plan["budget_bytes"]
        assert sorted(plan["tables"]) and all(sum(t["rows"] for t in tiers) > 0 for tiers in plan["tables"].values())
    assert [(c["alpha"], c["fraction"]) for c in mec["budget"]["candidates"]] == [(1.0, 1.0), (1.0, 0.25),
                                                                                (0.5, 1.0), (0.5, 0.25)]
    assert all(c["validation_auc"] is not None for c in mec["budget"]["candidates"])
    assert all(len(tiers) == 1 for tiers in pq["budget"]["tables"].values())  # plain PQ: one tier per table
    points = {(p["method"], p["ratio"]): p for p in metrics["frontier"] if p["method"] != "baseline"}
    assert set(points) == {("mec", 4.0), ("pq", 4.0), ("mec", 8.0), ("pq", 8.0)}  # the main runs, then 8x
    assert points[("mec", 4.0)]["test_auc"] == mec["test_auc"]  # not trained again
    for (method, ratio), p in points.items():
        assert 0 < p["embedding_bytes"] <= base["embedding_bytes"] // ratio, method
        assert 0.0 < p["test_auc"] < 1.0
    assert (out / "frontier" / "8x" / "mec" / "model.keras").exists()
    report = (out / "report.md").read_text()
    assert "## Frontier: every method at the same bytes" in report and "frontier.png" in report
    assert (out / "frontier.png").stat().st_size > 1000


def test_budget_below_the_least_bytes_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--data", "synthetic", "--rows", "3000", "--model", "fm", "--method", "none,mec",
                 "--memory-budget", "100", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-export", "--quiet"])
    assert code == 2
    assert "below the least the embedding tables can take" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--memory-budget", "1000", "--target-ratio", "8"], "not allowed with argument"),
    (["--frontier", "0.5"], "--frontier ratios must be >= 1"),
    (["--target-ratio", "8", "--method", "none,afm"], "--target-ratio sizes the embedding methods"),
])
def test_budget_flags_are_checked(tmp_path, capsys, flags, message):
    try:  # argparse itself exits 2 for the mutually exclusive flags
        code = main(["run", "--data", "synthetic", "--rows", "3000", "--method", "none,mec", "--out",
                     str(tmp_path / "run"), *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
