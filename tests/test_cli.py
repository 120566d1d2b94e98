"""The ``tfmec run`` command: end to end on small data, and its error messages."""
import json
import os
import subprocess
import sys

import pytest

from tfmec.cli import main

METRIC_KEYS = {"method", "model", "test_auc", "test_logloss", "embedding_bytes", "model_bytes", "params",
               "train_seconds", "infer_samples_per_s"}


def test_run_synthetic_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--data", "synthetic", "--rows", "3000", "--model", "fm", "--method", "none",
                 "--seed", "1", "--out", str(out), "--epochs", "1", "--batch-size", "256", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic"
    assert set(metrics["rows"]) == {"train", "valid", "test"} and sum(metrics["rows"].values()) == 3000
    (run,) = metrics["runs"]
    assert METRIC_KEYS <= set(run)
    assert run["method"] == "baseline" and run["model"] == "fm"
    assert 0.0 < run["test_auc"] < 1.0 and run["test_logloss"] > 0
    assert run["embedding_bytes"] > 0 and run["model_bytes"] >= run["embedding_bytes"]
    assert run["infer_samples_per_s"] > 0
    assert (out / "baseline" / "model.keras").exists() and (out / "vocabulary.json").exists()
    printed = capsys.readouterr().out
    assert "test_auc" in printed and "baseline" in printed


def test_run_real_criteo_file(tmp_path, shared_data):
    out = tmp_path / "criteo"
    path = shared_data / "criteo" / "criteo_dac_train_first10k.txt"
    code = main(["run", "--data", str(path), "--format", "criteo", "--model", "lr", "--method", "none",
                 "--out", str(out), "--epochs", "1", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(metrics["rows"].values()) == 10_000
    assert metrics["runs"][0]["test_auc"] > 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--method", "none,zzz"], "unknown method 'zzz'"),
        (["--method", "none,mec,none"], "method(s) ['none'] given more than once"),
        (["--method", "hash", "--hash-bytes", "0"], "--hash-bytes must be positive"),
        (["--method", "mec", "--bits", "4"], "--bits 4 cannot hold 256 codewords; use at least 8"),
        (["--data", "/no/such/file.txt", "--format", "criteo"], "not found: /no/such/file.txt"),
        (["--data", "/no/such/file.txt"], "--format is required"),
        (["--data", __file__, "--format", "xml"], "unknown format 'xml'"),
    ],
)
def test_run_rejects_bad_arguments_with_a_clear_message(args, message, tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path / "x"), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "tfmec.cli", "run", "--help"], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0
    assert "--method" in result.stdout and "--format" in result.stdout


def test_run_baseline_and_mec_side_by_side(tmp_path):
    out = tmp_path / "mec"
    code = main(["run", "--data", "synthetic", "--rows", "4000", "--model", "deepfm", "--method", "none,mec,pq",
                 "--out", str(out), "--epochs", "1", "--batch-size", "512", "--codewords", "16", "--bits", "4",
                 "--stage1-epochs", "1", "--quiet", "--no-export"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base, mec, pq = metrics["runs"]
    assert base["method"] == "baseline" and mec["method"] == "mec" and pq["method"] == "pq"
    assert pq["mec"]["alpha"] == 0 and pq["mec"]["beta"] == 0 and pq["mec"]["stage1_epochs"] == 0
    # the same codes and codebooks; MEC's layers with a contrastive term (width > 1) also hold an 8-byte
    # step counter each
    from tfmec.io import load_model

    counters = [lyr for lyr in load_model(str(out / "mec" / "model.keras")).layers
                if getattr(lyr, "negatives_step", None) is not None]
    assert counters and mec["embedding_bytes"] - pq["embedding_bytes"] == 8 * len(counters)
    assert METRIC_KEYS <= set(mec)
    assert mec["compression_ratio_embeddings"] > 1.0 and mec["compression_ratio_model"] > 1.0
    assert mec["embedding_bytes"] < base["embedding_bytes"]
    assert mec["stage1"] and all("dead_codewords" in s for s in mec["stage1"].values())
    assert mec["mec"]["bits"] == 4 and mec["mec"]["codewords"] == 16
    assert (out / "mec" / "model.keras").exists() and (out / "mec" / "codes.npz").exists()


def test_run_afm_and_mec_afm(tmp_path):
    out = tmp_path / "afm"
    code = main(["run", "--data", "synthetic", "--rows", "4000", "--model", "deepfm", "--method", "none,afm,mec+afm",
                 "--out", str(out), "--epochs", "1", "--batch-size", "512", "--codewords", "16",
                 "--stage1-epochs", "1", "--afm-calibration-batches", "3", "--quiet", "--no-export"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base, afm, both = metrics["runs"]
    assert [r["method"] for r in metrics["runs"]] == ["baseline", "afm", "mec+afm"]
    assert METRIC_KEYS <= set(afm) and METRIC_KEYS <= set(both)
    assert afm["afm"]["layers"] and afm["params"] < base["params"]
    assert both["model_bytes"] < afm["model_bytes"] and both["stage1"]
