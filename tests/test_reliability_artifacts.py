"""Issue 18, artifacts and what they are bound to (classes 2, 3, 7 and 8).

* Class 2, resume against other data: a training checkpoint is bound to the content of the files it
  was trained on (SHA-256 of every byte), not to their path; rewriting the data in place with the same
  row count, size and modification time makes the next run refuse the checkpoint with an error naming
  the checkpoint folder and the file whose content differs; the same bytes under another path resume.
* Class 3, artifacts another user can read: files come out ``0666 & ~umask`` and folders
  ``0777 & ~umask``, like plain writes (checked under umask 022 and 027, and, when the tests run as
  root, by reading every file of an exported version as the user ``nobody``).
* Class 7, bounded loading: ``tfmec.io.load_model`` bounds every member it reads or lets through
  (config.json by its declared size and by a stream that stops at the bound, metadata, assets, member
  count, expansion, nesting, HDF5 weights declaring more than they hold or reading outside the file).
* Class 8, full disks: ``OSError(ENOSPC)`` anywhere in a write, and TensorFlow's
  ``ResourceExhaustedError`` inside ``SaveV2``, end in one line naming the path (``ArtifactWriteError``;
  ``tfmec run`` exits 2); a full disk at any byte of ``CodeSet.save`` leaves the previous pair loadable.
"""
import builtins
import contextlib
import errno
import io
import json
import os
import stat
import subprocess
import tempfile
import tracemalloc
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.atomic import ArtifactWriteError, write_json_atomic
from tfmec.backend import keras
from tfmec.cli import main
from tfmec.io import LoadLimits, UnsafeModelError, load_model, save_model


def _tiny_model(seed=0, units=1):
    inp = keras.Input((3,), name="x")
    return keras.Model(inp, keras.layers.Dense(units, name="d", activation="sigmoid",
                                               kernel_initializer=keras.initializers.GlorotUniform(seed))(inp))


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root):
    """``{relative path: mode}`` of every folder and file under ``root`` (itself as ".")."""
    out = {}
    for directory, _, files in os.walk(root):
        out[os.path.relpath(directory, root)] = stat.S_IMODE(os.stat(directory).st_mode)
        for name in files:
            path = os.path.join(directory, name)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
    return out


# ----------------------------------------------------------------------------------- class 3: modes
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_artifacts_get_the_modes_of_plain_writes(tmp_path, mask):
    from tfmec.mec.codes import CodeSet, FieldCodes

    with umask(mask):
        model = _tiny_model()
        version = export.saved_model(model, str(tmp_path / "sm"))
        save_model(model, str(tmp_path / "model.keras"))
        write_json_atomic(str(tmp_path / "metrics.json"), {"a": 1})
        codes = CodeSet({"t": FieldCodes("t", np.zeros((5, 2), np.uint8), np.ones((2, 4, 2), np.float32))})
        codes.save(str(tmp_path / "codes"))
    modes = _modes(version)
    assert len(modes) >= 6 and "saved_model.pb" in modes and os.path.join("variables", "variables.index") in modes
    for rel, mode in modes.items():
        folder = os.path.isdir(os.path.join(version, rel))
        assert mode == (0o777 if folder else 0o666) & ~mask, (rel, oct(mode))
    for name in ("model.keras", "metrics.json", "codes.npz", "codes.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~mask, name


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_an_exported_version_is_readable_by_another_user():
    base = tempfile.mkdtemp(prefix="tfmec-modes-")
    try:
        os.chmod(base, 0o755)  # the test's own folder must let the other user in
        with umask(0o022):
            version = export.saved_model(_tiny_model(), os.path.join(base, "ctr"))
        assert stat.S_IMODE(os.stat(version).st_mode) == 0o755
        reader = ('set -e; n=0; for d in $(find "$1" -type d); do ls "$d" > /dev/null; done; '
                  'for f in $(find "$1" -type f); do cat "$f" > /dev/null; n=$((n+1)); done; echo $n')
        done = subprocess.run(["sh", "-c", reader, "sh", version], user=65534, group=65534, capture_output=True,
                              text=True, timeout=60)  # as "nobody", like a model server of its own
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) == sum(len(f) for _, _, f in os.walk(version)) >= 4
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------- class 2: resume
def _write_csv(path, seed, rows=600):
    rng = np.random.default_rng(seed)
    lines = ["label,n1,c1,c2"] + [f"{rng.integers(0, 2)},{rng.integers(0, 10)},{'abcdefgh'[rng.integers(0, 8)]},"
                                  f"{'ABCDEFGH'[rng.integers(0, 8)]}" for _ in range(rows)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _run_args(data, out, checkpoint):
    return ["run", "--data", str(data), "--format", "csv", "--label", "label", "--numeric", "n1", "--model", "lr",
            "--method", "none", "--epochs", "1", "--batch-size", "128", "--no-export", "--quiet", "--out", str(out),
            "--checkpoint-dir", str(checkpoint)]


def test_a_checkpoint_is_refused_for_data_rewritten_in_place(tmp_path, capsys):
    data, ck = tmp_path / "clicks.csv", tmp_path / "ck"
    _write_csv(data, 0)
    assert main(_run_args(data, tmp_path / "o1", ck)) == 0
    first = json.loads((tmp_path / "o1" / "metrics.json").read_text())["runs"][0]
    before = os.stat(data)
    _write_csv(data, 1)  # same path, same rows, same size, and the old modification time
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(data).st_size == before.st_size and os.stat(data).st_mtime_ns == before.st_mtime_ns
    capsys.readouterr()
    assert main(_run_args(data, tmp_path / "o2", ck)) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("tfmec: error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert str(ck / "fit" / "baseline") in line[0] and f"the content of {data} differs" in line[0]
    assert "written for other data" in line[0] and "sha256" in line[0]
    assert not (tmp_path / "o2" / "metrics.json").exists()

    copy = tmp_path / "moved.csv"  # the original bytes under another path: the checkpoint applies
    _write_csv(copy, 0)
    assert main(_run_args(copy, tmp_path / "o3", ck)) == 0
    again = json.loads((tmp_path / "o3" / "metrics.json").read_text())["runs"][0]
    assert again["test_auc"] == first["test_auc"] and again["history"] == first["history"]


def test_fingerprints_refuse_special_files_and_name_every_difference(tmp_path):
    from tfmec.data.fingerprint import check_unchanged, content_fingerprint
    from tfmec.resume import fingerprint_difference

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):  # no hang waiting for a writer
        content_fingerprint([str(fifo)])
    with pytest.raises(ValueError, match="is not a regular file"):
        content_fingerprint(["/dev/zero"])
    path = tmp_path / "d.txt"
    path.write_text("abc\n")
    fp = content_fingerprint([str(path)])
    assert fp[0]["bytes"] == 4 and len(fp[0]["sha256"]) == 64
    check_unchanged(fp)
    path.write_text("abd\n")
    with pytest.raises(ValueError, match=r"d\.txt changed while tfmec was reading it"):
        check_unchanged(fp)
    then = json.dumps({"variables": [[[3, 1], "float32"]], "optimizer": ["Adam", {"learning_rate": 0.001}],
                       "settings": {"epochs": 2, "data_content": [{"bytes": 4, "sha256": "a" * 64}]}})
    now = json.dumps({"variables": [[[3, 1], "float32"]], "optimizer": ["Adam", {"learning_rate": 0.01}],
                      "settings": {"epochs": 3, "data_content": [{"bytes": 4, "sha256": "b" * 64}],
                                   "_data_files": ["/x/d.txt"]}})
    text = fingerprint_difference(then, now)
    assert "optimizer[1].learning_rate: 0.001 then, 0.01 now" in text and "settings.epochs: 2 then, 3 now" in text
    assert "the content of /x/d.txt differs" in text


def test_a_damaged_training_checkpoint_is_refused_clearly(tmp_path):
    import tfmec
    from tfmec.training import compile_ctr, fit_early_stopping

    data = tfmec.data.load("synthetic", rows=800, seed=0, batch_size=256, progress=False)

    def fit():
        keras.utils.set_random_seed(0)
        model = compile_ctr(tfmec.models.LR(data.schema, seed=0), 1e-2)
        return fit_early_stopping(model, data.train_stream, data.valid, epochs=1, patience=2, verbose=0,
                                  checkpoint_dir=str(tmp_path / "fit"))

    fit()
    for name in os.listdir(tmp_path / "fit"):
        if ".data-" in name:
            with open(tmp_path / "fit" / name, "r+b") as fh:
                fh.truncate(3)
    with pytest.raises(ValueError, match=r"checkpoint in .*fit cannot be (read|restored)"):
        fit()


# ----------------------------------------------------------------------------------- class 7: loading
@pytest.fixture(scope="module")
def plain_file(tmp_path_factory):
    return save_model(_tiny_model(), str(tmp_path_factory.mktemp("plain") / "plain.keras"))


def _rebuild(src, dst, replace=None, extra=(), compression=zipfile.ZIP_STORED):
    """Copies a .keras archive, with ``replace`` {member: bytes} and ``extra`` [(name, bytes)] members."""
    replace = replace or {}
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w", compression=compression) as out:
        for name in archive.namelist():
            out.writestr(name, replace.get(name, archive.read(name)))
        for name, data in extra:
            out.writestr(name, data)
    return str(dst)


def _refused(path, match, limits=None, peak_mb=24):
    """load_model refuses ``path`` with ``match``, naming the file, within ``peak_mb`` of Python memory."""
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeModelError, match=match) as info:
            load_model(path, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path in str(info.value)
    assert peak < peak_mb * 2**20, f"{peak / 2**20:.0f} MB"


def test_config_json_is_bounded_before_it_is_read(plain_file, tmp_path):
    config = json.loads(zipfile.ZipFile(plain_file).read("config.json"))
    padded = json.dumps(config).encode() + b" " * (64 << 20)  # 64 MB of blanks, 64 kB deflated
    bomb = _rebuild(plain_file, tmp_path / "bomb.keras", {"config.json": padded}, compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(bomb) < 1 << 20
    _refused(bomb, r"config.json holds 64\.0 MiB \(at most 32\.0 MiB\)")
    _refused(bomb, "a decompression bomb")
    many = b"[" + b"0," * 3_000_000 + b"0]"  # 6 MB: three million values
    _refused(_rebuild(plain_file, tmp_path / "values.keras", {"config.json": many}), "JSON values", peak_mb=40)
    deep = b"[" * 100_000 + b"]" * 100_000
    _refused(_rebuild(plain_file, tmp_path / "deep.keras", {"config.json": deep}), "nests")
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    _refused(_rebuild(plain_file, tmp_path / "deep2.keras", {"config.json": deep}), "nests more than 200 levels")
    small = LoadLimits(max_config_bytes=100)
    _refused(plain_file, r"config.json holds .* \(at most 100 bytes\)", limits=small)


def test_assets_members_and_names_are_bounded(plain_file, tmp_path):
    rng = np.random.default_rng(0)
    big = rng.bytes(40 << 20)  # 80 MB of assets in two incompressible files
    _refused(_rebuild(plain_file, tmp_path / "assets.keras", extra=[("assets/a.bin", big), ("assets/b.bin", big)]),
             r"assets/ holds 80\.0 MiB in all \(at most 64\.0 MiB\)", peak_mb=8)
    zeros = b"\0" * (300 << 20)
    _refused(_rebuild(plain_file, tmp_path / "zeros.keras", extra=[("assets/z.bin", zeros)],
                      compression=zipfile.ZIP_DEFLATED), "a decompression bomb")
    del zeros
    many = tmp_path / "many.keras"
    with zipfile.ZipFile(plain_file) as archive, zipfile.ZipFile(many, "w") as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
        for i in range(10_001):
            out.writestr(f"assets/{i}", b"")
    _refused(str(many), "declares 10,004 members")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = _rebuild(plain_file, tmp_path / "twice.keras", extra=[("config.json", b"{}")])
    _refused(twice, r"members stored twice \['config.json'\]")
    _refused(_rebuild(plain_file, tmp_path / "escape.keras", extra=[("assets/../../evil.py", b"x")]),
             "absolute or escaping path")
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    _refused(str(fifo), "not a regular file")  # refused before it is opened: no hang


def _rewrite_weights(src, dst, edit):
    """Copies a .keras archive with ``edit(h5py.File)`` applied to its weights file."""
    import h5py

    with zipfile.ZipFile(src) as archive:
        blob = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(blob, "a") as h5:
        edit(h5)
    return _rebuild(src, dst, {"model.weights.h5": blob.getvalue()})


def test_weights_that_declare_more_than_they_hold_or_read_outside_are_refused(plain_file, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 48)

    def external(h5):
        h5.create_dataset("stolen", shape=(12,), dtype="float32", external=[(str(secret), 0, 48)])

    _refused(_rewrite_weights(plain_file, tmp_path / "external.keras", external), "outside the file")

    def link(h5):
        h5["elsewhere"] = __import__("h5py").ExternalLink(str(secret), "/x")

    _refused(_rewrite_weights(plain_file, tmp_path / "link.keras", link), "is a link")

    def huge(h5):  # 4 GB declared, nothing written: a few kB on disk
        h5.create_dataset("huge", shape=(1 << 20, 1 << 10), dtype="float32", chunks=(1024, 1024), compression="gzip")

    _refused(_rewrite_weights(plain_file, tmp_path / "huge.keras", huge), "declares more than")
    garbage = _rebuild(plain_file, tmp_path / "garbage.keras", {"model.weights.h5": b"\x89HDF\r\n" + b"\0" * 500})
    _refused(garbage, "not a readable HDF5 weights file")
    x = np.ones((2, 3), np.float32)  # the untouched file still loads and answers the same
    np.testing.assert_allclose(np.asarray(load_model(plain_file)(x)), np.asarray(_tiny_model()(x)), rtol=1e-6)


# ----------------------------------------------------------------------------------- class 8: full disks
class FullDisk:
    """Writes under ``root`` fail with ``OSError(ENOSPC)`` once ``budget`` bytes have been written (a disk
    with ``budget`` bytes free); ``fsync`` fails too once the budget is spent."""

    def __init__(self, monkeypatch, root, budget):
        self.root, self.left = os.path.abspath(root), budget
        real_open, real_fsync = builtins.open, os.fsync
        disk = self

        class Limited(io.FileIO):
            def write(self, data):
                n = len(memoryview(data).cast("B"))
                if n > disk.left:
                    written = super().write(memoryview(data).cast("B")[: disk.left]) if disk.left else 0
                    disk.left = 0
                    if written:
                        return written
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.left -= n
                return super().write(data)

        def limited_open(file, mode="r", *args, **kwargs):
            path = os.path.abspath(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""
            if path.startswith(disk.root) and any(c in mode for c in "wax+"):
                raw = Limited(path, mode.replace("b", "").replace("t", "") or "w")
                return raw if "b" in mode and kwargs.get("buffering", -1) == 0 else (
                    io.BufferedWriter(raw) if "b" in mode else io.TextIOWrapper(io.BufferedWriter(raw),
                                                                                encoding=kwargs.get("encoding")))
            return real_open(file, mode, *args, **kwargs)

        def limited_fsync(fd):
            if disk.left == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(builtins, "open", limited_open)
        monkeypatch.setattr(os, "fsync", limited_fsync)


def _codes(seed):
    from tfmec.mec.codes import CodeSet, FieldCodes

    rng = np.random.default_rng(seed)
    return CodeSet({f"t{i}": FieldCodes(f"t{i}", rng.integers(0, 8, (40, 2)), rng.normal(size=(2, 8, 2)))
                    for i in range(2)}, config={"seed": seed})


def test_a_full_disk_at_any_byte_of_a_code_save_keeps_a_whole_pair(tmp_path, monkeypatch):
    from tfmec.mec.codes import CodeSet

    path = str(tmp_path / "codes")
    old, new = _codes(0), _codes(1)
    old.save(path)
    size = sum(os.path.getsize(path + ext) for ext in (".npz", ".json"))
    for budget in sorted(set(np.linspace(0, size + 200, 40).astype(int))):
        with monkeypatch.context() as m:
            FullDisk(m, tmp_path, int(budget))
            try:
                new.save(path)
                saved = True
            except ArtifactWriteError as err:
                saved = False
                assert err.errno == errno.ENOSPC and "\n" not in str(err)
                assert str(err).startswith(f"cannot write {path}.") and "No space left on device" in str(err)
        got = CodeSet.load(path)  # the previous pair, or (when the save finished) the new one
        want = new if saved else old
        for name in want:
            np.testing.assert_array_equal(got[name].codes, want[name].codes)
        assert got.config == want.config
        old.save(path)  # back to the old pair for the next budget
    assert sorted(os.listdir(tmp_path)) == ["codes.json", "codes.npz"]


def test_a_save_killed_after_the_manifest_still_loads_the_new_pair(tmp_path, monkeypatch):
    from tfmec.mec import codes as codes_module
    from tfmec.mec.codes import CodeSet

    path = str(tmp_path / "codes")
    _codes(0).save(path)
    new = _codes(1)
    real_replace = os.replace

    def dies_on_last_rename(src, dst):
        if dst == path + ".npz":
            raise KeyboardInterrupt  # the process dies between the manifest's rename and the arrays'
        return real_replace(src, dst)

    monkeypatch.setattr(codes_module.os, "replace", dies_on_last_rename)
    with pytest.raises(KeyboardInterrupt, match=""):
        new.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(CodeSet.load(path)["t0"].codes, new["t0"].codes)  # the staged arrays
    _codes(2).save(path)  # the next save completes the interrupted one and clears the staged file
    assert sorted(os.listdir(tmp_path)) == ["codes.json", "codes.npz"]
    np.testing.assert_array_equal(CodeSet.load(path)["t0"].codes, _codes(2)["t0"].codes)


def _resource_exhausted(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                    "/x/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; No space left on device "
                    "[Op:SaveV2]")


def test_tensorflow_write_errors_become_one_line_naming_the_path(tmp_path, monkeypatch):
    import tfmec
    from tfmec.training import compile_ctr, fit_early_stopping

    model = _tiny_model()
    first = export.saved_model(model, str(tmp_path / "sm"))
    monkeypatch.setattr(tf.saved_model, "save", _resource_exhausted)
    with pytest.raises(ArtifactWriteError, match=r"cannot write .*sm/2: No space left on device \(ENOSPC\)$"):
        export.saved_model(model, str(tmp_path / "sm"))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "sm")) == ["1"] and os.path.isfile(os.path.join(first, "saved_model.pb"))

    data = tfmec.data.load("synthetic", rows=600, seed=0, batch_size=256, progress=False)
    lr = compile_ctr(tfmec.models.LR(data.schema, seed=0), 1e-2)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", _resource_exhausted)
    ck = str(tmp_path / "ck")
    with pytest.raises(ArtifactWriteError, match=f"cannot write the training checkpoint in {ck}: No space left"):
        fit_early_stopping(lr, data.train_stream, data.valid, epochs=1, patience=1, verbose=0, checkpoint_dir=ck)
    from tfmec.mec import learn_codes

    table = {"t": np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)}
    with pytest.raises(ArtifactWriteError, match="cannot write the stage-1 checkpoint in .*s1.t: No space left"):
        learn_codes(table, num_subspaces=2, num_codewords=8, epochs=1, batch_size=128, progress=False,
                    checkpoint_dir=str(tmp_path / "s1"))


@pytest.mark.parametrize("where", ["checkpoint", "model.keras", "codes", "report"])
def test_tfmec_run_on_a_full_disk_exits_2_with_one_line_naming_the_path(tmp_path, monkeypatch, capsys, where):
    from tfmec.mec.codes import CodeSet

    out, ck = tmp_path / "out", tmp_path / "ck"
    if where == "checkpoint":
        monkeypatch.setattr(tf.train.CheckpointManager, "save", _resource_exhausted)
        expected = f"cannot write the training checkpoint in {ck / 'fit' / 'baseline'}: No space left on device"
    elif where == "model.keras":
        monkeypatch.setattr(keras.Model, "save", lambda *a, **k: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        expected = f"cannot write {out / 'baseline' / 'model.keras'}: No space left on device (ENOSPC)"
    elif where == "codes":
        real = CodeSet.save

        def save_on_a_full_disk(self, path):
            FullDisk(monkeypatch, os.path.dirname(path), 100)  # the disk fills up as the codes are written
            real(self, path)

        monkeypatch.setattr(CodeSet, "save", save_on_a_full_disk)
        expected = f"cannot write {out / 'mec' / 'codes'}."
    else:
        import tfmec.report

        real = tfmec.report.write_report

        def report_on_a_full_disk(metrics, out_dir):
            FullDisk(monkeypatch, out_dir, 10)
            return real(metrics, out_dir)

        monkeypatch.setattr(tfmec.report, "write_report", report_on_a_full_disk)
        expected = f"cannot write {out / 'report.md'}: No space left on device (ENOSPC)"
    code = main(["run", "--data", "synthetic", "--rows", "1500", "--model", "fm", "--embedding-dim", "4",
                 "--method", "mec" if where == "codes" else "none", "--stage1-epochs", "0", "--codewords", "8",
                 "--subspaces", "2", "--epochs", "1", "--batch-size", "256", "--no-export", "--quiet",
                 "--out", str(out), "--checkpoint-dir", str(ck)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.startswith("tfmec: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and "{{function_node" not in err and "[Op:" not in err
