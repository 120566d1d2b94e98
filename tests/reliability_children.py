"""Child programs and SIGKILL helpers shared by the reliability tests (tests/test_reliability_*.py) and
the fault campaign (bench/reliability.py).

``TRAINING_CHILD`` trains (``stage1``: MEC stage 1 on two random tables; ``fit``: a MEC stage-2 fit of a
small DeepFM) with checkpoints, writing one progress line per training step. ``WRITER_CHILD`` writes
artifacts in a loop (``savedmodel``: SavedModel versions; ``files``: model.keras, vocabulary.json and
metrics.json), announcing ``start k`` / ``done k <seconds>``. The helpers start them, SIGKILL them at a
chosen step or inside a chosen write, and read their progress files.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINING_CHILD = textwrap.dedent('''
    import os, sys
    import numpy as np
    mode, checkpoint_dir, progress_path, out_path = sys.argv[1:5]
    progress = open(progress_path, "a", buffering=1)

    def mark(*parts):
        progress.write(" ".join(map(str, parts)) + "\\n")

    if mode == "stage1":
        from tfmec.mec import learn_codes
        rng = np.random.default_rng(0)
        tables = {"a": rng.normal(size=(3000, 8)).astype(np.float32), "b": rng.normal(size=(900, 8)).astype(np.float32)}
        freq = {"a": rng.integers(1, 100, 3000), "b": rng.integers(1, 50, 900)}
        codes = learn_codes(tables, freq, num_subspaces=2, num_codewords=16, epochs=4, batch_size=256, alpha=1e-3,
                            beta=0.05, patience=10, seed=3, progress=False, checkpoint_dir=checkpoint_dir,
                            checkpoint_every=5, on_step=lambda table, epoch, step: mark(table, epoch, step))
        arrays = {f"{n}_{k}": getattr(fc, k) for n, fc in codes.items() for k in ("codes", "codebooks")}
        arrays.update({f"{n}_history": np.asarray([h["loss"] for h in fc.stats["history"]]) for n, fc in codes.items()})
    else:
        import tfmec
        from tfmec.backend import IS_LEGACY_KERAS, keras
        from tfmec.mec import compress_embeddings, learn_codes
        from tfmec.training import compile_ctr, fit_early_stopping

        class Progress(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                mark("batch", self.epoch, batch)

        from tfmec.data import CATEGORICAL, NUMERIC, Field, Schema, SyntheticCTR
        schema = Schema([Field("I1", NUMERIC, "log_square"), Field("I2", NUMERIC)]
                        + [Field(f"C{i}", CATEGORICAL) for i in (1, 2, 3)])
        reader = SyntheticCTR(rows=3000, seed=0, vocab_sizes=[20, 300, 3000], num_numeric=2)
        data = tfmec.data.load(reader, schema, batch_size=256, progress=False)
        keras.utils.set_random_seed(0)
        base = tfmec.models.DeepFM(data.schema, embedding_dim=4, hidden_units=(16,), seed=0,
                                   dropout=0.0 if IS_LEGACY_KERAS else 0.2)
        codes = learn_codes(base, data.frequencies, num_subspaces=2, num_codewords=8, epochs=0, fields=["C2", "C3"],
                            progress=False)
        model = compress_embeddings(base, codes, contrastive_weight=0.05, seed=0)  # MEC stage 2, negatives on
        compile_ctr(model, 3e-3)
        fit = fit_early_stopping(model, data.train_stream, data.valid, epochs=4, patience=10, verbose=0,
                                 keep_start=True, checkpoint_dir=checkpoint_dir, callbacks=[Progress()])
        metric_state = {id(v) for m in model.metrics for v in m.variables}  # tf-keras lists them as weights
        arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.weights) if id(w) not in metric_state}
        arrays["val_auc"] = np.asarray(fit["history"]["val_auc"])
        arrays["best_epoch"] = np.asarray(fit["best_epoch"])
    np.savez(out_path, **arrays)
    mark("done")
''')


def child_env() -> dict:
    """The environment of a child: this one (Keras mode included), quiet TensorFlow, the repository importable."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def step_lines(path) -> int:
    """Progress lines written so far (one per training step)."""
    try:
        with open(path) as fh:
            return sum(1 for line in fh if line.strip() and line.strip() != "done")
    except FileNotFoundError:
        return 0


def start_training(script, mode, checkpoint_dir, progress, out):
    """Starts :data:`TRAINING_CHILD` (written to ``script``) in ``mode`` (``stage1`` or ``fit``)."""
    return subprocess.Popen([sys.executable, str(script), mode, str(checkpoint_dir), str(progress), str(out)],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=600):
    """Waits for a child and checks that it succeeded."""
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]


def kill_at_step(proc, progress, step: int, timeout: float = 600.0) -> int:
    """Waits until the child has written ``step`` progress lines, then SIGKILLs it; returns the step
    count seen at the kill."""
    deadline = time.monotonic() + timeout
    while step_lines(progress) < step:
        if proc.poll() is not None:
            output = proc.stdout.read()
            raise AssertionError(f"the child ended (rc {proc.returncode}) before step {step}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the child did not reach step {step} within {timeout}s")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return step_lines(progress)


def run_killed_and_resumed(tmp_path, mode: str, seed: int, first_checkpoint: int):
    """The reference run, then a run SIGKILLed at a random step (drawn with ``seed`` between the first
    checkpoint, after step ``first_checkpoint``, and the end) and its resumption; returns
    ``(reference arrays, resumed arrays, step seen at the kill, steps of the whole run)``."""
    script = tmp_path / "child.py"
    script.write_text(TRAINING_CHILD)
    ref_out, out = tmp_path / "ref.npz", tmp_path / "resumed.npz"
    finish(start_training(script, mode, tmp_path / "ckpt-ref", tmp_path / "ref.progress", ref_out))
    total = step_lines(tmp_path / "ref.progress")
    step = random.Random(seed).randint(first_checkpoint + 2, total - 2)
    proc = start_training(script, mode, tmp_path / "ckpt", tmp_path / "killed.progress", out)
    seen = kill_at_step(proc, tmp_path / "killed.progress", step)
    assert not out.exists() and seen < total  # really interrupted
    finish(start_training(script, mode, tmp_path / "ckpt", tmp_path / "resumed.progress", out))
    redone = step_lines(tmp_path / "resumed.progress")
    assert 0 < redone < total  # it resumed: it did not start again from scratch
    return dict(np.load(ref_out)), dict(np.load(out)), seen, total


WRITER_CHILD = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    mode, out_dir, progress_path = sys.argv[1:4]
    progress = open(progress_path, "a", buffering=1)
    import tfmec
    from tfmec.atomic import write_json_atomic
    from tfmec.data import CATEGORICAL, NUMERIC, Field, Schema, SyntheticCTR
    from tfmec.io import save_model

    schema = Schema([Field("I1", NUMERIC, "log_square"), Field("I2", NUMERIC)]
                    + [Field(f"C{i}", CATEGORICAL) for i in (1, 2, 3)])
    data = tfmec.data.load(SyntheticCTR(rows=1500, seed=0, vocab_sizes=[20, 300, 3000], num_numeric=2), schema,
                           batch_size=256, progress=False)
    models = [tfmec.models.DeepFM(data.schema, embedding_dim=4, hidden_units=(8,), seed=s) for s in (0, 1)]
    chunk = next(SyntheticCTR(rows=64, seed=5, vocab_sizes=[20, 300, 3000], num_numeric=2).chunks(64))
    raw = {f.name: (chunk.features[f.source].astype(np.float32) if f.kind == NUMERIC
                    else chunk.features[f.source].astype(str)) for f in schema}
    ids = data.encoder.encode(chunk.features)
    np.savez(os.path.join(out_dir, "request.npz"), **raw)
    np.savez(os.path.join(out_dir, "ids.npz"), **ids)
    for i, m in enumerate(models):
        np.save(os.path.join(out_dir, f"keras{i}.npy"), np.asarray(m(ids)).reshape(-1))
    if mode == "savedmodel":
        base = os.path.join(out_dir, "ctr")
        for k in range(1, 9):
            progress.write(f"start {k}\\n")
            t0 = time.perf_counter()
            path = tfmec.export.saved_model(models[0], base, data.encoder)
            if k == 1:
                np.save(os.path.join(out_dir, "v1.npy"), tfmec.export.predict_saved_model(path, dict(
                    (n, v.astype(object) if v.dtype.kind == "U" else v) for n, v in raw.items())))
            progress.write(f"done {k} {time.perf_counter() - t0:.3f}\\n")
    else:
        payloads = [{"version": i, "values": list(range(i, 200_000 + i))} for i in (0, 1)]
        for k in range(1, 200):
            progress.write(f"start {k}\\n")
            t0 = time.perf_counter()
            save_model(models[k % 2], os.path.join(out_dir, "model.keras"))
            data.encoder.save(os.path.join(out_dir, "vocabulary.json"))
            write_json_atomic(os.path.join(out_dir, "metrics.json"), payloads[k % 2])
            progress.write(f"done {k} {time.perf_counter() - t0:.3f}\\n")
    progress.write("finished\\n")
''')


def progress_lines(path) -> list[list[str]]:
    """The writer child's progress lines, split into words."""
    try:
        with open(path) as fh:
            return [line.split() for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def kill_during_write(tmp_path, mode: str, seed: int, first: int, last: int):
    """Runs the child, SIGKILLs it during write number ``k`` (drawn with ``seed`` from ``first..last``)
    after a random fraction of the previous write's duration; returns ``(output folder, k, progress
    lines)``."""
    script = tmp_path / "child.py"
    script.write_text(WRITER_CHILD)
    out = tmp_path / "out"
    out.mkdir()
    progress = tmp_path / "progress"
    rng = random.Random(seed)
    k = rng.randint(first, last)
    proc = subprocess.Popen([sys.executable, str(script), mode, str(out), str(progress)], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while ["start", str(k)] not in progress_lines(progress):
        if proc.poll() is not None:
            output = proc.stdout.read()[-3000:]
            raise AssertionError(f"the child ended (rc {proc.returncode}) before write {k}:\n{output}")
        assert time.monotonic() < deadline, f"write {k} did not start in time"
        time.sleep(0.002)
    last_duration = float([line for line in progress_lines(progress) if line[0] == "done"][-1][2])
    time.sleep(rng.uniform(0.0, 0.9) * last_duration)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    lines = progress_lines(progress)
    assert lines[-1][0] == "start", f"the kill did not land inside a write: {lines[-3:]}"
    return out, k, lines


def raw_request(out) -> dict:
    """The serving request the writer child saved (string columns as object arrays)."""
    with np.load(out / "request.npz", allow_pickle=False) as arrays:
        return {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in arrays.items()}
