"""SparseReadEmbedding: the zoo's embedding table, a keras.layers.Embedding whose lookup reads only the
looked-up rows (no full read of the table per step under Keras 3)."""
import numpy as np
import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.io import load_model
from tfmec.layers import SparseReadEmbedding


def _pair(v=50, d=4):
    table = np.random.default_rng(0).normal(size=(v, d)).astype("float32")
    ours = SparseReadEmbedding(v, d, embeddings_initializer=keras.initializers.Constant(table))
    plain = keras.layers.Embedding(v, d, embeddings_initializer=keras.initializers.Constant(table))
    return ours, plain, table


def test_same_outputs_as_keras_embedding_for_any_id_shape():
    ours, plain, table = _pair()
    assert isinstance(ours, keras.layers.Embedding)
    for ids in (np.array([3, 0, 49], "int32"), np.arange(12, dtype="int64").reshape(3, 4)):
        np.testing.assert_array_equal(np.asarray(ours(ids)), np.asarray(plain(ids)))
        np.testing.assert_array_equal(np.asarray(ours(ids)), table[ids])


def test_lookup_reads_rows_not_the_table():
    ours, _, _ = _pair()
    ours(np.array([1], "int32"))

    @tf.function
    def lookup(ids):
        return ours(ids)

    ops = {op.type for op in lookup.get_concrete_function(tf.TensorSpec([None], tf.int32)).graph.get_operations()}
    assert "ResourceGather" in ops
    if not IS_LEGACY_KERAS:  # Keras 3's own Embedding reads the whole variable, then gathers
        assert "ReadVariableOp" not in ops


def test_train_step_gives_sparse_gradient_and_save_reload(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(), dtype="int32")
    emb = SparseReadEmbedding(30, 3, name="table")
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(emb(inp)))
    ids = np.array([1, 2, 2, 5], "int32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(ids))
    grad = tape.gradient(loss, emb.trainable_variables)[0]
    assert isinstance(grad, tf.IndexedSlices)  # an update touches the batch's rows only
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="binary_crossentropy")
    before = np.asarray(emb.get_weights()[0]).copy()
    model.fit(ids, np.ones((4, 1), "float32"), epochs=1, batch_size=4, verbose=0)
    after = emb.get_weights()[0]
    changed = np.where(np.any(after != before, axis=1))[0]
    assert set(changed) == {1, 2, 5}
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = load_model(path)  # tfmec's safe loader: a registered tfmec class
    assert type(again.get_layer("table")) is SparseReadEmbedding
    np.testing.assert_allclose(np.asarray(again(ids)), np.asarray(model(ids)), rtol=0, atol=0)
