"""``DIR/report.md`` and its figures (both Keras modes: ``make test`` runs this file twice).

The figures are checked on a hand-made ``metrics.json`` (every figure's data present, then absent) and
once end to end: a tiny ``tfmec run --method none,hash,mec,int8`` on a four-field CSV file.
"""
from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest

from tfmec.cli import main
from tfmec.report import FIGURES, write_report
from tfmec.report.markdown import results_table

TITLES = {
    "auc_vs_bytes": "Test AUC against embedding bytes, one point per method",
    "code_usage": "MEC code usage (mec): top 10% most frequent IDs (head) vs the rest (tail)",
    "afm_spectra": "AFM: eigenvalue spectra of each layer's outputs with the chosen ranks",
    "training_curves": "Training curves: training loss and validation AUC per epoch",
}


def _stage1(v):
    return {"vocab_size": v, "head_distinct_codewords": 9.5, "tail_distinct_codewords": 15.0, "head_usage_entropy": 2.0,
            "tail_usage_entropy": 2.7, "usage_entropy_max": math.log(16)}


def _metrics():
    """A ``metrics.json`` with every figure's data: baseline, mec (stage 1 statistics), int8, hash, afm."""
    history = {"loss": [0.6, 0.55], "auc": [0.6, 0.7], "val_loss": [0.58, 0.56], "val_auc": [0.62, 0.66]}
    base = {"method": "baseline", "model": "deepfm", "test_auc": 0.70, "test_logloss": 0.50, "embedding_bytes": 400_000,
            "model_bytes": 900_000, "train_seconds": 10.0, "infer_samples_per_s": 50_000.0, "history": history}
    mec = dict(base, method="mec", test_auc=0.69, embedding_bytes=20_000, model_bytes=520_000, stage1_seconds=5.0,
               compression_ratio_embeddings=20.0, compression_ratio_model=900 / 520, history={"loss": [0.5]},
               stage1={"C1": _stage1(5000), "linear_C1": _stage1(5000), "C2": _stage1(800)},
               mec={"subspaces": 4, "codewords": 16, "alpha": 1e-4, "beta": 2e-3, "stage2": "finetune"})
    int8 = dict(base, method="int8", test_auc=0.70, embedding_bytes=125_000, model_bytes=625_000, train_seconds=0.4,
                history=None, int8={"tables": 4, "per_row_tables": 2, "max_abs_error": 1e-4, "row_scale_min_dim": 8})
    hashed = dict(base, method="hash", test_auc=0.65, embedding_bytes=19_800, model_bytes=519_800,
                  hash={"budget_bytes": 20_000, "budget_source": "mec", "bucket_cap": 300,
                        "hashed_tables": ["embedding_C1", "linear_C1"]})
    eig = list(np.geomspace(1.0, 1e-4, 32))
    afm = dict(base, method="afm", test_auc=0.695, model_bytes=600_000, history=None, afm={
        "ranks": {"dnn_dense_0": 12, "dnn_dense_1": 5},
        "layers": [{"name": "dnn_dense_0", "rank": 12, "eigenvalues": eig},
                   {"name": "dnn_dense_1", "rank": 5, "eigenvalues": eig[:16]},
                   {"name": "logit", "rank": None, "eigenvalues": None}],
        "fine_tune": [{"stage": "mlp", "history": {"loss": [0.52, 0.51], "val_auc": [0.66, 0.67]}}]})
    return {"dataset": "synthetic", "rows": {"train": 800, "valid": 100, "test": 100}, "keras": "keras3", "seed": 0,
            "runs": [base, mec, int8, hashed, afm]}


def _check_png(path, title=None):
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.01  # something is drawn
    if title is not None:  # the title drawn on the figure is also the PNG's Title text chunk
        from PIL import Image

        with Image.open(path) as png:
            assert png.format == "PNG" and png.text.get("Title") == title


def test_every_figure_is_drawn_and_linked(tmp_path):
    out = write_report(_metrics(), str(tmp_path))
    assert out["skipped"] == {}
    assert [f["file"] for f in out["figures"]] == [f"{name}.png" for name in FIGURES]
    assert {f["file"][:-4]: f["title"] for f in out["figures"]} == TITLES
    text = (tmp_path / "report.md").read_text()
    for name, title in TITLES.items():
        _check_png(tmp_path / f"{name}.png", title)
        assert f"### {title}" in text and f"![{title}]({name}.png)" in text
    # the table: every method, ratios against the baseline, MEC's time includes stage 1
    assert "| mec | 0.6900 | 0.5000 | 20,000 | 520,000 | 20.0x | 1.7x | 50,000 | 15.0 |" in text
    assert "| int8 | 0.7000 | 0.5000 | 125,000 | 625,000 | 3.2x | 1.4x | 50,000 | 0.4 |" in text
    assert "| baseline | 0.7000 | 0.5000 | 400,000 | 900,000 | 1.0x | 1.0x |" in text
    assert "budget 20,000 bytes (from mec)" in text and "2 table(s) hashed into 300 rows" in text


def test_figures_without_data_are_left_out_with_the_reason(tmp_path):
    metrics = _metrics()
    metrics["runs"] = [dict(r, history=None) for r in metrics["runs"] if r["method"] in ("baseline", "int8")]
    out = write_report(metrics, str(tmp_path))
    assert [f["file"] for f in out["figures"]] == ["auc_vs_bytes.png"]
    assert set(out["skipped"]) == {"code_usage", "afm_spectra", "training_curves"}
    text = (tmp_path / "report.md").read_text()
    assert "- `code_usage.png` left out: no MEC-family run" in text
    assert "- `afm_spectra.png` left out: no AFM run (afm or mec+afm)." in text
    assert "- `training_curves.png` left out: no run recorded a training history." in text
    assert not (tmp_path / "code_usage.png").exists()
    assert results_table([]).count("\n") == 1  # header only


def _write_csv(path, rows=3000, seed=0):
    """Four categorical fields (20 .. 5,000 distinct values, Zipf-distributed) and a label ``y``."""
    rng = np.random.default_rng(seed)
    sizes = {"a": 20, "b": 300, "c": 2000, "d": 5000}
    cols = {name: rng.zipf(1.3, rows) % v for name, v in sizes.items()}
    logit = sum(rng.normal(0, 1, v)[cols[name]] for name, v in sizes.items()) - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("y," + ",".join(sizes) + "\n")
        for i in range(rows):
            fh.write(f"{y[i]}," + ",".join(f"{name}{cols[name][i]}" for name in sizes) + "\n")
    return str(path)


def test_run_writes_report_with_figures_end_to_end(tmp_path):
    out = tmp_path / "run"
    csv = _write_csv(tmp_path / "clicks.csv")
    code = main(["run", "--data", csv, "--format", "csv", "--label", "y", "--model", "deepfm",
                 "--method", "none,hash,mec,int8", "--out", str(out), "--epochs", "1", "--batch-size", "512",
                 "--embedding-dim", "8", "--codewords", "16", "--stage1-epochs", "1", "--quiet", "--no-export"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base, hashed, mec, int8 = metrics["runs"]
    assert [r["method"] for r in metrics["runs"]] == ["baseline", "hash", "mec", "int8"]
    # hash ran after mec and took its bytes as the budget
    assert hashed["hash"]["budget_source"] == "mec" and hashed["hash"]["budget_bytes"] == mec["embedding_bytes"]
    assert hashed["embedding_bytes"] <= mec["embedding_bytes"] and hashed["hash"]["hashed_tables"]
    assert 2.5 < int8["compression_ratio_embeddings"] < 4.0 and int8["epochs"] == 0
    assert abs(int8["test_auc"] - base["test_auc"]) < 0.01
    assert base["history"]["val_auc"] and hashed["history"]["loss"]
    report = metrics["report"]
    assert report["path"] == "report.md"
    assert {f["file"] for f in report["figures"]} == {"auc_vs_bytes.png", "code_usage.png", "training_curves.png"}
    assert set(report["skipped"]) == {"afm_spectra"}
    text = (out / "report.md").read_text()
    for fig in report["figures"]:
        assert fig["title"] == TITLES[fig["file"][:-4]]
        assert f"![{fig['title']}]({fig['file']})" in text
        _check_png(out / fig["file"])
    assert "left out: no AFM run" in text
    for run in metrics["runs"]:
        assert f"| {run['method']} | {run['test_auc']:.4f} |" in text
    assert (out / "int8" / "model.keras").exists() and (out / "hash" / "model.keras").exists()


@pytest.mark.parametrize("bad", [{"runs": []}, {"runs": [{"method": "x"}]}])
def test_report_of_empty_or_partial_metrics(tmp_path, bad):
    out = write_report(bad, str(tmp_path))
    assert out["figures"] == [] and (tmp_path / "report.md").exists()


def test_a_mec_run_that_quantised_no_table_is_explained(tmp_path):
    metrics = _metrics()
    metrics["runs"] = [r if r["method"] != "mec" else dict(r, stage1={}) for r in metrics["runs"]
                       if r["method"] in ("baseline", "mec")]
    out = write_report(metrics, str(tmp_path))
    assert "code_usage" in out["skipped"]
    text = (tmp_path / "report.md").read_text()
    assert "- `code_usage.png` left out: mec quantised no table: at M=" in text
    assert "--codewords 16" in text and "`mec`: 0 table(s) quantised, M=" in text
