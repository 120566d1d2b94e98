"""Issue 10, interrupted training: MEC stage 1 and Keras training (the baseline and stage 2) resume after
the process is killed with SIGKILL at a random step, and end with the same result as an uninterrupted
run with the same seed.

Each kill test runs a child process three times: once uninterrupted (the reference), once killed with
SIGKILL after a step drawn from a seeded RNG (the child writes one line per training step to a progress
file; the parent kills it as soon as the line appears), and once more with the same arguments, which
resumes from the checkpoints. Tolerance: none. Every piece of state the rest of the run depends on is
checkpointed (weights, optimizer moments and step counts, the negatives' step counter in stage 1 and
in each ``QuantizedEmbedding`` of stage 2, Keras 3's dropout seed state, early stopping's best weights,
the loop position) and the data order is a function of (seed, epoch), so the results must be
bit-identical. The one exception is randomness drawn by stateful TensorFlow ops, whose state lives
inside op kernels: tf-keras's dropout. The stage-2 child therefore uses dropout only under Keras 3; it
trains with the contrastive term on (beta = 0.05) in both modes.
"""
import numpy as np
import pytest

from tfmec.backend import IS_LEGACY_KERAS

from reliability_children import run_killed_and_resumed  # tests/ is on sys.path


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


AFM_KILL_CHILD = '''
import os, signal, sys
from tfmec import resume
from tfmec.cli import main

kill_in = os.environ.get("KILL_IN")  # a checkpoint folder: SIGKILL right after its first epoch is saved
save = resume.TrainingBackup.save


def save_then_maybe_die(self, epochs_done, finished=False):
    save(self, epochs_done, finished)
    if kill_in and os.path.samefile(self.directory, kill_in) and epochs_done == 1 and not finished:
        os.kill(os.getpid(), signal.SIGKILL)


resume.TrainingBackup.save = save_then_maybe_die
sys.exit(main(sys.argv[1:]))
'''


def test_afm_fine_tuning_uses_the_optimizer_flag_and_resumes_after_sigkill(tmp_path):
    """Issue 21: ``tfmec run --optimizer lazy_adam --checkpoint-dir D --method afm`` fine-tunes AFM's model
    with LazyAdam (the optimizer class is in the fine-tuning checkpoint's fingerprint) and, SIGKILLed
    right after the first fine-tuning epoch's checkpoint, resumes there: the rerun reports
    ``resumed_from_epoch`` 1, keeps the first epoch's record and, in Keras 3, ends with the test AUC of
    an uninterrupted run."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from reliability_children import ROOT, child_env
    from tfmec.resume import read_fingerprint

    script = tmp_path / "child.py"
    script.write_text(AFM_KILL_CHILD)

    def run(name, kill_in=None):
        ckpt, out = tmp_path / f"ckpt-{name}", tmp_path / f"out-{name}"
        from conftest import FEW_SYNTHETIC_FIELDS

        argv = ["run", "--data", "synthetic", "--rows", "3000", *FEW_SYNTHETIC_FIELDS, "--model", "deepfm", "--method", "afm",
                "--optimizer", "lazy_adam", "--epochs", "1", "--afm-fine-tune-epochs", "3", "--stage2-patience", "3",
                "--afm-calibration-batches", "2", "--batch-size", "256", "--seed", "3", "--no-export", "--quiet",
                "--checkpoint-dir", str(ckpt), "--out", str(out)]
        env = dict(child_env(), KILL_IN=str(kill_in) if kill_in else "")
        proc = subprocess.run([sys.executable, str(script), *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        return proc, ckpt, out

    ref, _, ref_out = run("ref")
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]
    killed_dir = tmp_path / "ckpt-killed" / "fit" / "afm" / "mlp"
    killed_dir.mkdir(parents=True)  # exists before the run so that the child can compare paths
    killed, ckpt, out = run("killed", kill_in=killed_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    latest = __import__("tensorflow").train.latest_checkpoint(str(killed_dir))
    fingerprint = json.loads(read_fingerprint(latest, "the AFM fine-tuning checkpoint"))
    assert fingerprint["optimizer"][0] == "LazyAdam"

    again, _, _ = run("killed")  # same folder, no kill: resumes
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    (afm_run,) = [r for r in metrics["runs"] if r["method"] == "afm"]
    mlp = [e for e in afm_run["afm"]["fine_tune"] if e["stage"] == "mlp"][0]
    assert mlp["resumed_from_epoch"] == 1
    assert afm_run["afm"]["settings"]["fine_tune"]["optimizer"] == "lazy_adam"
    reference = json.loads((ref_out / "metrics.json").read_text())
    (ref_afm,) = [r for r in reference["runs"] if r["method"] == "afm"]
    ref_mlp = [e for e in ref_afm["afm"]["fine_tune"] if e["stage"] == "mlp"][0]
    assert len(mlp["history"]["loss"]) == len(ref_mlp["history"]["loss"]) == 3
    # epoch 1 was trained before the kill and restored from the checkpoint, not trained again
    assert mlp["history"]["loss"][0] == ref_mlp["history"]["loss"][0]
    if not IS_LEGACY_KERAS:
        # Keras 3 keeps dropout's seed state in variables, which the checkpoint holds: the resumed run
        # ends exactly where the uninterrupted one does. tf-keras's dropout keeps it inside op kernels and
        # draws new masks after a restart (README, "Interrupted training resumes"): close, not equal.
        assert afm_run["test_auc"] == pytest.approx(ref_afm["test_auc"], abs=1e-12)
    assert os.path.isdir(tmp_path / "ckpt-killed" / "fit" / "baseline")
