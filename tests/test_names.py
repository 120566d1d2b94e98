"""One name per quantity (issue 21, item 5): ``input_dim`` / ``output_dim`` on every table layer, ``rank``
for a low rank, ``pwr_temperature`` / ``contrastive_temperature`` for the two temperatures, and
``contrastive_loss`` in the logs as the unweighted term. The old keyword names still work for one
release with a ``DeprecationWarning``; old configs and ``.keras`` files load silently (both Keras modes).
"""
from __future__ import annotations

import inspect
import json
import warnings
import zipfile

import numpy as np
import pytest

import tfmec.io
from tfmec.backend import keras
from tfmec.layers import (
    CrossNetV2,
    HashedEmbedding,
    Int8Embedding,
    NumericEmbedding,
    QREmbedding,
    QuantizedEmbedding,
    SharedQuantizedEmbedding,
    TieredEmbedding,
    contrastive_loss,
)
from tfmec.layers._utils import rename_kwargs, renamed_kwargs

V, D = 10, 4
TIERS = [{"kind": "exact", "rows": 3}, {"kind": "pq", "rows": 7, "num_subspaces": 2, "num_codewords": 4}]

# class, constructor arguments (new names), the old names used in place of some of them
CASES = {
    "quantized": (QuantizedEmbedding, dict(input_dim=V, num_subspaces=2, num_codewords=4, subspace_dim=2,
                                           contrastive_weight=0.1, contrastive_temperature=0.3, seed=1),
                  {"vocab_size": "input_dim", "temperature": "contrastive_temperature"}),
    "shared": (SharedQuantizedEmbedding, dict(input_dims=[4, 6], num_subspaces=2, num_codewords=4, subspace_dim=2,
                                              contrastive_temperature=0.3, seed=1),
               {"vocab_sizes": "input_dims", "temperature": "contrastive_temperature"}),
    "hashed": (HashedEmbedding, dict(input_dim=V, num_buckets=5, output_dim=D, seed=1), {"vocab_size": "input_dim"}),
    "int8": (Int8Embedding, dict(input_dim=V, output_dim=D), {"vocab_size": "input_dim"}),
    "qr": (QREmbedding, dict(input_dim=V, output_dim=D, num_buckets=3, seed=1), {"vocab_size": "input_dim"}),
    "tiered": (TieredEmbedding, dict(input_dim=V, output_dim=D, tiers=TIERS, contrastive_weight=0.1,
                                     contrastive_temperature=0.3, seed=1),
               {"vocab_size": "input_dim", "temperature": "contrastive_temperature"}),
    "cross": (CrossNetV2, dict(num_layers=2, rank=[None, 2], seed=1), {"low_rank": "rank"}),
    "numeric": (NumericEmbedding, dict(output_dim=D, seed=1), {"dim": "output_dim"}),
}


def _old(kwargs: dict, renames: dict) -> dict:
    """``kwargs`` (or a config) with the new names of ``renames`` (``{old: new}``) written the old way."""
    back = {new: old for old, new in renames.items()}
    return {back.get(k, k): v for k, v in kwargs.items()}


def _deprecations(record) -> list[str]:
    """tfmec's renaming warnings among ``record`` (not other libraries' DeprecationWarnings)."""
    return [str(w.message) for w in record
            if issubclass(w.category, DeprecationWarning) and "will be removed in the next release" in str(w.message)]


@pytest.mark.parametrize("case", list(CASES))
def test_old_keywords_warn_and_mean_the_new_ones(case):
    cls, kwargs, renames = CASES[case]
    with pytest.warns(DeprecationWarning) as record:
        layer = cls(**_old(kwargs, renames))
    messages = _deprecations(record)
    assert len(messages) == len(renames)
    for old, new in renames.items():
        assert any(f"{old!r}" in m and f"use {new!r}" in m and cls.__name__ in m for m in messages), messages
    config = layer.get_config()
    new_layer = cls(**kwargs)
    for old, new in renames.items():
        assert old not in config and config[new] == new_layer.get_config()[new]  # the new names only


@pytest.mark.parametrize("case", list(CASES))
def test_old_and_new_name_together_is_a_type_error(case):
    cls, kwargs, renames = CASES[case]
    old, new = next(iter(renames.items()))
    with pytest.raises(TypeError, match=f"got both '{old}' and '{new}'.*pass '{new}' only"):
        cls(**kwargs, **{old: kwargs[new]})


def test_old_attribute_names_warn_and_read_the_new_ones():
    layer = QuantizedEmbedding(V, 2, 4, 2, contrastive_temperature=0.3)
    with pytest.warns(DeprecationWarning, match=r"QuantizedEmbedding.vocab_size is deprecated.*use .input_dim"):
        assert layer.vocab_size == V
    with pytest.warns(DeprecationWarning, match=r"use .contrastive_temperature"):
        assert layer.temperature == 0.3
    with pytest.warns(DeprecationWarning, match=r"use .rank"):
        assert CrossNetV2(2, rank=3).low_rank == 3
    with pytest.warns(DeprecationWarning, match=r"use .input_dims"):
        assert SharedQuantizedEmbedding([4, 6], 2, 4, 2).vocab_sizes == [4, 6]
    with pytest.raises(AttributeError, match="no attribute 'not_an_attribute'"):
        layer.not_an_attribute  # noqa: B018
    assert "vocab_size" not in dir(layer)  # Keras's saving reads every dir() entry: it never warns


def test_renamed_functions_keep_their_signature_and_map_old_keywords():
    from tfmec.mec import compress_embeddings, learn_codes
    from tfmec.mec.budget import compress_to_budget
    from tfmec.mec.stage1 import pq_losses

    assert "pwr_temperature" in inspect.signature(learn_codes).parameters
    assert "temperature" not in inspect.signature(learn_codes).parameters
    for func in (compress_embeddings, compress_to_budget):
        assert "contrastive_temperature" in inspect.signature(func).parameters
        with pytest.raises(TypeError, match="got both 'temperature' and 'contrastive_temperature'"):
            func(None, None, temperature=0.5, contrastive_temperature=0.5)
    with pytest.raises(TypeError, match="got both 'temperature' and 'pwr_temperature'"):
        pq_losses(None, None, None, temperature=1.0, pwr_temperature=1.0)
    from tfmec.layers.afm_dense import embedding_params
    from tfmec.models import DCNv2

    assert "rank" in inspect.signature(DCNv2).parameters
    with pytest.raises(TypeError, match="got both 'low_rank' and 'rank'"):
        DCNv2(None, low_rank=2, rank=2)
    with pytest.warns(DeprecationWarning, match="use 'input_dim'"):
        assert embedding_params(vocab_size=10, output_dim=4, rank=2) == embedding_params(10, 4, 2) == 10 * 2 + 8 + 4

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(6, 2))
    books = rng.normal(size=(2, 4, 2)).astype("float32")
    anchor = rng.normal(size=(6, 4)).astype("float32")
    new = contrastive_loss(anchor, codes, books, 2, contrastive_temperature=0.5, seed=np.array([1, 2]))
    with pytest.warns(DeprecationWarning, match="use 'contrastive_temperature'"):
        old = contrastive_loss(anchor, codes, books, 2, temperature=0.5, seed=np.array([1, 2]))
    assert float(old) == float(new)

    tables = {"t": rng.normal(size=(40, 4)).astype("float32")}
    with pytest.warns(DeprecationWarning, match="learn_codes: the keyword 'temperature'.*use 'pwr_temperature'"):
        codes = learn_codes(tables, num_subspaces=2, num_codewords=4, epochs=0, temperature=2.0, progress=False)
    assert codes.config["pwr_temperature"] == 2.0 and "temperature" not in codes.config


def test_rename_kwargs_helper():
    assert rename_kwargs({"a": 1, "c": 2}, {"a": "b"}, "f", warn=False) == {"b": 1, "c": 2}

    @renamed_kwargs({"old": "new"})
    def f(x, new=0):
        """doc"""
        return x + new

    assert f.__doc__ == "doc" and list(inspect.signature(f).parameters) == ["x", "new"]
    with pytest.warns(DeprecationWarning, match="f: the keyword 'old' is deprecated.*use 'new'"):
        assert f(1, old=2) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(1, new=2) == 3  # the new name: no warning


@pytest.mark.parametrize("case", list(CASES))
def test_from_config_of_an_old_config_loads_silently(case):
    """A config with the old keys, as a file saved before the rename holds it, loads with no warning
    and computes the same outputs."""
    cls, kwargs, renames = CASES[case]
    layer = cls(**kwargs)
    x = np.arange(V, dtype="float32") if cls is NumericEmbedding else np.arange(V, dtype="int32")
    if cls is CrossNetV2:
        x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    out = np.asarray(layer(x))
    config = layer.get_config()
    old_config = _old(config, renames)
    assert set(renames) <= set(old_config)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clone = cls.from_config(old_config)
    assert not _deprecations(record)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), out)


def _model():
    """A small functional model holding every renamed layer."""
    rng = np.random.default_rng(0)
    ids = keras.Input(shape=(), dtype="int32", name="ids")
    num = keras.Input(shape=(), dtype="float32", name="num")
    shared = SharedQuantizedEmbedding([4, 6], 2, 4, 2, contrastive_weight=0.1, seed=2, name="shared")
    parts = [
        QuantizedEmbedding(V, 2, 4, 2, contrastive_weight=0.1, contrastive_temperature=0.3, seed=1, name="q")(ids),
        shared(ids, field=1),
        HashedEmbedding(V, 5, D, seed=3, name="hashed")(ids),
        Int8Embedding.from_table(rng.normal(size=(V, D)), name="int8")(ids),
        QREmbedding(V, D, 3, seed=4, name="qr")(ids),
        TieredEmbedding(V, D, TIERS, contrastive_weight=0.1, contrastive_temperature=0.3, seed=5, name="tiered")(ids),
        NumericEmbedding(D, seed=6, name="numeric")(num),
    ]
    x = keras.layers.Concatenate()(parts)
    x = CrossNetV2(2, rank=[None, 3], seed=7, name="cross")(x)
    out = keras.layers.Dense(1, name="out")(x)
    return keras.Model({"ids": ids, "num": num}, out)


def _write_old_names(path: str, old_path: str) -> int:
    """Copies the ``.keras`` file ``path`` to ``old_path`` with its config.json rewritten to the old
    keyword names of every renamed layer; returns how many keys it renamed."""
    renames = {cls.__name__: cls.__init__.renamed_kwargs for cls, _, _ in CASES.values()}
    count = 0

    def walk(obj):
        nonlocal count
        if isinstance(obj, dict):
            name = str(obj.get("class_name", "")).split(">")[-1]  # tf-keras writes "tfmec>Name"
            if name in renames and isinstance(obj.get("config"), dict):
                old = _old(obj["config"], renames[name])
                count += len(set(old) - set(obj["config"]))
                obj["config"] = old
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old_path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                walk(config)
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    return count


def test_keras_file_with_the_old_names_loads_with_the_same_predictions(tmp_path):
    model = _model()
    rng = np.random.default_rng(1)
    batch = {"ids": rng.integers(0, V, size=16).astype("int32"), "num": rng.normal(size=16).astype("float32")}
    expected = np.asarray(model.predict(batch, verbose=0))
    path, old_path = str(tmp_path / "new.keras"), str(tmp_path / "old.keras")
    model.save(path)
    # q: 2 renames, shared: 2, hashed/int8/qr: 1 each, tiered: 2, numeric: 1, cross: 1
    assert _write_old_names(path, old_path) == 11
    for load in (keras.models.load_model, tfmec.io.load_model):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            loaded = load(old_path)
        assert not _deprecations(record), _deprecations(record)
        np.testing.assert_array_equal(np.asarray(loaded.predict(batch, verbose=0)), expected)
        assert loaded.get_layer("q").get_config()["input_dim"] == V


def test_logged_contrastive_loss_is_the_unweighted_term():
    """``MECModel`` logs ``contrastive_loss`` before ``beta`` (the layers' ``last_contrastive_loss``):
    with a tiny ``beta`` it keeps the size of an InfoNCE loss."""
    from tfmec.mec.model import MECModel

    beta = 1e-4
    ids = keras.Input(shape=(), dtype="int32", name="ids")
    emb = QuantizedEmbedding(V, 2, 4, 2, contrastive_weight=beta, seed=1, name="q")(ids)
    model = MECModel(inputs=ids, outputs=keras.layers.Dense(1, activation="sigmoid")(emb))
    model.compile("adam", "binary_crossentropy")
    x = np.arange(V, dtype="int32")
    logs = model.train_on_batch(x, (x % 2).astype("float32"), return_dict=True)
    assert logs["contrastive_loss"] > 100 * beta  # unweighted: of the order of log(1 + negatives)
