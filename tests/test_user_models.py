"""tfmec on the models users write (tests/user_models.py): for each style, the whole pipeline

    count_ids -> learn_codes -> compress_embeddings -> one epoch of fit -> afm.compress
    -> .keras save + keras.models.load_model (no custom_objects) -> SavedModel -> ONNX

with predictions compared at every step: the compressed model against the same model holding float
tables of the decoded rows (the mask case exactly), the reload exactly, the SavedModel within 1e-6,
ONNX within 1e-5 (or the documented refusal); bytes checked against a count of the arrays.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfmec
import user_models  # tests/ is on sys.path
from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.graph import find_tables, table_dims
from tfmec.graph.swap import CopyError, swap_layers
from tfmec.layers import QuantizedEmbedding

STYLES = [name for name in user_models.STYLES if IS_LEGACY_KERAS or name not in user_models.NEEDS_TF_KERAS]


def features_only(style):
    if style.loss == "tfrs":
        return style.data.map(lambda f: {k: v for k, v in f.items() if k != "user_rating"})
    return style.data.map(lambda x, y: x)


def predict(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float64).reshape(-1)


def compile_model(model, style):
    if style.loss == "tfrs":
        model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=0.05))
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=style.loss)
    return model


def float_twin(model):
    """``model`` with every QuantizedEmbedding replaced by a plain Embedding holding its decoded rows
    (same name, same mask_zero)."""

    def replace(layer):
        if not isinstance(layer, QuantizedEmbedding):
            return None
        v, d = table_dims(layer)
        rows = np.asarray(layer(np.arange(v, dtype="int32"), training=False))
        table = keras.layers.Embedding(v, d, mask_zero=layer.mask_zero, name=layer.name)
        table.build((None,))
        table.set_weights([rows])
        return table

    twin, replaced = swap_layers(model, replace)
    assert replaced
    return twin


def array_bytes(model) -> int:
    return sum(int(np.asarray(w.numpy()).nbytes) for ref in find_tables(model) for w in ref.layer.weights)


def expected_lookups(name, style) -> dict | None:
    """Lookups per table the data implies, where the style makes it easy to say."""
    if name not in ("own_names", "shared_table", "masked_history"):
        return None
    x = {k: np.concatenate([np.asarray(b[0][k]) for b in style.data]) for k in style.eval_x}
    if name == "own_names":
        return {"user_embedding": np.bincount(x["uid"], minlength=150),
                "item_embedding": np.bincount(x["iid"], minlength=250)}
    if name == "shared_table":
        return {"items": np.bincount(np.concatenate([x["candidate"], x["last_click"]]), minlength=300)}
    if name == "masked_history":
        ids = np.concatenate([x["candidate"], x["history"].reshape(-1)])
        counts = np.bincount(ids, minlength=300)
        counts[0] = 0  # padding is not a lookup
        return {"item_table": counts}
    return None


@pytest.mark.parametrize("name", STYLES)
def test_pipeline_on_user_model(name, tmp_path):
    keras.utils.set_random_seed(0)
    style = user_models.STYLES[name]()
    model, x = style.model, style.eval_x
    compile_model(model, style).fit(style.data, epochs=1, verbose=0)
    before = predict(model, x)

    # count_ids: through the model's own preprocessing, keyed like find_tables
    counts = tfmec.mec.count_ids(model, features_only(style), progress=False)
    tables = find_tables(model)
    assert sorted(counts) == sorted(t.key for t in tables)
    for t in tables:
        assert counts[t.key].shape == (t.input_dim,) and counts[t.key].sum() > 0
    want = expected_lookups(name, style)
    for key, c in (want or {}).items():
        np.testing.assert_array_equal(counts[key], c)

    # stage 1 on every table PQ makes smaller
    codes = tfmec.mec.learn_codes(model, counts, num_subspaces=2, num_codewords=16, epochs=1, progress=False, seed=0)
    assert len(codes) >= 1

    small = tfmec.mec.compress_embeddings(model, codes)
    np.testing.assert_array_equal(predict(model, x), before)  # the user's model is untouched
    swapped = [t for t in find_tables(small) if isinstance(t.layer, QuantizedEmbedding)]
    assert len(swapped) == len(codes)
    for t in find_tables(model):
        if t.key in codes:
            assert [s.layer.mask_zero for s in swapped if s.path == t.path] == [bool(getattr(t.layer, "mask_zero",
                                                                                                 False))]
    twin = float_twin(small)
    if name == "masked_history":
        np.testing.assert_array_equal(predict(small, x), predict(twin, x))
    else:
        np.testing.assert_allclose(predict(small, x), predict(twin, x), atol=1e-6)

    report = tfmec.mec.memory_report(small)
    assert report["embedding_bytes"] == array_bytes(small)
    assert len(report["tables"]) == len(find_tables(model))  # a shared table counted once
    assert report["compression_ratio_embeddings"] > 1

    compile_model(small, style).fit(style.data, epochs=1, verbose=0)
    assert np.all(np.isfinite(predict(small, x)))

    calibration = features_only(style).take(2)
    afm_model, afm_report = tfmec.afm.compress(small, calibration, rank=4)
    assert afm_report.compressed, afm_report.summary()
    y = predict(afm_model, x)
    assert np.all(np.isfinite(y))

    path = str(tmp_path / "model.keras")
    afm_model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(predict(reloaded, x), y)

    check_exports(afm_model, x, y, tmp_path, style)


def check_exports(model, x, y, tmp_path, style):
    from tfmec.export import onnx, predict_onnx, predict_saved_model, saved_model
    from tfmec.export.signature import has_declared_inputs

    # a subclassed model declares no inputs: tell export what it takes (a sample batch)
    signature = None if has_declared_inputs(model) else x
    version = saved_model(model, str(tmp_path / "serving"), input_signature=signature)
    np.testing.assert_allclose(predict_saved_model(version, x).reshape(-1), y, atol=1e-6)
    target = str(tmp_path / "model.onnx")
    try:
        onnx(model, target, input_signature=signature)
    except ValueError as err:  # the documented refusal: a lookup ONNX cannot hold, named, with what to do
        assert style.string_inputs, f"only lookups may stop ONNX export: {err}"
        assert "saved_model" in str(err) and "layer" in str(err), err
        assert not (tmp_path / "model.onnx").exists()
        return
    np.testing.assert_allclose(predict_onnx(target, x).reshape(-1), y, atol=1e-5)


def test_shared_table_is_compressed_once_and_stays_shared():
    style = user_models.shared_table()
    counts = tfmec.mec.count_ids(style.model, features_only(style), progress=False)
    codes = tfmec.mec.learn_codes(style.model, counts, num_subspaces=2, num_codewords=16, epochs=1, progress=False)
    assert list(codes) == ["items"]
    small = tfmec.mec.compress_embeddings(style.model, codes)
    tables = find_tables(small)
    assert len(tables) == 1 and isinstance(tables[0].layer, QuantizedEmbedding)
    # one layer called at every place the float table was: candidate, last click, and both again in the product
    assert len(tables[0].layer._inbound_nodes) == len(style.model.get_layer("items")._inbound_nodes) == 4


def test_frequencies_that_name_no_table_are_refused():
    style = user_models.own_names()
    with pytest.raises(ValueError, match=r"frequencies: no key names an embedding table.*'user_embedding'"):
        tfmec.mec.learn_codes(style.model, {"uid": np.ones(150), "iid": np.ones(250)}, epochs=0, progress=False)
    with pytest.warns(UserWarning, match=r"keys \['typo'\] name no embedding table"):
        tfmec.mec.learn_codes(style.model, {"user_embedding": np.ones(150), "typo": np.ones(3)}, epochs=0,
                              progress=False, num_codewords=16)


def test_mapping_naming_a_skipped_table_is_a_clear_error():
    style = user_models.own_names()
    codes = tfmec.mec.learn_codes(style.model, num_subspaces=2, num_codewords=16, epochs=0, progress=False,
                                  fields=["item_embedding"])
    with pytest.raises(ValueError, match=r"mapping: 'user_embedding' -> 'user', but the code set has no codes"):
        tfmec.mec.compress_embeddings(style.model, codes, mapping={"user_embedding": "user"})


@keras.saving.register_keras_serializable(package="user_models_tests")
class NoConfig(keras.Model):
    """A subclassed model whose constructor takes an argument and which defines no get_config."""

    def __init__(self, dim):
        super().__init__()
        self.table = keras.layers.Embedding(100, dim)
        self.out = keras.layers.Dense(1)

    def call(self, ids):
        return self.out(self.table(ids))


def test_subclassed_model_without_config_is_refused_with_the_change_or_swapped_inplace():
    model = NoConfig(8)
    ids = np.arange(10, dtype="int32")
    model(ids)
    codes = tfmec.mec.learn_codes(model, num_subspaces=2, num_codewords=16, epochs=0, progress=False)
    if IS_LEGACY_KERAS:  # tf-keras records the constructor's arguments: the copy works
        small = tfmec.mec.compress_embeddings(model, codes)
        assert small is not model and isinstance(small.table, QuantizedEmbedding)
    else:
        with pytest.raises(CopyError, match=r"(?s)def get_config\(self\).*inplace=True"):
            tfmec.mec.compress_embeddings(model, codes)
    before = predict(model, ids)
    same = tfmec.mec.compress_embeddings(model, codes, inplace=True)
    assert same is model and isinstance(model.table, QuantizedEmbedding)
    shapes = [tuple(w.shape) for w in model.weights]
    assert (100, 8) not in shapes and (100, 2) in shapes  # the float table is gone, the codes are tracked
    assert np.abs(predict(model, ids) - before).max() < 0.5


def test_int8_and_hashing_on_a_user_model():
    style = user_models.masked_history()
    x = style.eval_x
    int8, report = tfmec.baselines.quantize_embeddings(style.model)
    assert list(report) == ["item_table"]
    assert int8.get_layer("item_table").mask_zero
    assert np.abs(predict(int8, x) - predict(style.model, x)).max() < 0.02
    hashed, buckets = tfmec.baselines.hash_embeddings(style.model, 100 * 8 * 4)
    assert buckets == {"item_table": 100}
    assert hashed.get_layer("item_table").mask_zero
    assert predict(hashed, x).shape == (64,)


def test_checkpointed_fit_of_a_model_with_lookups_inside(tmp_path):
    """fit_early_stopping(checkpoint_dir=...) on the tutorial model (a tf-keras lookup lists its vocabulary
    among the weights: it is not a trained array) trains, restores its best weights and resumes."""
    from tfmec.training import fit_early_stopping

    style = user_models.string_lookup()
    style.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=style.loss, metrics=[keras.metrics.AUC(name="auc")])
    first = fit_early_stopping(style.model, style.data, style.data, epochs=2, verbose=0,
                               checkpoint_dir=str(tmp_path / "ck"))
    assert first["epochs"] >= 1
    again = fit_early_stopping(style.model, style.data, style.data, epochs=2, verbose=0,
                               checkpoint_dir=str(tmp_path / "ck"))
    assert again["resumed_from_epoch"] == 2  # finished: nothing trained again
    assert np.all(np.isfinite(predict(style.model, style.eval_x)))
