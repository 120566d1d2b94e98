"""Issue 18, class 1: settings that would train garbage are refused before any work, from the command
line and from ``--config`` alike, and a loss that becomes NaN or infinite stops the run (exit 2)."""
import json
import re

import numpy as np
import pytest

from tfmec.cli import main
from tfmec.experiment import RunConfig

BASE = ["--rows", "2000", "--model", "fm", "--epochs", "1", "--batch-size", "256", "--quiet"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning-rate", "inf"], r"--learning-rate \(setting 'learning_rate'\) must be a finite number, got inf"),
        (["--learning-rate", "nan"], r"--learning-rate \(setting 'learning_rate'\) must be a finite number, got nan"),
        (["--method", "mec", "--alpha", "inf"], r"--alpha \(setting 'alpha'\) must be a finite number"),
        (["--method", "mec", "--beta=-inf"], r"--beta \(setting 'beta'\) must be a finite number"),
        (["--method", "afm", "--afm-energy", "nan"], r"--afm-energy \(setting 'afm_energy'\) must be a finite"),
    ],
)
def test_non_finite_flags_are_refused(args, message, tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path / "x"), *BASE, *args])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "x" / "metrics.json").exists()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"codewords": "16"}, r"--codewords \(setting 'codewords'\) must be an integer, got '16' \(str\)"),
        ({"learning_rate": "0.01"}, r"--learning-rate \(setting 'learning_rate'\) must be a number, got '0.01'"),
        ({"subspaces": 1.5}, r"--subspaces \(setting 'subspaces'\) must be an integer, got 1.5"),
        ({"share_codebooks": "yes"}, r"--share-codebooks \(setting 'share_codebooks'\) must be true or false"),
        ({"methods": ["none", 3]}, r"--methods \(setting 'methods'\) must hold strings, got 3"),
        ({"fractions": [0.8, "0.1", 0.1]}, r"--fractions \(setting 'fractions'\): every entry must be a number"),
        ({"seed": None}, r"--seed \(setting 'seed'\) must be an integer, got None"),
        ({"alpha": 1e400}, r"--alpha \(setting 'alpha'\) must be a finite number, got inf"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused(settings, message, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings))
    code = main(["run", "--out", str(tmp_path / "x"), "--config", str(config), *BASE])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(message, err), err


def test_integral_floats_from_json_are_accepted_as_integers():
    cfg = RunConfig.from_dict({"codewords": 16.0, "epochs": 2.0})
    cfg.validate()
    assert cfg.codewords == 16 and isinstance(cfg.codewords, int) and cfg.epochs == 2


def test_a_nan_loss_stops_the_run_with_exit_2(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["run", "--out", str(out), *BASE, "--learning-rate", "1e35", "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the loss became nan" in err.lower() or "the loss became inf" in err.lower(), err
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists()


def test_nan_scores_are_never_given_an_auc():
    import tensorflow as tf

    from tfmec.backend import keras
    from tfmec.evaluation import evaluate

    x = keras.Input(shape=(1,))
    model = keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(x))
    model.layers[-1].set_weights([np.full((1, 1), np.nan, "float32"), np.zeros(1, "float32")])
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 1), "float32"), np.ones(8, "float32"))).batch(4)
    with pytest.raises(ValueError, match=r"predicts NaN or infinite scores for 8 of 8 rows"):
        evaluate(model, data)
