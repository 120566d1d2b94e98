"""The ``tfmec`` command keeps TensorFlow's C++ logs out of its output unless ``--verbose`` (both Keras modes).

TensorFlow prints its start-up lines (absl's ``WARNING: All log messages before absl::InitializeLog()``,
``I0000 ... port.cc] oneDNN custom operations are on``, ``cudart_stub.cc``, ``cpu_feature_guard.cc``, and
at the first operation ``E0000 ... failed call to cuInit`` without a GPU) while it loads, before any
code of ``tfmec.cli`` runs; :mod:`tfmec._tf_logs` quiets them from ``tfmec/__init__.py``. These tests run
the real command in a subprocess, since in the pytest process TensorFlow is loaded already.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tfmec._tf_logs import command_args, filter_startup_lines

CPP_LOG = re.compile(r"^[IWEF]\d{4} ", re.M)
NOISE = ("cuInit", "oneDNN", "cpu_feature_guard", "absl::InitializeLog", "cudart_stub")
COMMAND = ["run", "--data", "synthetic", "--rows", "3000", "--model", "lr", "--method", "none", "--epochs", "1",
           "--quiet", "--no-export"]


def _run(tmp_path, *extra, env=None, command=None):
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ.update(env or {})
    args = command or [*COMMAND, "--out", str(tmp_path / "out"), *extra]
    proc = subprocess.run([sys.executable, "-m", "tfmec.cli", *args], capture_output=True, text=True, env=environ,
                          timeout=300)
    return proc, proc.stdout + proc.stderr


def _noise(output: str) -> list:
    return [line for line in output.splitlines() if CPP_LOG.match(line) or any(n in line for n in NOISE)]


def test_run_prints_no_tensorflow_cpp_log_line(tmp_path):
    proc, output = _run(tmp_path)
    assert proc.returncode == 0, output
    assert _noise(output) == [], "TensorFlow log lines in the output:\n" + "\n".join(_noise(output))
    assert "WARNING:tensorflow" not in output
    # Keras's known-harmless warnings about tfmec's own datasets are gone too
    assert "ran out of data" not in output and "shuffle=True" not in output
    assert "| baseline |" in (tmp_path / "out" / "report.md").read_text()
    assert "wrote " in proc.stdout


def test_verbose_lets_tensorflow_logs_through(tmp_path):
    proc, output = _run(tmp_path, "--verbose")
    assert proc.returncode == 0, output
    assert "wrote " in proc.stdout
    if not _noise(output):  # TensorFlow 2.21 on x86 prints its oneDNN notice while it loads; another build may not
        pytest.skip("this TensorFlow printed no log line to let through")
    assert "absl::InitializeLog" in output or CPP_LOG.search(output)


def test_a_level_set_by_the_user_is_kept(tmp_path):
    proc, output = _run(tmp_path, env={"TF_CPP_MIN_LOG_LEVEL": "1"}, command=["run", "--help"])  # loads TensorFlow
    assert proc.returncode == 0 and "--verbose" in proc.stdout, output
    assert not [line for line in output.splitlines() if re.match(r"^I\d{4} ", line)]  # below the user's level
    assert "absl::InitializeLog" not in output


def test_command_args_recognise_the_command_only():
    assert command_args(["-m", "run"], ["python", "-X", "importtime", "-m", "tfmec.cli", "run", "--verbose"]) == \
        ["run", "--verbose"]
    assert command_args(["/venv/bin/tfmec", "run", "-m"], ["python", "/venv/bin/tfmec", "run", "-m"]) == ["run", "-m"]
    assert command_args(["-m", "x"], ["python", "-m", "pytest", "x"]) is None
    assert command_args(["script.py"], ["python", "script.py", "-m", "tfmec.cli"]) is None
    assert command_args(["-c"], ["python", "-c", "import tfmec"]) is None


@pytest.mark.parametrize("level, kept", [
    (3, ["/x.py:3: UserWarning: hello", "  warnings.warn(", "F0000 00:00:17.49   1 x.cc:52] fatal"]),
    (2, ["/x.py:3: UserWarning: hello", "  warnings.warn(", "E0000 00:00:17.49   1 cuda_platform.cc:52] failed call "
         "to cuInit", "F0000 00:00:17.49   1 x.cc:52] fatal"]),
])
def test_filter_holds_back_only_log_lines_below_the_level(level, kept):
    text = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796311814.028509   14148 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796311814.073033   14148 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
        "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow.",
        "/x.py:3: UserWarning: hello",
        "  warnings.warn(",
        "E0000 00:00:17.49   1 cuda_platform.cc:52] failed call to cuInit",
        "F0000 00:00:17.49   1 x.cc:52] fatal",
    ]) + "\n"
    assert filter_startup_lines(text, level).splitlines() == kept
    assert filter_startup_lines(text, 0) == text


def test_progress_bars_know_the_steps_and_the_batches_stay_the_same(capsys):
    """``known_batches`` (what ``tfmec run`` notes for ``data.train``) gives Keras's progress bar the steps
    of an epoch that tf.data cannot count; the weights after two epochs (the second reshuffled) are the
    same bits as without it, and Keras's "ran out of data" / "shuffle=True" warnings are not shown."""
    import warnings

    import numpy as np

    from tfmec.backend import keras
    from tfmec.data import load
    from tfmec.models import build_model
    from tfmec.training import compile_ctr, fit_early_stopping, known_batches

    def fit(note: bool):
        keras.utils.set_random_seed(0)
        data = load("synthetic", rows=3000, seed=0, batch_size=256, progress=False)
        steps = data.train_stream.steps_per_epoch
        if note:
            known_batches(data.train, steps)
        keras.utils.set_random_seed(0)
        model = compile_ctr(build_model("lr", data.schema, embedding_dim=4, seed=0))
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_early_stopping(model, data.train, data.valid, epochs=2, patience=5, verbose=1, keep_start=True)
        return steps, model.get_weights(), capsys.readouterr().out, [str(w.message) for w in caught]

    steps, noted, shown, caught = fit(True)
    assert f"{steps}/{steps}" in shown and "Unknown" not in shown
    assert not [m for m in caught if "ran out of data" in m or "shuffle=True" in m]
    _, plain, shown_plain, _ = fit(False)
    assert all(np.array_equal(a, b) for a, b in zip(noted, plain, strict=True))
    assert "Unknown" in shown_plain  # Keras (both) cannot count a generator-fed dataset by itself
