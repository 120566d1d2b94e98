"""MEC stages 1 and 2 under tf.distribute (issue 9): MirroredStrategy over two logical CPUs, and
MultiWorkerMirroredStrategy with two worker processes on loopback.

The training runs in child processes (tests/distributed_children.py): logical devices and the cluster
must be configured before TensorFlow initialises. Each child inherits this run's Keras mode
(``TF_USE_LEGACY_KERAS``), so the Keras 3 run and the tf-keras run of the suite cover both modes:

* mirrored: stages 0-2 train in both modes; the distributed stage-1 loop matches the single-device
  loop where their losses are the same function (equal weights, no PWR/contrastive term);
* multi-worker, tf-keras: both workers reach identical stage-1 codes/codebooks and stage-2 weights;
* multi-worker, Keras 3: stage 1 (plain TensorFlow) still runs on both workers with identical results,
  and the stage-0 fit raises tfmec's MultiWorkerKerasError (keras issue 20585) instead of failing
  inside TensorFlow.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from tfmec.backend import IS_LEGACY_KERAS
from tfmec.distribute import MultiWorkerKerasError, check_fit_supported, is_multi_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "distributed_children.py")
TIMEOUT = 300


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n: int) -> list:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(text: str) -> str:
    return text[-4000:]


def test_mirrored_two_cpus_stage1_and_stage2(tmp_path):
    out = tmp_path / "mirrored.npz"
    proc = subprocess.run([sys.executable, CHILD, "mirrored", str(out)], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and "CHILD_OK mirrored 2" in proc.stdout, _tail(proc.stdout + proc.stderr)
    arrays = np.load(out)
    fields = sorted({k.split("_")[1] for k in arrays.files if k.startswith("stage1_")})
    assert len(fields) == 2
    for f in fields:
        # the split step computes the single-device step's mean (up to float rounding)
        np.testing.assert_array_equal(arrays[f"exact_mirrored_{f}_codes"], arrays[f"exact_single_{f}_codes"])
        np.testing.assert_allclose(arrays[f"exact_mirrored_{f}_codebooks"], arrays[f"exact_single_{f}_codebooks"],
                                   atol=1e-4)
        np.testing.assert_allclose(arrays[f"exact_mirrored_{f}_history"], arrays[f"exact_single_{f}_history"],
                                   rtol=1e-4)
        codes = arrays[f"stage1_{f}_codes"]
        assert codes.dtype == np.uint8 and codes.shape[1] == 2 and codes.max() < 16
    assert any(k.startswith("stage2_") for k in arrays.files)


def test_multi_worker_two_processes_on_loopback(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    outs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    procs = []
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, CHILD, "worker", str(outs[i])], env=_env(TF_CONFIG=config),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:  # a hung collective: end both workers (only the ones started here)
                p.kill()
                p.communicate()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0 and "CHILD_OK worker 2" in log, f"worker {i}:\n" + _tail(log)
        if not IS_LEGACY_KERAS:
            assert "KERAS3_GUARD_OK" in log, f"worker {i}:\n" + _tail(log)
    a, b = np.load(outs[0]), np.load(outs[1])
    assert sorted(a.files) == sorted(b.files)
    stage1 = [k for k in a.files if k.startswith("stage1_")]
    stage2 = [k for k in a.files if k.startswith("stage2_")]
    assert len(stage1) == 4
    assert bool(stage2) == IS_LEGACY_KERAS  # stage 2 trains only where multi-worker fit works
    for key in a.files:  # every weight identical, bit for bit, on both workers
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _fake_multi_worker_strategy():
    extended = types.SimpleNamespace(_in_multi_worker_mode=lambda: True)
    return types.SimpleNamespace(extended=extended)


def test_keras3_multi_worker_guard():
    strategy = _fake_multi_worker_strategy()
    assert is_multi_worker(strategy)
    assert not is_multi_worker(None)
    model = types.SimpleNamespace(distribute_strategy=strategy)
    if IS_LEGACY_KERAS:  # tf-keras trains multi-worker: no error
        check_fit_supported(model)
        check_fit_supported(strategy=strategy)
        return
    with pytest.raises(MultiWorkerKerasError, match=r"20585.*TF_USE_LEGACY_KERAS=1"):
        check_fit_supported(strategy=strategy)
    from tfmec.training import fit_early_stopping

    with pytest.raises(MultiWorkerKerasError, match="20585"):  # before any data is touched
        fit_early_stopping(model, None, None)


def test_mec_model_fit_is_guarded(monkeypatch):
    """``MECModel.fit`` (what stage 2 trains) runs the same check before Keras's fit."""
    import tfmec.distribute as dist
    from tfmec.backend import keras
    from tfmec.mec.model import MECModel

    inp = keras.Input(shape=(2,))
    model = MECModel(inputs=inp, outputs=keras.layers.Dense(1)(inp))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    monkeypatch.setattr(dist, "ambient_strategy", _fake_multi_worker_strategy)
    if IS_LEGACY_KERAS:  # tf-keras trains multi-worker: the check passes and fit runs
        history = model.fit(x, y, epochs=1, verbose=0)
        assert len(history.history["loss"]) == 1
        return
    with pytest.raises(MultiWorkerKerasError, match="20585"):
        model.fit(x, y, epochs=1, verbose=0)
