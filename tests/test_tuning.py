"""tfmec.tuning: KerasTuner sweeps over MEC (both Keras modes: ``make test`` runs this file twice).

Tiny on purpose: a 3-field synthetic set of 3000 rows, d = 8, one epoch per stage.
"""
import json
import os

import numpy as np
import pytest

from tfmec.cli import build_parser, main, run_config_from_args
from tfmec.data import load
from tfmec.data.synthetic import SyntheticCTR
from tfmec.evaluation import embedding_bytes, evaluate
from tfmec.experiment import RunConfig, RunContext
from tfmec.mec import compress_embeddings, learn_codes
from tfmec.tuning import (ACCEPTED, REJECTED, REJECTED_SCORE, EmbeddingTables, MECTuner, SearchSpace,
                          compressed_embedding_bytes)


@pytest.fixture(scope="module")
def data():
    return load(SyntheticCTR(rows=3000, seed=0, vocab_sizes=[20, 300, 2000], num_numeric=1), batch_size=512,
                progress=False)


def _config(out, **kw) -> RunConfig:
    settings = dict(data="synthetic", model="deepfm", out=str(out), epochs=1, batch_size=512, embedding_dim=8,
                    stage1_epochs=1, verbose=0, export=False, afm_calibration_batches=2, afm_fine_tune_epochs=1)
    settings.update(kw)
    return RunConfig(**settings)


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    """One trained baseline shared by the budget tests (as a tuner shares it across its trials)."""
    return RunContext(_config(tmp_path_factory.mktemp("baseline")), data, None).baseline()


@pytest.mark.parametrize("subspaces, codewords, bits, share, head", [
    (2, 16, None, False, 0.0), (4, 16, 4, False, 0.0), (2, 32, None, True, 0.0), (4, 300, None, False, 0.0),
    (4, 16, 4, False, 0.05), (2, 16, None, False, 3)])
def test_budget_bytes_equal_the_compressed_model(data, tmp_path, subspaces, codewords, bits, share, head):
    model = RunContext(_config(tmp_path), data, None).build()
    tables = EmbeddingTables.of_model(model)
    assert tables.original_bytes == embedding_bytes(model)
    predicted = compressed_embedding_bytes(tables, num_subspaces=subspaces, num_codewords=codewords, bits=bits,
                                           share_codebooks=share, head_rows=head)
    codes = learn_codes(model, data.frequencies, num_subspaces=subspaces, num_codewords=codewords, epochs=0,
                        share_codebooks=share, progress=False)
    if share:
        assert codes.groups  # the case exercises a shared-codebook group
    small = compress_embeddings(model, codes, bits=bits, head_rows=head)
    assert predicted == embedding_bytes(small)
    assert predicted <= tables.original_bytes  # K = 300 (uint16 codes) makes no table of this data smaller


@pytest.fixture(scope="module")
def mec_afm_search(data, tmp_path_factory):
    """A 3-trial random search over the AFM energy of mec+afm; stage-1 settings fixed, so stage 1 is
    learned once and then taken from the cache."""
    out = tmp_path_factory.mktemp("tune_mec_afm")
    lines = []
    space = SearchSpace(alpha=1e-4, beta=1e-3, codewords=16, subspaces=2, afm_energy=(0.6, 0.99))
    tuner = MECTuner(_config(out), "mec+afm", oracle="random", max_trials=3, space=space, data=data,
                     log=lines.append)
    tuner.search(verbose=0)
    return tuner, lines, out


def test_three_trial_search_end_to_end(mec_afm_search):
    tuner, lines, out = mec_afm_search
    results = tuner.results
    assert [r["status"] for r in results] == [ACCEPTED] * 3
    assert len({r["hyperparameters"]["afm_energy"] for r in results}) == 3
    for r in results:
        assert 0.0 < r["val_auc"] < 1.0 and 0.0 < r["test_auc"] < 1.0
        assert r["embedding_bytes"] == r["predicted_embedding_bytes"]  # the budget arithmetic is exact
        assert r["compression_ratio_embeddings"] > 1.0 and r["seconds"] > 0
    best = tuner.best_record()
    assert best["val_auc"] == max(r["val_auc"] for r in results)
    assert tuner.oracle.get_best_trials(1)[0].score == pytest.approx(best["val_auc"])
    # the results table: markdown and JSON lines
    table = (out / "results.md").read_text()
    assert "| trial | status | alpha | beta | codewords | subspaces | afm_energy | val AUC |" in table
    assert f"| {best['trial']} (best) | accepted |" in table and table.count("| accepted |") == 3
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in jsonl] == [r["trial"] for r in results]
    # the best configuration, as a RunConfig file
    cfg = RunConfig.from_dict(json.loads((out / "best_config.json").read_text()))
    assert cfg.methods == ["none", "mec+afm"] and cfg.afm_energy == best["hyperparameters"]["afm_energy"]
    assert (cfg.codewords, cfg.subspaces, cfg.alpha, cfg.beta) == (16, 2, 1e-4, 1e-3)
    # progress per trial, and the baseline trained once and left as it was by the trials
    assert sum(line.startswith("trial ") for line in lines) == 3
    assert sum(line.startswith("baseline: training") for line in lines) == 1
    base_model, base_run = tuner.baseline()
    assert evaluate(base_model, tuner.data.valid)["auc"] == pytest.approx(base_run["valid_auc"], abs=1e-9)


def test_stage1_cache_is_reused(mec_afm_search):
    tuner, _, _ = mec_afm_search
    logs = [open(r["log"], encoding="utf-8").read() for r in tuner.results]
    assert "stage 1: learning codes" in logs[0] and "stage 1 cache hit" not in logs[0]
    assert all("stage 1 cache hit" in log and "learning codes" not in log for log in logs[1:])
    assert [r["stage1_cache_hit"] for r in tuner.results] == [False, True, True]
    assert len(tuner.stage1_cache) == 1


@pytest.mark.parametrize("oracle", ["random", "bayesian", "hyperband"])
def test_budget_rejects_over_budget_trials(oracle, data, baseline, tmp_path):
    tables = EmbeddingTables.of_model(baseline[0])
    small = compressed_embedding_bytes(tables, num_subspaces=2, num_codewords=16)
    big = compressed_embedding_bytes(tables, num_subspaces=2, num_codewords=256)
    budget = (small + big) // 2
    assert small < budget < big
    space = SearchSpace(alpha=1e-4, beta=1e-3, codewords=(16, 256), subspaces=2)
    tuner = MECTuner(_config(tmp_path, epochs=2), "mec", oracle=oracle, max_trials=2, space=space,
                     memory_budget_bytes=budget, data=data, baseline=baseline, log=lambda msg: None)
    tuner.search(verbose=0)
    by_k = {r["hyperparameters"]["codewords"]: r for r in tuner.results}
    assert sorted(by_k) == [16, 256]
    rejected, accepted = by_k[256], by_k[16]
    assert rejected["status"] == REJECTED and rejected["val_auc"] is None
    assert rejected["predicted_embedding_bytes"] > budget and "budget" in rejected["message"]
    assert "rejected" in open(rejected["log"], encoding="utf-8").read()
    assert not os.path.exists(os.path.join(os.path.dirname(rejected["log"]), "mec"))  # nothing was trained
    assert tuner.oracle.get_trial(rejected["trial"]).score == REJECTED_SCORE
    assert accepted["status"] == ACCEPTED and accepted["embedding_bytes"] <= budget
    assert tuner.best_config().codewords == 16
    if oracle == "hyperband":
        assert all(r["hyperparameters"]["stage2_epochs"] >= 1 for r in tuner.results)


def test_all_rejected_trains_nothing(data, tmp_path):
    lines = []
    space = SearchSpace(alpha=1e-4, beta=1e-3, codewords=(16, 256), subspaces=2)
    tuner = MECTuner(_config(tmp_path), "mec", max_trials=3, space=space, memory_budget_bytes=1, data=data,
                     log=lines.append)
    tuner.search(verbose=0)
    assert [r["status"] for r in tuner.results] == [REJECTED, REJECTED]  # two distinct configurations
    assert not (tmp_path / "baseline").exists() and not (tmp_path / "best_config.json").exists()
    assert any("no trial was accepted" in line for line in lines)
    with pytest.raises(ValueError, match="no trial was accepted"):
        tuner.best_config()


def test_search_space_is_checked_against_the_model(data, tmp_path):
    with pytest.raises(ValueError, match="no subspaces choice in \\[3\\] divides embedding_dim 8"):
        MECTuner(_config(tmp_path), "mec", space=SearchSpace(subspaces=3), data=data)
    with pytest.raises(ValueError, match="codewords \\[256\\] do not fit in bits=4"):
        MECTuner(_config(tmp_path, bits=4, codewords=16), "mec", space=SearchSpace(codewords=(16, 256)), data=data)
    with pytest.raises(ValueError, match="cannot tune method 'afm'"):
        MECTuner(_config(tmp_path), "afm", data=data)


def _write_csv(path, rows=3000, seed=0):
    rng = np.random.default_rng(seed)
    cols = {name: rng.zipf(1.3, rows) % v for name, v in (("a", 20), ("b", 300), ("c", 2000))}
    w = {name: rng.normal(0, 1, 2000) for name in cols}
    logit = sum(w[name][cols[name]] for name in cols) - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("y,a,b,c\n")
        for i in range(rows):
            fh.write(f"{y[i]},a{cols['a'][i]},b{cols['b'][i]},c{cols['c'][i]}\n")
    return str(path)


def test_cli_tune_then_run_the_best_config(tmp_path, capsys):
    csv = _write_csv(tmp_path / "clicks.csv")
    out = tmp_path / "tune"
    code = main(["tune", "--data", csv, "--format", "csv", "--label", "y", "--model", "deepfm", "--method", "mec",
                 "--trials", "2", "--codewords", "16", "--subspaces", "2", "--alpha", "1e-5,1e-3", "--beta", "1e-3",
                 "--embedding-dim", "8", "--epochs", "1", "--stage1-epochs", "1", "--batch-size", "512", "--quiet",
                 "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "| trial | status | alpha |" in printed.out and "best configuration" in printed.out
    assert "trial 0 (1/2) accepted" in printed.err and "trial 1 (2/2) accepted" in printed.err
    best = json.loads((out / "best_config.json").read_text())
    assert best["data"] == csv and best["format"] == "csv" and best["codewords"] == 16
    # the file runs as it is; explicit flags (--out, --no-export) override it
    run_out = tmp_path / "best_run"
    code = main(["run", "--config", str(out / "best_config.json"), "--out", str(run_out), "--no-export"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_out / "metrics.json").read_text())
    base, mec = metrics["runs"]
    assert base["method"] == "baseline" and mec["method"] == "mec"
    assert mec["mec"]["alpha"] == best["alpha"] and mec["mec"]["codewords"] == 16
    assert not (run_out / "mec" / "model.onnx").exists()


def test_run_config_file_and_flag_precedence(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "fm", "epochs": 7, "codewords": 16, "verbose": 0, "export": False}))
    argv = ["run", "--config", str(path), "--epochs", "3", "--quiet"]
    cfg = run_config_from_args(build_parser().parse_args(argv), argv[1:])
    assert (cfg.model, cfg.epochs, cfg.codewords, cfg.verbose, cfg.export) == ("fm", 3, 16, 0, False)
    assert cfg.batch_size == 1024 and cfg.methods == ["none"]  # neither in the file nor given: defaults
    path.write_text(json.dumps({"model": "fm", "epoch": 7, "cdewords": 16}))
    code = main(["run", "--config", str(path), "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) ['cdewords', 'epoch']" in err and str(path) in err


def test_cli_tune_memory_budget_rejects_trials_and_is_not_the_tiered_budget(tmp_path, monkeypatch):
    """``tfmec tune --memory-budget`` rejects trials over it; it must not switch the trials' MEC to the
    popularity tiers of ``tfmec run --memory-budget`` (RunConfig.memory_budget)."""
    import tfmec.tuning

    seen = {}

    def fake_tune(cfg, method, **kwargs):
        seen.update(cfg=cfg, **kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(tfmec.tuning, "tune", fake_tune)
    code = main(["tune", "--data", "synthetic", "--rows", "1000", "--method", "mec", "--trials", "1",
                 "--memory-budget", "50000", "--out", str(tmp_path / "t"), "--quiet"])
    assert code == 2
    assert seen["memory_budget_bytes"] == 50000
    assert seen["cfg"].memory_budget is None and seen["cfg"].target_ratio is None
