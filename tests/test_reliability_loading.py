"""Issue 10, safe loading: every tfmec artifact loads with Keras ``safe_mode=True``; no pickle, ``eval``
or lambda layer anywhere in tfmec; ``tfmec.io.load_model`` refuses a ``.keras`` file holding a Lambda
layer, an unknown or foreign class, or a module outside Keras/tfmec, with a message naming the entry,
before Keras runs anything from it."""
import ast
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import tfmec
from tfmec import afm
from tfmec.backend import keras
from tfmec.baselines import allocate_buckets, hashed_embedding_factory, probe_tables, quantize_embeddings
from tfmec.data import CATEGORICAL, NUMERIC, Field, Schema, SyntheticCTR, load
from tfmec.io import UnsafeModelError, check_keras_file, load_model, save_model
from tfmec.mec import compress_embeddings, learn_codes
from tfmec.models import MODELS, build_model
from tfmec.training import compile_ctr

TFMEC_SOURCE = pathlib.Path(tfmec.__file__).parent
SCHEMA = Schema([Field("I1", NUMERIC, "log_square"), Field("I2", NUMERIC)]
                + [Field(f"C{i}", CATEGORICAL) for i in (1, 2, 3, 4)])


@pytest.fixture(scope="module")
def data():
    reader = SyntheticCTR(rows=1200, seed=0, vocab_sizes=[10, 80, 600, 2000], num_numeric=2)
    return load(reader, SCHEMA, batch_size=256, progress=False)


def _artifacts(data):
    """One model of every kind tfmec produces: the zoo, MEC (plain, bit-packed, head rows, shared
    codebooks), AFM (MLP, cross network, embedding tables), MEC+AFM, int8 and the hashing trick."""
    with_history = Schema(list(data.schema.fields) + [Field("hist", CATEGORICAL, vocab_size=data.schema["C4"].vocab_size,
                                                            max_length=3, shares="C4")])
    out = {name: build_model(name, with_history if name == "din" else data.schema, embedding_dim=4, seed=0)
           for name in sorted(MODELS)}
    base = out["deepfm"]
    codes = learn_codes(base, data.frequencies, num_subspaces=2, num_codewords=16, epochs=0, progress=False)
    out["mec"] = compress_embeddings(base, codes, contrastive_weight=0.01)
    out["mec bits=4 head_rows=2"] = compress_embeddings(base, codes, bits=4, head_rows=2)
    shared = learn_codes(base, data.frequencies, num_subspaces=2, num_codewords=16, epochs=0, progress=False,
                         share_codebooks=True)
    out["mec shared codebooks"] = compress_embeddings(base, shared)
    calibration = data.train.take(2)
    out["afm"], _ = afm.compress(base, calibration, energy=0.9, embeddings=True)
    out["afm dcnv2 cross"], _ = afm.compress(out["dcnv2"], calibration, energy=0.9)
    out["mec+afm"], _ = afm.compress(out["mec"], calibration, energy=0.9)
    out["int8"], _ = quantize_embeddings(base)
    plan = allocate_buckets(probe_tables(lambda f: build_model("deepfm", data.schema, embedding_dim=4,
                                                               embedding_factory=f, seed=0)), 20_000)
    out["hash"] = build_model("deepfm", data.schema, embedding_dim=4, seed=0,
                              embedding_factory=hashed_embedding_factory(plan["buckets"], seed=0))
    compile_ctr(out["mec"], optimizer="lazy_adam")  # a compiled model carries its optimizer's config too
    return out


def test_every_tfmec_artifact_loads_with_safe_mode(data, tmp_path):
    batch, _ = next(iter(data.valid))
    hist = tf.constant(np.asarray(batch["C4"])[:, None] * np.asarray([1, 1, 0], np.int32)[None, :])  # DIN: 0 = padding
    for name, model in _artifacts(data).items():
        path = str(tmp_path / (name.replace(" ", "_").replace("=", "") + ".keras"))
        save_model(model, path)
        check_keras_file(path)  # passes the loader's own checks
        features = dict(batch, hist=hist) if name == "din" else batch
        expected = np.asarray(model(features, training=False))
        for loaded in (keras.models.load_model(path, safe_mode=True), load_model(path)):
            np.testing.assert_allclose(np.asarray(loaded(features, training=False)), expected, rtol=1e-6,
                                       atol=1e-6, err_msg=name)
        with zipfile.ZipFile(path) as archive:
            assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"], name


def test_tfmec_source_has_no_pickle_eval_exec_or_lambda_layers():
    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
    problems = []
    for path in sorted(TFMEC_SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(TFMEC_SOURCE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                             if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                problems.append(f"{where}:{node.lineno} imports from {node.module}")
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("eval", "exec", "Lambda") or (name == "load" and isinstance(func, ast.Attribute)
                                                          and getattr(func.value, "id", "") == "yaml"):
                    problems.append(f"{where}:{node.lineno} calls {name}")
                unsafe = {"allow_pickle": True, "safe_mode": False}  # keyword -> the unsafe constant
                for kw in node.keywords:
                    if kw.arg in unsafe and isinstance(kw.value, ast.Constant) and kw.value.value is unsafe[kw.arg]:
                        problems.append(f"{where}:{node.lineno} passes {kw.arg}={kw.value.value}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------- crafted files
def _rewrite_config(src: str, dst: str, edit) -> str:
    """Copies a .keras archive with ``edit(config_dict)`` applied to its config.json."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            out.writestr(name, data)
    return dst


def _layers(config) -> list:
    return config["config"]["layers"]


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory):
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1, name="dense")(inp))
    return save_model(model, str(tmp_path_factory.mktemp("plain") / "plain.keras"))


MARKER = {"path": None}


def leave_a_mark(t):
    """A module-level function a Lambda layer may name: plain Keras imports this module and calls it
    when it rebuilds the model (``safe_mode`` only blocks lambda bytecode)."""
    pathlib.Path(MARKER["path"]).write_text("ran")
    return t


def test_lambda_layers_are_refused_before_their_code_runs(tmp_path):
    inp = keras.Input((3,), name="x")
    inline = str(tmp_path / "inline.keras")
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(inp)).save(inline)
    with pytest.raises(UnsafeModelError, match=r"'Lambda' \(named 'doubler'\) is a Lambda"):
        load_model(inline)
    with pytest.raises(ValueError, match="Lambda.*safe_mode=False"):  # Keras's own safe mode refuses the bytecode too
        keras.models.load_model(inline, safe_mode=True)

    MARKER["path"] = str(tmp_path / "ran")
    named = str(tmp_path / "named.keras")
    keras.Model(inp, keras.layers.Lambda(leave_a_mark, name="sneaky")(inp)).save(named)
    os.remove(MARKER["path"])
    with pytest.raises(UnsafeModelError, match=r"'Lambda' \(named 'sneaky'\) is a Lambda") as info:
        load_model(named)
    assert named in str(info.value)
    assert not os.path.exists(MARKER["path"])  # nothing from the file ran


def test_unknown_foreign_and_module_injected_classes_are_refused(plain_file, tmp_path):
    @keras.saving.register_keras_serializable(package="thirdparty")
    class Passthrough(keras.layers.Layer):
        def call(self, x):
            return x

    inp = keras.Input((3,), name="x")
    foreign = str(tmp_path / "foreign.keras")
    keras.Model(inp, Passthrough(name="pass")(inp)).save(foreign)
    with pytest.raises(UnsafeModelError, match="'Passthrough' .* comes from module 'test_reliability_loading'"):
        load_model(foreign)

    def foreign_package(config):  # the class claims Keras's module but another package's registration
        _layers(config)[1].update(module="keras.layers", registered_name="thirdparty>Passthrough")

    def rename(config):
        _layers(config)[1]["class_name"] = "NoSuchLayer"

    def inject_module(config):
        _layers(config)[1]["module"] = "os"

    def fake_tfmec(config):
        _layers(config)[1]["registered_name"] = "tfmec>NoSuchLayer"

    def lambda_activation(config):
        _layers(config)[1]["config"]["activation"] = {"class_name": "__lambda__", "config": {"code": "AAAA"}}

    cases = {"foreign package": (foreign_package, "registered by package 'thirdparty'"),
             "unknown class": (rename, "unknown layer or object 'NoSuchLayer'"),
             "module injection": (inject_module, "comes from module 'os'"),
             "unknown tfmec class": (fake_tfmec, "unknown tfmec class 'tfmec>NoSuchLayer'"),
             "lambda activation": (lambda_activation, "'__lambda__' is a Lambda")}
    for name, (edit, message) in cases.items():
        path = _rewrite_config(plain_file, str(tmp_path / f"{name.replace(' ', '_')}.keras"), edit)
        with pytest.raises(UnsafeModelError, match=message) as info:
            load_model(path)
        assert path in str(info.value), name


def test_damaged_or_foreign_files_are_refused_clearly(plain_file, tmp_path):
    blob = open(plain_file, "rb").read()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UnsafeModelError, match="not a .keras archive"):
        load_model(str(truncated))
    extra = tmp_path / "extra.keras"
    with zipfile.ZipFile(plain_file) as archive, zipfile.ZipFile(extra, "w") as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
        out.writestr("payload.pkl", b"\x80\x04K\x01.")
    with pytest.raises(UnsafeModelError, match=r"unexpected files in the archive \['payload.pkl'\]"):
        load_model(str(extra))
    bad_json = str(tmp_path / "badjson.keras")
    with zipfile.ZipFile(plain_file) as archive, zipfile.ZipFile(bad_json, "w") as out:
        for name in archive.namelist():
            out.writestr(name, b"{not json" if name == "config.json" else archive.read(name))
    with pytest.raises(UnsafeModelError, match="config.json is not valid JSON"):
        load_model(bad_json)
    with pytest.raises(UnsafeModelError, match="is a folder"):
        load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model file not found: .*missing.keras"):
        load_model(str(tmp_path / "missing.keras"))


def test_code_arrays_are_never_unpickled(tmp_path):
    from tfmec.mec.codes import CodeSet

    rng = np.random.default_rng(0)
    codes = learn_codes({"t": rng.normal(size=(64, 4)).astype(np.float32)}, num_subspaces=2, num_codewords=4,
                        epochs=0, progress=False)
    codes.save(str(tmp_path / "c"))
    manifest = json.loads((tmp_path / "c.json").read_text())
    manifest.pop("npz_sha256")
    (tmp_path / "c.json").write_text(json.dumps(manifest))
    np.savez(tmp_path / "c.npz", codes_0=np.array([{"evil": 1}], dtype=object), codebooks_0=np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="allow_pickle"):
        CodeSet.load(str(tmp_path / "c"))


def test_saved_model_signatures_load_without_python(data, tmp_path):
    model = build_model("deepfm", data.schema, embedding_dim=4, seed=0)
    path = tfmec.export.saved_model(model, str(tmp_path / "sm"), data.encoder)
    assert not list(pathlib.Path(path).rglob("*.pkl"))
    loaded = tf.saved_model.load(path)  # graph + variables + asset files only
    assert sorted(loaded.signatures) == ["ids", "serving_default"]
    assert os.path.isfile(os.path.join(path, "assets.extra", "tfmec.json"))
