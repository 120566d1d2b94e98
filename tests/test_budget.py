"""Tests of the byte budget (issue 19): tfmec.mec.tiers.fit_tiers, the Lagrangian allocation of
tfmec.mec.budget (best_tiers / allocate / profile_table) and tfmec.mec.compress_to_budget on trained models.

Both Keras modes: ``pytest tests/test_budget.py`` and ``TF_USE_LEGACY_KERAS=1 pytest ...``.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.layers import TieredEmbedding, tiers_storage_bytes
from tfmec.layers.tiered_embedding import hashed_codes_numpy
from tfmec.mec import compress_to_budget, count_ids, memory_report
from tfmec.mec.budget import (
    TableProfile,
    _grid,
    allocate,
    best_tiers,
    profile_table,
    table_options,
)
from tfmec.mec.tiers import fit_tiers

# ----------------------------------------------------------------------------- fit_tiers

TIERS = [
    {"kind": "exact", "rows": 12},
    {"kind": "pq", "rows": 60, "num_subspaces": 2, "num_codewords": 8},
    {"kind": "hashed", "rows": 48, "num_subspaces": 2, "num_codewords": 4},
]
V_FIT, D_FIT = 120, 4


def _table(v=V_FIT, d=D_FIT, seed=0):
    """Rows in a few clusters, so that PQ has structure to find."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d)) * 2.0
    return (centres[rng.integers(0, 6, v)] + 0.1 * rng.normal(size=(v, d))).astype("float32")


def _zipf(v, s=1.1):
    return np.floor(1e4 / np.arange(1, v + 1) ** s).astype("float64")


def test_fit_tiers_exact_rows_pq_error_and_layer_built_from_them():
    table, w = _table(), _zipf(V_FIT)
    salt = 3
    arrays = fit_tiers(table, TIERS, w, seed=0, hash_salt=salt)
    assert len(arrays) == 3 and set(arrays[0]) == {"rows"} and set(arrays[1]) == {"codes", "codebooks"}
    assert set(arrays[2]) == {"codebooks"} and arrays[2]["codebooks"].shape == (2, 4, 2)
    layer = TieredEmbedding(V_FIT, D_FIT, TIERS, arrays=arrays, hash_salt=salt)
    decoded = layer.decoded_table()
    np.testing.assert_array_equal(decoded[:12], table[:12])  # exact tiers reproduce the table exactly
    pq = slice(12, 72)
    error = ((decoded[pq] - table[pq]) ** 2).sum(1).mean()
    variance = ((table[pq] - table[pq].mean(0)) ** 2).sum(1).mean()
    assert error < 0.2 * variance, (error, variance)
    # the pq rows are the codebooks at the fitted codes
    codes, books = arrays[1]["codes"], arrays[1]["codebooks"]
    np.testing.assert_array_equal(decoded[pq], np.concatenate([books[m][codes[:, m]] for m in range(2)], axis=1))
    # hashed rows: the codebooks at the codes the hash gives (tier 2 hashes with hash_salt + 2)
    ids = np.arange(72, 120)
    hc = hashed_codes_numpy(ids, 2, 4, salt=salt + 2)
    hb = arrays[2]["codebooks"]
    np.testing.assert_array_equal(decoded[72:], np.concatenate([hb[m][hc[:, m]] for m in range(2)], axis=1))
    # a layer with another hash_salt reads other rows: fit_tiers and the layer must agree on the salt
    other = TieredEmbedding(V_FIT, D_FIT, TIERS, arrays=arrays, hash_salt=salt + 1).decoded_table(ids)
    assert not np.array_equal(other, decoded[72:])
    with pytest.raises(ValueError, match="sum to 119, the table has 120"):
        fit_tiers(table, [dict(TIERS[0], rows=11)] + TIERS[1:], w)


def test_hashed_codebooks_are_the_weighted_means_of_their_rows():
    """A tiny table by hand: codeword (m, c) of a hashed tier is the popularity-weighted mean of the
    sub-vectors of the tier's rows hashed to c in sub-space m; with no weight there, the plain mean."""
    v, d, m, k, salt = 14, 2, 2, 4, 11
    tiers = [{"kind": "exact", "rows": 2}, {"kind": "hashed", "rows": 12, "num_subspaces": m, "num_codewords": k}]
    table = np.random.default_rng(1).normal(size=(v, d)).astype("float32")
    w = np.arange(v, 0, -1).astype("float64")
    ids = np.arange(2, v)
    codes = hashed_codes_numpy(ids, m, k, salt=salt + 1)
    # the one codeword with the most rows in sub-space 0: no weight on its rows -> their plain mean
    c0 = int(np.bincount(codes[:, 0], minlength=k).argmax())
    members0 = ids[codes[:, 0] == c0]
    assert members0.size >= 2
    w_zero = w.copy()
    w_zero[members0] = 0.0
    books = fit_tiers(table, tiers, w_zero, hash_salt=salt)[1]["codebooks"]
    np.testing.assert_allclose(books[0, c0, 0], table[members0, 0].mean(), rtol=1e-6)
    books = fit_tiers(table, tiers, w, hash_salt=salt)[1]["codebooks"]
    np.testing.assert_allclose(books[0, c0, 0], (w[members0] * table[members0, 0]).sum() / w[members0].sum(),
                               rtol=1e-6)
    # every codeword of sub-space 1 (sub-vector = column 1), and a codeword no row reaches is 0
    for c in range(k):
        members = ids[codes[:, 1] == c]
        want = (w[members] * table[members, 1]).sum() / w[members].sum() if members.size else 0.0
        np.testing.assert_allclose(books[1, c, 0], want, rtol=1e-6, atol=1e-7)
    # the layer's hashed rows are exactly these codewords
    layer = TieredEmbedding(v, d, tiers, arrays=fit_tiers(table, tiers, w, hash_salt=salt), hash_salt=salt)
    np.testing.assert_array_equal(layer.decoded_table(ids)[:, 1], books[1, codes[:, 1], 0])


# ----------------------------------------------------------------------------- allocation

# three tables of different sizes and widths, d = 1 included (first-order weights)
SHAPES = [("big", 5000, 16), ("mid", 700, 8), ("first_order", 400, 1)]


def _synthetic_profile(key, v, d, seed):
    """A profile with made-up distortions: per id, an option's error falls with its bits per id and the
    hashed tail's is largest; Zipf popularity with a tail of unused ids."""
    rng = np.random.default_rng(seed)
    w = _zipf(v, s=1.2)
    w[int(0.8 * v):] = 0.0  # never seen in training
    options = table_options(d, v)
    grid = _grid(v, w)
    per_id_noise = rng.uniform(0.5, 1.5, v)
    cost = np.zeros((len(options), grid.size))
    for o, opt in enumerate(options):
        if opt.kind == "exact":
            continue
        if opt.kind == "pq":
            bits = opt.num_subspaces * np.log2(opt.num_codewords)
            err = d * per_id_noise * 2.0 ** (-2.0 * bits / d)
        else:
            err = d * per_id_noise * (1.5 - 0.01 * np.log2(opt.num_codewords))
        cum = np.concatenate([[0.0], np.cumsum(w * err)])
        cost[o] = cum[grid]
    return TableProfile(key, v, d, options, grid, cost)


@pytest.fixture(scope="module")
def profiles():
    return [_synthetic_profile(k, v, d, i) for i, (k, v, d) in enumerate(SHAPES)]


def _least_bytes(profiles, contrastive=True):
    return sum(tiers_storage_bytes(best_tiers(p, 1e33)[0], p.dim, contrastive and p.dim > 1) for p in profiles)


def _check_tiers(tiers, p):
    """Contiguous tiers covering [0, V), bytes per id never growing from head to tail."""
    assert tiers and all(t.rows >= 1 for t in tiers)
    assert sum(t.rows for t in tiers) == p.vocab_size
    per_id = [t.id_bytes(p.dim) for t in tiers]
    assert per_id == sorted(per_id, reverse=True), tiers  # the head (low ids) gets at least the tail's bytes
    kinds = [t.kind for t in tiers]
    assert kinds == sorted(kinds, key=["exact", "pq", "hashed"].index)  # exact head, pq middle, hashed tail
    for t in tiers:
        if t.kind != "exact":
            assert p.dim % t.num_subspaces == 0


def test_allocation_never_exceeds_a_sweep_of_budgets(profiles):
    full = sum(4 * p.vocab_size * p.dim for p in profiles)
    least = _least_bytes(profiles)
    assert least < full / 50
    previous = None
    for budget in np.unique(np.geomspace(least, full, 20).astype(np.int64)):
        plan = allocate(profiles, int(budget))
        total = 0
        for p in profiles:
            tiers = plan["tables"][p.key]
            _check_tiers(tiers, p)
            total += tiers_storage_bytes(tiers, p.dim, p.dim > 1)  # d = 1 tables carry no contrastive term
            # the built layer holds exactly the bytes the allocation counted
            if budget == least or budget == full:
                layer = TieredEmbedding(p.vocab_size, p.dim, tiers, contrastive_weight=0.1)
                layer(tf.constant([0]))
                assert layer.storage_bytes == tiers_storage_bytes(tiers, p.dim, True) == sum(
                    int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)
        assert total == plan["bytes"] <= budget
        assert plan["bytes"] >= 0.5 * budget or budget < 4 * least  # a budget is mostly used, not wasted
        if previous is not None:
            assert plan["distortion"] <= previous + 1e-9  # more bytes never cost distortion
        previous = plan["distortion"]
    with pytest.raises(ValueError, match="below the least"):
        allocate(profiles, least - 1)
    # the message names the least bytes possible
    with pytest.raises(ValueError, match=f"{least:,} bytes"):
        allocate(profiles, least // 2)


def test_a_budget_at_or_above_the_full_bytes_keeps_tables_exact(profiles):
    full = sum(4 * p.vocab_size * p.dim for p in profiles)
    for budget in (full, full + 1, 10 * full):
        plan = allocate(profiles, budget)
        assert plan["bytes"] == full and plan["distortion"] == 0.0
        for p in profiles:
            assert [(t.kind, t.rows) for t in plan["tables"][p.key]] == [("exact", p.vocab_size)]


def test_allocation_does_not_depend_on_the_scale_of_the_distortion(profiles):
    full = sum(4 * p.vocab_size * p.dim for p in profiles)
    for scale in (1e3, 1e-6, 1e-12):
        scaled = [TableProfile(p.key, p.vocab_size, p.dim, p.options, p.grid, p.cost * scale) for p in profiles]
        for budget in (full // 4, full // 16, full // 64):
            want = allocate(profiles, budget)["bytes"]
            got = allocate(scaled, budget)["bytes"]
            assert got <= budget
            assert abs(got - want) <= 0.02 * budget, (scale, budget, got, want)


def test_best_tiers_trades_bytes_for_distortion(profiles):
    for p in profiles:
        last_bytes = None
        for lam in (0.0, 1e-6, 1e-3, 1e-1, 1e1, 1e3, 1e6, 1e30):
            tiers, dist = best_tiers(p, lam)
            _check_tiers(tiers, p)
            nbytes = tiers_storage_bytes(tiers, p.dim)
            if last_bytes is not None:
                assert nbytes <= last_bytes  # a higher price of bytes never buys more of them
            last_bytes = nbytes
            assert dist >= 0.0
        # at the highest price: one zero-byte hashed tier with the fewest codewords (or the cheapest option)
        tiers, _ = best_tiers(p, 1e30)
        assert tiers_storage_bytes(tiers, p.dim) == min(
            o.tier(p.vocab_size).storage_bytes(p.dim) for o in p.options)


def test_zipf_head_gets_more_bytes_per_id_than_the_tail_on_a_measured_profile():
    """profile_table on a real table under Zipf counts: at a mid budget the allocation keeps the most
    popular ids in the richest tier and sends the unused tail to the cheapest."""
    v, d = 3000, 8
    table = np.random.default_rng(0).normal(size=(v, d)).astype("float32")
    counts = _zipf(v)
    counts[2500:] = 0
    p = profile_table("t", table, counts, seed=0)
    assert p.cost.shape == (len(p.options), p.grid.size) and p.grid[0] == 0 and p.grid[-1] == v
    assert np.all(np.diff(p.cost, axis=1) >= -1e-9)  # cumulative sums of non-negative distortion
    assert np.all(p.cost[0] == 0)  # exact rows have no distortion
    full = 4 * v * d
    least = _least_bytes([p])
    for budget in (least, full // 32, full // 8, full // 2):
        plan = allocate([p], budget)
        tiers = plan["tables"]["t"]
        _check_tiers(tiers, p)
        assert plan["bytes"] <= budget
        per_id = np.repeat([t.id_bytes(d) for t in tiers], [t.rows for t in tiers])
        assert per_id[:10].min() >= per_id[2500:].max()
        assert per_id[2500:].max() == 0.0 or budget >= full // 2  # ids never seen cost nothing
        assert per_id[:10].mean() >= per_id.mean()


# ----------------------------------------------------------------------------- compress_to_budget

N_TRAIN, N_VAL = 4096, 1024
FIELDS = {"user": (3000, 8), "item": (600, 16), "slot": (50, 1)}


def _zipf_ids(rng, v, n, s=1.2):
    p = 1.0 / np.arange(1, v + 1) ** s
    return rng.choice(v, size=n, p=p / p.sum()).astype("int32")


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = {f: _zipf_ids(rng, v, n) for f, (v, _) in FIELDS.items()}
    logit = np.sin(x["user"] * 0.7) + np.cos(x["item"] * 1.3) + 0.3 * (x["slot"] % 3 - 1)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * logit))).astype("float32")[:, None]
    return x, y


def _dataset(x, y, batch=512):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _predict(model, x):
    return np.asarray(model.predict(x, batch_size=1024, verbose=0)).reshape(-1)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    inputs = {f: keras.Input(shape=(), dtype="int32", name=f) for f in FIELDS}
    embs = [keras.layers.Embedding(v, d, name=f"emb_{f}")(inputs[f]) for f, (v, d) in FIELDS.items()]
    x = keras.layers.Concatenate()(embs)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(16, activation="relu")(x))
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    x, y = _data(N_TRAIN, 0)
    model.fit(x, y, batch_size=256, epochs=1, verbose=0)
    counts = count_ids(model, _dataset(x, y), progress=False)
    return model, counts, _dataset(*_data(N_VAL, 1))


@pytest.mark.parametrize("ratio", [8, 32])
def test_compress_to_budget_fits_the_budget_trains_and_saves(trained, ratio, tmp_path):
    model, counts, val = trained
    full = memory_report(model)["embedding_bytes"]
    assert full == sum(4 * v * d for v, d in FIELDS.values())
    budget = full // ratio
    small, plan = compress_to_budget(model, counts, budget, val, alphas=(1.0, 0.5), seed=0)
    used = memory_report(small)["embedding_bytes"]
    assert used <= budget and plan.bytes == used and plan.budget_bytes == budget
    assert memory_report(model)["embedding_bytes"] == full  # the input model is left as it was
    assert [(c["alpha"], c["fraction"]) for c in plan.candidates] == [(1.0, 1.0), (1.0, 0.25), (0.5, 1.0),
                                                                       (0.5, 0.25)]
    for c in plan.candidates:
        assert 0.0 <= c["validation_auc"] <= 1.0 and c["bytes"] <= budget
    assert plan.alpha in (1.0, 0.5)
    kept = next(c for c in plan.candidates if c["bytes"] == plan.bytes
                and c["alpha"] == plan.alpha)
    assert kept["validation_auc"] == max(c["validation_auc"] for c in plan.candidates)
    tiered = [layer for layer in small.layers if isinstance(layer, TieredEmbedding)]
    assert tiered, "nothing was compressed"
    for layer in tiered:
        assert layer.storage_bytes == sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in layer.weights)
        key = next(k for k in plan.tables if layer.name in k)
        assert [t.to_config() for t in layer.tiers] == plan.tables[key]
        if layer.output_dim > 1:  # predicted bytes (the allocation's) equal the built layer's
            assert layer.storage_bytes == tiers_storage_bytes(plan.tables[key], layer.output_dim, True)
    assert plan.describe().startswith("memory budget")
    # fine-tuning (stage 2) runs, and the model saves and reloads with equal predictions
    x, y = _data(512, 2)
    small.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    small.fit(x, y, batch_size=512, epochs=1, verbose=0)
    assert memory_report(small)["embedding_bytes"] == used
    want = _predict(small, x)
    assert np.all(np.isfinite(want))
    path = str(tmp_path / "budget.keras")
    small.save(path)
    np.testing.assert_array_equal(_predict(keras.models.load_model(path), x), want)


def test_predicted_bytes_equal_the_built_models_with_a_first_order_table(trained):
    model, counts, _ = trained
    full = memory_report(model)["embedding_bytes"]
    small, plan = compress_to_budget(model, counts, full // 32, alphas=(1.0,), seed=0)
    assert len(plan.candidates) == 1 and plan.candidates[0]["validation_auc"] is None
    slot = small.get_layer("emb_slot")
    assert isinstance(slot, TieredEmbedding) and slot.output_dim == 1  # the d = 1 table is coded
    assert slot.storage_bytes == tiers_storage_bytes(slot.tiers, 1, False)  # d = 1: no contrastive counter
    assert plan.candidates[0]["bytes"] == plan.bytes == memory_report(small)["embedding_bytes"]


def test_compress_to_budget_below_the_least_bytes_raises(trained):
    model, counts, _ = trained
    with pytest.raises(ValueError, match="below the least"):
        compress_to_budget(model, counts, 100, alphas=(1.0,))


def test_shared_table_behind_a_string_lookup(tmp_path):
    """Two string inputs share one StringLookup and one table; counted with count_ids; compressed to a
    budget; the result predicts, fine-tunes and reloads."""
    keras.utils.set_random_seed(1)
    vocab = [f"tok{i}" for i in range(1500)]  # in descending frequency, as the counts will show
    src = keras.Input(shape=(), dtype="string", name="src")
    dst = keras.Input(shape=(), dtype="string", name="dst")
    lookup = keras.layers.StringLookup(vocabulary=vocab, name="lookup")
    table = keras.layers.Embedding(len(vocab) + 1, 8, name="shared_table")
    other = keras.layers.Embedding(len(vocab) + 1, 4, name="src_only")
    x = keras.layers.Concatenate()([table(lookup(src)), table(lookup(dst)), other(lookup(src))])
    model = keras.Model({"src": src, "dst": dst}, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    rng = np.random.default_rng(3)

    def data(n):
        a, b = _zipf_ids(rng, len(vocab) + 50, n), _zipf_ids(rng, len(vocab) + 50, n)
        raw = {"src": np.asarray([f"tok{i}" for i in a], dtype=object),
               "dst": np.asarray([f"tok{i}" for i in b], dtype=object)}  # ids past the vocabulary: OOV
        y = ((a + b) % 3 == 0).astype("float32")[:, None]
        return raw, y

    xt, yt = data(2048)
    model.fit({k: tf.constant(v) for k, v in xt.items()}, yt, batch_size=256, epochs=1, verbose=0)
    train = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(512)
    counts = count_ids(model, train, progress=False)
    assert len(counts) == 2
    shared = next(c for k, c in counts.items() if "shared_table" in k)
    assert shared.sum() == 2 * 2048  # both inputs counted
    xv, yv = data(512)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(512)
    full = memory_report(model)["embedding_bytes"]
    budget = full // 16
    small, plan = compress_to_budget(model, counts, budget, val, alphas=(1.0, 0.5))
    assert memory_report(small)["embedding_bytes"] <= budget
    assert len(plan.candidates) == 4 and all(c["validation_auc"] is not None for c in plan.candidates)
    layer = small.get_layer("shared_table")
    assert isinstance(layer, TieredEmbedding) and sum(t.rows for t in layer.tiers) == len(vocab) + 1
    features = {k: tf.constant(v) for k, v in xv.items()}
    want = _predict(small, features)
    assert np.all(np.isfinite(want))
    small.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    small.fit(train.take(1), epochs=1, verbose=0)
    want = _predict(small, features)
    path = str(tmp_path / "shared.keras")
    small.save(path)
    np.testing.assert_array_equal(_predict(keras.models.load_model(path), features), want)
