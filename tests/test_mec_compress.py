"""MEC stage 2: compress_embeddings on zoo and user models, save/load exactness, memory report."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.data.schema import Field, Schema
from tfmec.layers import QuantizedEmbedding
from tfmec.mec import compress_embeddings, learn_codes, memory_report
from tfmec.models import DeepFM


def _schema():
    fields = [Field("big", vocab_size=3000), Field("mid", vocab_size=800), Field("tiny", vocab_size=5)]
    return Schema(fields)


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = {"big": rng.integers(0, 3000, n).astype("int32"), "mid": rng.integers(0, 800, n).astype("int32"),
         "tiny": rng.integers(0, 5, n).astype("int32")}
    y = ((x["big"] % 7 + x["mid"] % 3) > 4).astype("float32")
    return x, y


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = DeepFM(_schema(), embedding_dim=8, hidden_units=(16,), seed=0)
    model.compile("adam", "binary_crossentropy")
    x, y = _data()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    codes = learn_codes(model, num_subspaces=4, num_codewords=16, epochs=1, batch_size=512, seed=0, progress=False)
    return model, codes


def test_only_tables_worth_compressing_are_chosen(trained):
    _, codes = trained
    # 'tiny' would grow under PQ; first-order tables are scalar-quantised (one sub-space)
    assert sorted(codes) == ["big", "linear_big", "linear_mid", "mid"]
    assert codes["linear_big"].codebooks.shape == (1, 16, 1)


def test_compressed_model_structure_and_memory(trained):
    model, codes = trained
    small = compress_embeddings(model, codes, contrastive_weight=0.01)
    layer = small.get_layer("embedding_big")
    assert isinstance(layer, QuantizedEmbedding)
    assert isinstance(small.get_layer("embedding_tiny"), keras.layers.Embedding)
    np.testing.assert_array_equal(np.asarray(layer.codes), codes["big"].codes)
    # other layers keep their weights
    np.testing.assert_array_equal(small.get_layer("dnn_logit").get_weights()[0], model.get_layer("dnn_logit").get_weights()[0])
    x, _ = _data(64, seed=1)
    expected = codes["big"].decode(x["big"])
    got = layer(x["big"])
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)
    report = memory_report(small)
    assert report["compression_ratio_embeddings"] > 1.5
    assert report["original_embedding_bytes"] == memory_report(model)["embedding_bytes"]
    big = next(t for t in report["tables"] if t["layer"] == "embedding_big")
    # codes + codebooks + the negatives' 8-byte step counter (contrastive_weight > 0)
    assert big["kind"] == "quantized" and big["bytes"] == 3000 * 4 + 16 * 8 * 4 + 8


def test_compress_save_load_predict_is_exact(trained, tmp_path):
    model, codes = trained
    small = compress_embeddings(model, codes, bits=4)
    path = str(tmp_path / "mec.keras")
    small.save(path)
    again = keras.models.load_model(path)
    x, _ = _data(200, seed=2)
    np.testing.assert_array_equal(np.asarray(small(x)), np.asarray(again(x)))


def test_oov_ids_get_the_oov_row(trained):
    model, codes = trained
    layer = compress_embeddings(model, codes).get_layer("embedding_big")
    out = np.asarray(layer(tf.constant([-3, 0, 3000, 10**6], tf.int32)))
    for row in (0, 2, 3):
        np.testing.assert_array_equal(out[row], out[1])


def test_stage2_fit_trains_codebooks_not_codes_and_adds_contrastive_loss(trained):
    model, codes = trained
    small = compress_embeddings(model, codes, contrastive_weight=0.05)
    small.compile("adam", "binary_crossentropy")
    layer = small.get_layer("embedding_big")
    before_codes = np.array(layer.codes)
    before_books = np.array(layer.codebooks)
    x, y = _data()
    small.fit(x, y, batch_size=128, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.asarray(layer.codes), before_codes)
    assert not np.allclose(np.asarray(layer.codebooks), before_books)
    small(x, training=True)
    assert len(small.losses) >= 2 and all(float(v) > 0 for v in small.losses)


def test_user_functional_model_with_mapping():
    ids = keras.Input(shape=(), dtype="int32", name="item")
    emb = keras.layers.Embedding(2000, 8, name="item_table")(ids)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(emb)
    user = keras.Model(ids, out)
    table = user.get_layer("item_table").get_weights()[0]
    codes = learn_codes({"item": table}, num_subspaces=2, num_codewords=16, epochs=1, progress=False)
    small = compress_embeddings(user, codes, mapping={"item_table": "item"})
    assert isinstance(small.get_layer("item_table"), QuantizedEmbedding)
    assert small(np.arange(5, dtype="int32")).shape == (5, 1)
    with pytest.raises(ValueError, match="the codes .item. name no embedding table.*item_table"):
        compress_embeddings(user, codes)


def test_fit_reports_the_contrastive_term_as_a_metric(trained, tmp_path):
    from tfmec.mec.model import MECModel

    model, codes = trained
    small = compress_embeddings(model, codes, contrastive_weight=0.05)
    assert isinstance(small, MECModel)
    small.compile("adam", "binary_crossentropy")
    x, y = _data()
    history = small.fit(x, y, batch_size=128, epochs=2, verbose=0).history
    assert "contrastive_loss" in history and all(v > 0 for v in history["contrastive_loss"])
    # contrastive_loss is logged unweighted; beta (0.05) times it is part of loss
    assert history["loss"][-1] > 0.05 * history["contrastive_loss"][-1]
    path = str(tmp_path / "m.keras")
    small.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, MECModel)
    np.testing.assert_array_equal(np.asarray(small(x)), np.asarray(again(x)))


def test_contrastive_metric_counts_a_table_inside_a_nested_sub_model():
    """A hand-written model whose table sits in a nested functional tower: the logged contrastive_loss is
    the term the loss really holds (it read only top-level layers and logged 0 before)."""
    from tfmec.mec.model import MECModel

    item = keras.Input(shape=(), dtype="int32", name="item")
    inner = keras.Input(shape=(), dtype="int32")
    tower = keras.Model(inner, keras.layers.Flatten()(keras.layers.Embedding(300, 8, name="item_table")(inner)),
                        name="item_tower")
    model = keras.Model({"item": item}, keras.layers.Dense(1, activation="sigmoid")(tower(item)))
    codes = learn_codes(model, {"item_table": np.ones(300)}, num_subspaces=2, num_codewords=8, epochs=0,
                        progress=False)
    small = compress_embeddings(model, codes, contrastive_weight=0.05, seed=0)
    assert isinstance(small, MECModel)
    small.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    x, y = {"item": rng.integers(0, 300, 256).astype("int32")}, rng.integers(0, 2, 256).astype("float32")
    history = small.fit(x, y, batch_size=128, epochs=1, verbose=0).history
    assert history["contrastive_loss"][0] > 0
    assert history["loss"][0] > 0.05 * history["contrastive_loss"][0]


def test_head_rows_copy_the_most_frequent_rows_exactly(trained, tmp_path):
    model, codes = trained
    small = compress_embeddings(model, codes, bits=4, head_rows=0.1)
    big, mid = small.get_layer("embedding_big"), small.get_layer("embedding_mid")
    assert (big.head_rows, mid.head_rows) == (300, 80)
    table = model.get_layer("embedding_big").get_weights()[0]
    ids = np.array([0, 5, 299, 300, 2999], dtype="int32")
    out = np.asarray(big(ids))
    np.testing.assert_array_equal(out[:3], table[[0, 5, 299]])  # head rows: the baseline's, exactly
    np.testing.assert_allclose(out[3:], codes["big"].decode(ids[3:]), atol=1e-6)
    plain = compress_embeddings(model, codes, bits=4)
    assert memory_report(small)["embedding_bytes"] == memory_report(plain)["embedding_bytes"] + \
        4 * (300 * 8 + 80 * 8 + 300 * 1 + 80 * 1)
    counted = compress_embeddings(model, codes, head_rows={"big": 7})
    assert counted.get_layer("embedding_big").head_rows == 7 and counted.get_layer("embedding_mid").head_rows == 0
    path = str(tmp_path / "head.keras")
    small.save(path)
    x, _ = _data(100, seed=3)
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(path)(x)), np.asarray(small(x)))
    with pytest.raises(ValueError, match="head_rows"):
        compress_embeddings(model, codes, head_rows=-1)
