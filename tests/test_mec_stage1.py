"""MEC stage 1: popularity weights, PWR gradient, k-means++ init, learn_codes determinism and output."""
import numpy as np
import pytest
import tensorflow as tf

from tfmec.mec.codes import CodeSet, FieldCodes
from tfmec.mec.kmeans import kmeans
from tfmec.mec.stage1 import PQModel, learn_codes, popularity_weights, pq_losses, select_fields


def _clustered_table(v=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    return (centres[rng.integers(0, 40, v)] + 0.1 * rng.normal(size=(v, d))).astype(np.float32)


def test_popularity_weights_formula():
    w = popularity_weights(np.array([0, 1, 2, 3, 4, 1023, 1024]), 7)
    np.testing.assert_array_equal(w, [1, 1, 1, 1, 2, 9, 10])
    np.testing.assert_array_equal(popularity_weights(None, 3), [1, 1, 1])
    with pytest.raises(ValueError, match="one entry per id"):
        popularity_weights(np.ones(4), 3)


def test_pwr_term_has_nonzero_gradient():
    rng = np.random.default_rng(0)
    model = PQModel(rng.normal(size=(4, 8, 4)).astype(np.float32))
    e = tf.constant(rng.normal(size=(64, 16)).astype(np.float32))
    w = tf.constant(popularity_weights(rng.integers(0, 100, 64), 64))
    with tf.GradientTape() as tape:
        _, pwr, _, _ = pq_losses(model, e, w, pwr_temperature=1.0, contrastive_temperature=0.5, num_negatives=3,
                                 seed=tf.constant([1, 2], tf.int64), compute_contrastive=False)
    grad = tape.gradient(pwr, model.codebooks)
    assert grad is not None
    assert float(tf.reduce_max(tf.abs(grad))) > 1e-6
    assert 0.0 <= float(pwr) <= np.log(8) + 1e-6


def test_contrastive_term_has_gradient_and_is_positive():
    rng = np.random.default_rng(1)
    model = PQModel(rng.normal(size=(4, 8, 4)).astype(np.float32))
    e = tf.constant(rng.normal(size=(32, 16)).astype(np.float32))
    with tf.GradientTape() as tape:
        _, _, con, _ = pq_losses(model, e, tf.ones([32]), pwr_temperature=1.0, contrastive_temperature=0.5,
                                 num_negatives=4, seed=tf.constant([3, 4], tf.int64))
    assert float(con) > 0
    assert float(tf.reduce_max(tf.abs(tape.gradient(con, model.codebooks)))) > 1e-6


def test_kmeans_plus_plus_gives_distinct_centres_and_finds_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.01, size=(100, 2)) for c in (-5.0, 0.0, 5.0)]).astype(np.float32)
    centres = kmeans(x, 3, seed=0)
    np.testing.assert_allclose(np.sort(centres[:, 0]), [-5, 0, 5], atol=0.05)
    few = kmeans(x[:2], 8, seed=0)  # more centres than points: still distinct
    assert len(np.unique(few.round(6), axis=0)) == 8


def test_learn_codes_output_stats_and_quality(tmp_path):
    table = _clustered_table()
    counts = np.random.default_rng(0).zipf(1.5, size=table.shape[0]).astype(np.int64)
    codes = learn_codes({"c": table}, {"c": counts}, num_subspaces=4, num_codewords=16, epochs=3,
                        batch_size=512, seed=0, progress=False)
    fc = codes["c"]
    assert fc.codes.shape == (3000, 4) and fc.codes.dtype == np.uint8
    assert fc.codebooks.shape == (4, 16, 4)
    stats = fc.stats
    for key in ("reconstruction_mse", "usage_entropy", "dead_codewords", "head_distinct_codewords",
                "tail_distinct_codewords", "head_usage_entropy", "tail_usage_entropy", "epochs"):
        assert key in stats
    # far better than assigning codes at random
    rng = np.random.default_rng(1)
    random_fc = FieldCodes("c", rng.integers(0, 16, size=(3000, 4)), fc.codebooks)
    random_mse = float(((table - random_fc.decode()) ** 2).mean())
    assert stats["reconstruction_mse"] < 0.3 * random_mse
    codes.save(str(tmp_path / "codes"))
    again = CodeSet.load(str(tmp_path / "codes"))
    np.testing.assert_array_equal(again["c"].codes, fc.codes)
    np.testing.assert_array_equal(again["c"].codebooks, fc.codebooks)
    assert again.config["num_codewords"] == 16


def test_learn_codes_is_deterministic_for_a_seed():
    table = _clustered_table(v=1500, seed=2)
    kw = dict(num_subspaces=4, num_codewords=16, epochs=2, batch_size=256, progress=False)
    a = learn_codes({"c": table}, seed=5, **kw)["c"]
    b = learn_codes({"c": table}, seed=5, **kw)["c"]
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)


def test_learn_codes_with_rotation_stores_projection_and_uint16_codes():
    table = _clustered_table(v=2000, d=8, seed=3)
    fc = learn_codes({"c": table}, num_subspaces=2, num_codewords=300, rotation=True, epochs=1, batch_size=512,
                     kmeans_iterations=2, progress=False)["c"]
    assert fc.codes.dtype == np.uint16 and fc.projection.shape == (8, 8)
    assert fc.decode(np.arange(5)).shape == (5, 8)


def test_field_selection_skips_tables_pq_would_not_shrink():
    tables = {"small": np.zeros((20, 16), np.float32), "big": np.zeros((5000, 16), np.float32)}
    assert select_fields(tables, 4, 256, False) == ["big"]
    with pytest.raises(ValueError, match="no embedding table"):
        select_fields(tables, 4, 256, False, fields=["nope"])
    with pytest.raises(ValueError, match="divisible"):
        learn_codes({"big": np.zeros((5000, 10), np.float32)}, num_subspaces=4, num_codewords=16, progress=False)


def test_zero_epochs_gives_plain_kmeans_pq():
    from tfmec.mec.kmeans import assign

    table = _clustered_table(v=1000, d=8, seed=4)
    fc = learn_codes({"c": table}, num_subspaces=2, num_codewords=16, epochs=0, kmeans_sample=1000, seed=0,
                     progress=False)["c"]
    assert fc.stats["epochs"] == 0
    # codes are exactly the nearest k-means centres of each sub-vector
    for m in range(2):
        np.testing.assert_array_equal(fc.codes[:, m], assign(table[:, 4 * m:4 * m + 4], fc.codebooks[m]))
