"""Issue 18, class 9: runs that work but cannot mean what their numbers say exit 0 WITH a warning,
printed and recorded in metrics.json and the report."""
import json

import numpy as np

from tfmec.cli import main
from tfmec.data.diagnostics import degenerate_data_warnings, repeated_files

ARGS = ["--model", "lr", "--epochs", "1", "--batch-size", "256", "--quiet", "--no-export"]


def _csv(path, rows, seed, categories=50):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, categories, rows), rng.integers(0, categories, rows)
    y = ((a + b) % 3 == 0).astype(int)
    path.write_text("y,a,b\n" + "".join(f"{yy},a{aa},b{bb}\n" for yy, aa, bb in zip(y, a, b)))
    return path


def test_the_same_file_given_twice_is_warned_about(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", 3000, 0, categories=1000)
    out = tmp_path / "twice"
    code = main(["run", "--data", f"{data},{data}", "--format", "csv", "--label", "y", "--method", "none",
                 "--out", str(out), *ARGS])
    assert code == 0
    err = capsys.readouterr().err
    assert f"warning: the data file {data} is given twice" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("given twice" in w for w in metrics["warnings"])
    assert any("identical twin" in w for w in metrics["warnings"])
    assert "## Warnings" in (out / "report.md").read_text()


def test_a_copy_of_a_file_under_another_name_is_warned_about(tmp_path):
    a = _csv(tmp_path / "a.csv", 100, 0)
    b = tmp_path / "b.csv"
    b.write_bytes(a.read_bytes())
    (message,) = repeated_files([str(a), str(b)])
    assert "have the same content" in message


def test_mec_that_quantises_no_table_is_warned_about(tmp_path, capsys):
    data = _csv(tmp_path / "small.csv", 600, 1, categories=5)
    out = tmp_path / "mec"
    code = main(["run", "--data", str(data), "--format", "csv", "--label", "y", "--method", "mec",
                 "--stage1-epochs", "1", "--out", str(out), *ARGS])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: mec quantised no table" in err
    assert any("quantised no table" in w for w in json.loads((out / "metrics.json").read_text())["warnings"])


def test_all_oov_test_ids_are_warned_about():
    import tensorflow as tf

    from tfmec.data import CATEGORICAL, Field, Schema

    class Data:
        schema = Schema([Field("a", CATEGORICAL, vocab_size=10), Field("b", CATEGORICAL, vocab_size=10)])
        train = tf.data.Dataset.from_tensor_slices(({"a": np.arange(1, 9), "b": np.arange(1, 9)},
                                                    np.array([0, 1] * 4, "float32"))).batch(4)
        test = tf.data.Dataset.from_tensor_slices(({"a": np.zeros(8, "int64"), "b": np.zeros(8, "int64")},
                                                   np.array([0, 1] * 4, "float32"))).batch(4)

    (message,) = degenerate_data_warnings(Data())
    assert message.startswith("every categorical id of the test split is OOV (id 0) in all 2 fields")
    clean = type("Clean", (Data,), {"test": Data.train.map(lambda x, y: ({"a": x["a"] + 1, "b": x["b"]}, y))})
    assert degenerate_data_warnings(clean()) == []
