"""Issue 18, class 4: two runs into one output folder leave one complete run and one clear error."""
import json
import os
import subprocess
import sys
import time

import pytest

from tfmec.cli import main
from tfmec.outlock import LOCK_FILE, OutputInUseError, output_lock

ARGS = ["run", "--data", "synthetic", "--rows", "3000", "--model", "fm", "--method", "none", "--epochs", "1",
        "--batch-size", "256", "--quiet", "--seed", "3"]


def test_second_run_into_a_busy_folder_stops_with_a_clear_error(tmp_path, capsys):
    out = tmp_path / "shared_out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen([sys.executable, "-m", "tfmec.cli", *ARGS, "--out", str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / LOCK_FILE
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid), "the first run never took the lock"
        code = main([*ARGS, "--seed", "4", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2
        assert f"--out {out} is being written by another tfmec run (pid {first.pid})" in err
        assert "Traceback" not in err
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 3  # the folder holds the first run only, complete
    assert (out / "baseline" / "model.keras").exists()


def test_the_lock_is_released_when_the_run_ends_and_blocks_while_held(tmp_path):
    out = str(tmp_path / "o")
    with output_lock(out):
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from tfmec.outlock import output_lock\n"
             "try:\n    output_lock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(type(e).__name__)",
             out], capture_output=True, text=True, timeout=120)
        assert child.stdout.strip() == "OutputInUseError"
    with output_lock(out):  # released: taken again at once
        pass
    with pytest.raises(OutputInUseError, match="is being written by another tfmec run"):
        with output_lock(out):
            with output_lock(out):  # a second holder, even in one process, is refused
                pass
