"""Issue 10, interrupted training: MEC stage 1 and Keras training (the baseline and stage 2) resume after
the process is killed with SIGKILL at a random step, and end with the same result as an uninterrupted
run with the same seed.

Each kill test runs a child process three times: once uninterrupted (the reference), once killed with
SIGKILL after a step drawn from a seeded RNG (the child writes one line per training step to a progress
file; the parent kills it as soon as the line appears), and once more with the same arguments, which
resumes from the checkpoints. Tolerance: none. Every piece of state the rest of the run depends on is
checkpointed (weights, optimizer moments and step counts, the negatives' step counter in stage 1,
Keras 3's dropout seed state, early stopping's best weights, the loop position) and the data order is a
function of (seed, epoch), so the results must be bit-identical. The one exception is randomness drawn
by stateful TensorFlow ops, whose state lives inside op kernels: tf-keras's dropout, and the contrastive
negatives of ``QuantizedEmbedding`` in stage 2. The stage-2 child therefore uses dropout only under
Keras 3 and a contrastive weight of 0; ``bench/reliability.py`` measures the contrastive case.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfmec.backend import IS_LEGACY_KERAS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent('''
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
            def on_train_batch_end(self, batch, logs=None):
                mark("batch", batch)

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
        model = compress_embeddings(base, codes, contrastive_weight=0.0, seed=0)  # MEC stage 2's model
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


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _lines(path) -> int:
    try:
        with open(path) as fh:
            return sum(1 for line in fh if line.strip() and line.strip() != "done")
    except FileNotFoundError:
        return 0


def _start(script, mode, checkpoint_dir, progress, out):
    return subprocess.Popen([sys.executable, str(script), mode, str(checkpoint_dir), str(progress), str(out)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600):
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]


def kill_at_step(proc, progress, step: int, timeout: float = 600.0) -> int:
    """Waits until the child has written ``step`` progress lines, then SIGKILLs it; returns the step
    count seen at the kill."""
    deadline = time.monotonic() + timeout
    while _lines(progress) < step:
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
    return _lines(progress)


def run_killed_and_resumed(tmp_path, mode: str, seed: int, first_checkpoint: int):
    """The reference run, then a run SIGKILLed at a random step (drawn with ``seed`` between the first
    checkpoint, after step ``first_checkpoint``, and the end) and its resumption; returns
    ``(reference arrays, resumed arrays, step seen at the kill, steps of the whole run)``."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ref_out, out = tmp_path / "ref.npz", tmp_path / "resumed.npz"
    _finish(_start(script, mode, tmp_path / "ckpt-ref", tmp_path / "ref.progress", ref_out))
    total = _lines(tmp_path / "ref.progress")
    step = random.Random(seed).randint(first_checkpoint + 2, total - 2)
    proc = _start(script, mode, tmp_path / "ckpt", tmp_path / "killed.progress", out)
    seen = kill_at_step(proc, tmp_path / "killed.progress", step)
    assert not out.exists() and seen < total  # really interrupted
    _finish(_start(script, mode, tmp_path / "ckpt", tmp_path / "resumed.progress", out))
    redone = _lines(tmp_path / "resumed.progress")
    assert 0 < redone < total  # it resumed: it did not start again from scratch
    return dict(np.load(ref_out)), dict(np.load(out)), seen, total


def test_stage1_resumes_bit_identically_after_sigkill(tmp_path):
    ref, resumed, seen, total = run_killed_and_resumed(tmp_path, "stage1", seed=10, first_checkpoint=5)
    assert total == 4 * (12 + 4)  # 4 epochs of table "a" (12 batches of 256) and table "b" (4 batches)
    assert sorted(ref) == sorted(resumed)
    for key in ref:
        np.testing.assert_array_equal(resumed[key], ref[key], err_msg=f"{key} (killed after step {seen})")


def test_stage2_fit_resumes_bit_identically_after_sigkill(tmp_path):
    # the first checkpoint follows epoch 1 (about 10 batches of 256 rows)
    ref, resumed, seen, total = run_killed_and_resumed(tmp_path, "fit", seed=20 + int(IS_LEGACY_KERAS),
                                                       first_checkpoint=10)
    assert total % 4 == 0 and total >= 32  # 4 epochs
    assert sorted(ref) == sorted(resumed)
    for key in ref:
        np.testing.assert_array_equal(resumed[key], ref[key], err_msg=f"{key} (killed after step {seen})")


# ----------------------------------------------------------------------------------- in-process checks
def test_epoch_stream_order_depends_only_on_seed_and_epoch():
    import tensorflow as tf

    from tfmec.data.epochs import EpochStream

    rows = tf.data.Dataset.range(23)
    stream = EpochStream(rows, rows=23, batch_size=5, shuffle_buffer=23, seed=7)
    assert stream.steps_per_epoch == 5

    def flat(ds):
        return np.concatenate([b.numpy() for b in ds])

    whole = flat(stream.epochs(0, 4))
    assert len(whole) == 4 * 23
    np.testing.assert_array_equal(flat(stream.epochs(2, 4)), whole[2 * 23:])
    np.testing.assert_array_equal(flat(stream.epoch(1)), whole[23:46])
    assert sorted(whole[:23]) == list(range(23)) and not np.array_equal(whole[:23], whole[23:46])


def test_a_checkpoint_of_other_settings_is_refused_and_a_finished_fit_is_not_repeated(tmp_path):
    import tfmec
    from tfmec.backend import keras
    from tfmec.mec import learn_codes
    from tfmec.training import compile_ctr, fit_early_stopping

    rng = np.random.default_rng(1)
    tables = {"t": rng.normal(size=(500, 4)).astype(np.float32)}
    kwargs = dict(num_subspaces=2, num_codewords=8, epochs=2, batch_size=128, progress=False)
    first = learn_codes(tables, checkpoint_dir=str(tmp_path / "s1"), **kwargs)
    again = learn_codes(tables, checkpoint_dir=str(tmp_path / "s1"), **kwargs)  # finished: restored
    np.testing.assert_array_equal(first["t"].codebooks, again["t"].codebooks)
    with pytest.raises(ValueError, match="written for another table or other settings"):
        learn_codes(tables, checkpoint_dir=str(tmp_path / "s1"), **{**kwargs, "alpha": 0.5})
    other = {"t": tables["t"] + 1.0}
    with pytest.raises(ValueError, match="written for another table or other settings"):
        learn_codes(other, checkpoint_dir=str(tmp_path / "s1"), **kwargs)

    data = tfmec.data.load("synthetic", rows=1500, seed=0, batch_size=256, progress=False)

    def model(dim=4):
        keras.utils.set_random_seed(0)
        return compile_ctr(tfmec.models.LR(data.schema, seed=0) if dim is None else
                           tfmec.models.FM(data.schema, embedding_dim=dim, seed=0), 1e-2)

    m = model()
    fit = fit_early_stopping(m, data.train_stream, data.valid, epochs=2, patience=5, verbose=0,
                             checkpoint_dir=str(tmp_path / "fit"))
    assert fit["resumed_from_epoch"] is None and fit["epochs"] == 2
    m2 = model()
    repeat = fit_early_stopping(m2, data.train_stream, data.valid, epochs=2, patience=5, verbose=0,
                                checkpoint_dir=str(tmp_path / "fit"))
    assert repeat["resumed_from_epoch"] == 2 and repeat["history"] == fit["history"]
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="written for another model or other settings"):
        fit_early_stopping(model(dim=8), data.train_stream, data.valid, epochs=2, patience=5, verbose=0,
                           checkpoint_dir=str(tmp_path / "fit"))
    with pytest.raises(ValueError, match="written for another model or other settings"):
        fit_early_stopping(model(), data.train_stream, data.valid, epochs=3, patience=5, verbose=0,
                           checkpoint_dir=str(tmp_path / "fit"))
