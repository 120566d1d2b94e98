"""Synthetic generator, transforms, splits and the tf.data pipeline."""
import numpy as np
import pytest

from tfmec.data import DataError, Schema, SyntheticCTR, assign_splits, criteo_log_square, load
from tfmec.evaluation import log_loss, roc_auc


def test_criteo_log_square_bucketing():
    vals = np.array([np.nan, -1.0, 0.0, 1.0, 2.0, 3.0, 10.0, 1382.0])
    out = criteo_log_square(vals).tolist()
    assert out[0] == ""
    assert out[1:5] == ["-1", "0", "1", "2"]
    assert out[5] == str(int(np.floor(np.log(3.0) ** 2)))  # 1
    assert out[6] == str(int(np.floor(np.log(10.0) ** 2)))  # 5
    assert out[7] == str(int(np.floor(np.log(1382.0) ** 2)))  # 52


def test_split_is_deterministic_and_respects_fractions():
    idx = np.arange(100_000)
    a = assign_splits(idx, (0.8, 0.1, 0.1), seed=3)
    b = np.concatenate([assign_splits(part, (0.8, 0.1, 0.1), seed=3) for part in np.array_split(idx, 13)])
    np.testing.assert_array_equal(a, b)
    shares = np.bincount(a, minlength=3) / idx.size
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
    assert not np.array_equal(a, assign_splits(idx, (0.8, 0.1, 0.1), seed=4))
    with pytest.raises(ValueError, match="fractions must be non-negative, sum to 1"):
        assign_splits(idx, (0.5, 0.1, 0.1), seed=0)


def test_synthetic_is_deterministic_and_chunk_size_independent():
    r = SyntheticCTR(rows=5000, seed=7)
    a = list(r.chunks(1000))
    b = list(SyntheticCTR(rows=5000, seed=7).chunks(4096))
    cat = lambda chunks, k: np.concatenate([c.features[k] for c in chunks])
    np.testing.assert_array_equal(cat(a, "C3"), cat(b, "C3"))
    np.testing.assert_array_equal(np.concatenate([c.labels for c in a]), np.concatenate([c.labels for c in b]))
    assert len(a) == 5 and r.stats.rows == 5000
    other = np.concatenate([c.labels for c in SyntheticCTR(rows=5000, seed=8).chunks(5000)])
    assert not np.array_equal(other, np.concatenate([c.labels for c in a]))


def test_synthetic_shape_zipf_and_planted_signal():
    r = SyntheticCTR(rows=20_000, seed=1)
    assert [c for c, _ in r.columns][:2] == ["I1", "I2"] and len(r.columns) == 39
    assert r.vocab_sizes[0] == 10 and r.vocab_sizes[-1] == 10**7
    chunk = next(iter(r.chunks(20_000)))
    # Zipf: the most frequent value of a large field covers far more than 1/V of the rows
    _, counts = np.unique(chunk.features["C20"], return_counts=True)
    assert counts.max() / counts.sum() > 0.05
    rate = chunk.labels.mean()
    assert 0.18 < rate < 0.32
    assert np.isnan(chunk.features["I1"]).mean() == pytest.approx(0.1, abs=0.02)


def test_load_synthetic_builds_vocab_on_train_and_streams_batches():
    data = load("synthetic", rows=3000, seed=0, batch_size=256, progress=False)
    assert sum(data.rows.values()) == 3000
    assert data.schema.is_built
    train, valid, test = data
    x, y = next(iter(train))
    assert set(x) == set(data.schema.names)
    assert x["C1"].dtype.name == "int32" and x["C1"].shape == (256,)
    assert y.shape == (256,)
    # every id in range, OOV id 0 used for rare values of the big fields
    for f in data.schema:
        assert int(np.max(x[f.name])) < f.vocab_size
    n_test = sum(int(b[1].shape[0]) for b in test)
    assert n_test == data.rows["test"]
    freqs = data.frequencies["C26"]
    assert freqs.shape == (data.schema["C26"].vocab_size,) and freqs[0] > 0


def test_load_is_deterministic_by_seed():
    def first_valid(seed):
        d = load("synthetic", rows=2000, seed=seed, batch_size=4096, progress=False)
        return next(iter(d.valid))[1].numpy()

    np.testing.assert_array_equal(first_valid(3), first_valid(3))


def test_load_rejects_missing_columns_and_bad_arguments():
    schema = Schema.criteo()
    with pytest.raises(ValueError, match="fractions"):
        load("synthetic", rows=100, fractions=(0.9, 0.2, 0.1), progress=False)
    with pytest.raises(ValueError, match="format"):
        load("some/file.csv", progress=False)
    bad = Schema([*schema.fields[:3], schema.fields[0].__class__("missing_col")])
    with pytest.raises(ValueError, match="missing_col"):
        load("synthetic", schema=bad, rows=100, progress=False)
    assert DataError("x", "f.txt", 3).line == 3


def test_roc_auc_and_log_loss_match_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500), 2)  # ties on purpose
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert roc_auc(y, s) == pytest.approx(brute)
    p = np.clip(s, 1e-7, 1 - 1e-7)
    assert log_loss(y, s) == pytest.approx(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    with pytest.raises(ValueError, match="AUC needs both positive and negative labels"):
        roc_auc(np.ones(3), np.ones(3))


def test_synthetic_encoded_rows_match_the_string_stream():
    from tfmec.data.synthetic import SyntheticCTR

    gen = SyntheticCTR(rows=2 * 8192, seed=3, vocab_sizes=[50, 10**6], num_numeric=2)
    ids, nums, labels = gen.encoded_rows(0, 2)
    assert ids.shape == (2 * 8192, 2) and ids.dtype == np.int32
    assert nums.shape == (2 * 8192, 2) and nums.dtype == np.float32
    assert ids.min() >= 1 and ids[:, 0].max() <= 50 and ids[:, 1].max() <= 10**6
    stream_labels = np.concatenate([c.labels for c in gen.chunks(4096)])
    np.testing.assert_array_equal(labels, stream_labels)
    # equal ranks give equal tokens in the string stream: the encoding is the same partition
    tokens = np.concatenate([c.features["C1"] for c in gen.chunks(4096)])
    for r in np.unique(ids[:, 0])[:10]:
        assert len(set(tokens[ids[:, 0] == r])) == 1
