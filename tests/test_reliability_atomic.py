"""Issue 10, atomic artifacts: killing the process (SIGKILL, which runs no cleanup) while it writes a
SavedModel version, a ``.keras`` file, a vocabulary or ``metrics.json`` leaves the earlier artifact
intact and no partial one visible; what a killed writer left behind (a hidden ``.tmp-<pid>-...``) is
removed by the next write.

The kill tests run a child process that writes artifacts in a loop, announcing ``start k`` / ``done k``
in a progress file; the parent waits for a ``start`` line chosen by a seeded RNG, sleeps a seeded random
fraction of one write's duration and SIGKILLs the child, then checks every artifact on disk.
"""
import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.atomic import TMP_PREFIX, host_tag, remove_stale_temporaries, write_json_atomic
from tfmec.data import load_vocabularies
from tfmec.io import load_model, save_model

from reliability_children import kill_during_write, raw_request  # tests/ is on sys.path


def test_sigkill_during_saved_model_export_leaves_earlier_versions_intact(tmp_path):
    out, k, lines = kill_during_write(tmp_path, "savedmodel", seed=11, first=2, last=4)
    base = out / "ctr"
    versions = export.existing_versions(str(base))
    completed = [int(line[1]) for line in lines if line[0] == "done"]
    assert completed and versions[: len(completed)] == completed  # every finished version is there
    assert set(versions) <= set(completed) | {k}  # the interrupted one only if its rename happened
    v1 = np.load(out / "v1.npy")
    request = raw_request(out)
    for version in versions:  # no partial version directory: each one loads and answers like version 1
        path = base / str(version)
        assert (path / "saved_model.pb").is_file() and (path / "assets.extra" / "tfmec.json").is_file()
        np.testing.assert_array_equal(export.predict_saved_model(str(path), request), v1)
    hidden = [n for n in os.listdir(base) if not n.isdigit()]
    assert all(n.startswith(TMP_PREFIX) for n in hidden)  # a half-written version is invisible to TF Serving
    assert remove_stale_temporaries(str(base)) == hidden and sorted(os.listdir(base)) == [str(v) for v in versions]


def test_sigkill_during_keras_vocabulary_and_metrics_writes_leaves_whole_files(tmp_path):
    out, k, lines = kill_during_write(tmp_path, "files", seed=12, first=2, last=6)
    model = load_model(str(out / "model.keras"))  # a complete archive: one of the two models
    with np.load(out / "ids.npz", allow_pickle=False) as arrays:
        ids = {name: tf.constant(v) for name, v in arrays.items()}
    got = np.asarray(model(ids)).reshape(-1)
    assert any(np.array_equal(got, np.load(out / f"keras{i}.npy")) for i in (0, 1))
    vocabularies, numeric = load_vocabularies(str(out / "vocabulary.json"))
    assert set(vocabularies) == {"I1", "C1", "C2", "C3"} and set(numeric) == {"I2"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["values"] == list(range(metrics["version"], 200_000 + metrics["version"]))
    leftovers = [n for n in os.listdir(out) if n.startswith(".")]
    assert all(n.startswith(TMP_PREFIX) for n in leftovers)
    write_json_atomic(str(out / "metrics.json"), {"version": 2})  # the next write clears the dead writer's files
    assert not [n for n in os.listdir(out) if n.startswith(".")]


# ----------------------------------------------------------------------------------- in-process checks
def _tiny_model(seed=0):
    from tfmec.backend import keras

    inp = keras.Input((3,), name="x")
    return keras.Model(inp, keras.layers.Dense(1, name="d", kernel_initializer=keras.initializers.GlorotUniform(seed))(
        inp))


def test_a_failed_keras_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "m.keras")
    first = _tiny_model(0)
    save_model(first, path)
    before = open(path, "rb").read()
    second = _tiny_model(1)

    def half_then_fail(filepath, *args, **kwargs):
        with open(filepath, "wb") as fh:
            fh.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(second, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(second, path)
    assert open(path, "rb").read() == before and zipfile.is_zipfile(path)
    assert os.listdir(tmp_path) == ["m.keras"]  # the temporary file is gone too
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(load_model(path)(x)), np.asarray(first(x)))
    with pytest.raises(ValueError, match="must end in .keras"):
        save_model(first, str(tmp_path / "m.h5"))


def test_code_files_from_different_saves_are_refused(tmp_path):
    from tfmec.mec import learn_codes
    from tfmec.mec.codes import CodeSet

    rng = np.random.default_rng(0)
    tables = {"t": rng.normal(size=(300, 4)).astype(np.float32)}
    a = learn_codes(tables, num_subspaces=2, num_codewords=8, epochs=0, progress=False)
    b = learn_codes(tables, num_subspaces=2, num_codewords=8, epochs=0, progress=False, seed=5)
    a.save(str(tmp_path / "a"))
    b.save(str(tmp_path / "b"))
    np.testing.assert_array_equal(CodeSet.load(str(tmp_path / "a"))["t"].codes, a["t"].codes)
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")  # a kill between the two files' renames
    with pytest.raises(ValueError, match="checksum mismatch"):
        CodeSet.load(str(tmp_path / "a"))
    (tmp_path / "a.json").write_text('{"format": "tfmec-pq-codes", "fields": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        CodeSet.load(str(tmp_path / "a"))


def test_stale_temporaries_of_live_writers_are_kept(tmp_path):
    host = host_tag()
    live = tmp_path / f"{TMP_PREFIX}{os.getppid()}@{host}-x.json"
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    dead = tmp_path / f"{TMP_PREFIX}{dead_pid}@{host}-y.json"
    elsewhere = tmp_path / f"{TMP_PREFIX}{dead_pid}@otherhost{host}-z.json"  # another machine's writer
    foreign = tmp_path / f"{TMP_PREFIX}abc.json"  # not ours (no pid): never touched
    for p in (live, dead, elsewhere, foreign):
        p.write_text("{")
    assert remove_stale_temporaries(str(tmp_path)) == [dead.name]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, elsewhere.name, foreign.name])
