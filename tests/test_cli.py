"""The ``tfmec run`` command: end to end on small data, and its error messages."""
import json
import os
import subprocess
import sys

import pytest

from tfmec.cli import main

from conftest import FEW_SYNTHETIC_FIELDS  # tests/ is on sys.path

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
    code = main(["run", "--data", "synthetic", "--rows", "4000", *FEW_SYNTHETIC_FIELDS, "--model", "deepfm",
                 "--method", "none,mec,pq",
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
    code = main(["run", "--data", "synthetic", "--rows", "4000", *FEW_SYNTHETIC_FIELDS, "--model", "deepfm",
                 "--method", "none,afm,mec+afm",
                 "--out", str(out), "--epochs", "1", "--batch-size", "512", "--codewords", "16",
                 "--stage1-epochs", "1", "--afm-calibration-batches", "3", "--quiet", "--no-export"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    base, afm, both = metrics["runs"]
    assert [r["method"] for r in metrics["runs"]] == ["baseline", "afm", "mec+afm"]
    assert METRIC_KEYS <= set(afm) and METRIC_KEYS <= set(both)
    assert afm["afm"]["layers"] and afm["params"] < base["params"]
    assert both["model_bytes"] < afm["model_bytes"] and both["stage1"]


# --------------------------------------------------------------------------------------------------
# every real sample through the documented `tfmec run` data flags (bench/real_data.CLI_DATA_ARGS)
REAL_SAMPLE_ROWS = {  # rows of each file as read (SOURCE.md of each sample)
    "criteo": 10_000, "criteo-deepctr-200": 200, "avazu": 9_999, "frappe": 86_582, "movielens-100k": 100_000,
    "movielens-1m-part": 487_650, "mind-small-5k": 189_359, "movielens-100k-din": 100_000, "movielens-1m-din": 487_650,
}


def _cli_data_args(name, root):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    try:
        from real_data import CLI_DATA_ARGS, cli_data_args
    finally:
        sys.path.pop(0)
    assert set(CLI_DATA_ARGS) == set(REAL_SAMPLE_ROWS)
    return cli_data_args(name, root)


@pytest.mark.parametrize("name", sorted(REAL_SAMPLE_ROWS))
def test_every_real_sample_loads_through_the_run_flags(name, shared_data):
    from tfmec.cli import build_parser, run_config_from_args
    from tfmec.experiment import load_for

    argv = ["run", *_cli_data_args(name, shared_data), "--quiet"]
    cfg = run_config_from_args(build_parser().parse_args(argv), argv[1:])
    cfg.validate()
    data = load_for(cfg)
    assert sum(data.rows.values()) == REAL_SAMPLE_ROWS[name]
    assert 0.0 < data.positive_rate < 1.0
    assert len(data.schema.categorical) >= 2
    features, labels = next(iter(data.train.take(1)))
    assert len(features) == len(data.schema) and labels.shape[0] > 0


def test_names_flag_reads_a_headerless_file(tmp_path):
    from tfmec.cli import build_parser, run_config_from_args
    from tfmec.experiment import load_for

    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u % 7}::{u % 11}::{1 + u % 5}::{1000 + u}\n" for u in range(300)))
    argv = ["run", "--data", str(path), "--format", "csv", "--sep", "::", "--names", "user,item,rating,ts",
            "--label", "rating", "--label-threshold", "4", "--drop", "ts", "--min-count", "1", "--quiet"]
    cfg = run_config_from_args(build_parser().parse_args(argv), argv[1:])
    data = load_for(cfg)
    assert data.schema.names == ["user", "item"]
    assert sum(data.rows.values()) == 300  # no row taken as a header
    assert abs(data.positive_rate - 120 / 300) < 1e-6  # ratings 4 and 5 are positive


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "criteo", "--names", "a,b"], "--names applies to --format csv only, not criteo"),
        (["--format", "mind", "--label", "y"], "mind format's label is always 'click'"),
    ],
)
def test_data_flags_that_do_not_fit_the_format(args, message, tmp_path, capsys):
    data = tmp_path / "f.txt"
    data.write_text("x\n")
    code = main(["run", "--data", str(data), "--out", str(tmp_path / "x"), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err
