"""Multi-valued fields end to end (issue 20): the list rules, shared vocabularies and tables, padding
semantics, DIN, MEC on a shared table, and export with list inputs (both Keras modes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmec import export
from tfmec.backend import keras
from tfmec.data import CATEGORICAL, DataError, Field, FeatureEncoder, Schema, Vocabulary, load
from tfmec.data.lists import encode_lists
from tfmec.evaluation import embedding_bytes
from tfmec.export.preprocessing import most_recent_first
from tfmec.layers import MaskedMeanPooling, MaskedWeightedSum
from tfmec.mec import compress_embeddings, learn_codes
from tfmec.models import DIN, DeepFM, build_model

SM_TOL, ONNX_TOL = 1e-6, 1e-5


def _vocab(tokens, counts=None):
    v = Vocabulary("items", min_count=1)
    for t, c in zip(tokens, counts or [len(tokens) - i for i in range(len(tokens))]):
        v.update(np.asarray([t] * c, dtype=object))
    return v.finalize()


# ---------------------------------------------------------------------------------------------- list rules
def test_lists_keep_the_most_recent_known_values_most_recent_first():
    v = _vocab(["a", "b", "c", "d"])  # ids a=1, b=2, c=3, d=4
    cells = np.empty(7, dtype=object)
    cells[:] = ["a b c d",          # longer than 3: the 3 most recent (d, c, b)
                "",                 # empty: all padding
                "zz a zz",          # unknown values dropped, not counted against the length
                ["b", "a"],         # a list cell (Parquet / TFRecord)
                None,               # missing
                np.array(["c"]),    # a 1-D array
                ["", "d", ""]]      # empty strings (a served request's padding) dropped
    out = encode_lists(v, cells, max_length=3)
    assert out.dtype == np.int32 and out.shape == (7, 3)
    np.testing.assert_array_equal(out, [[4, 3, 2], [0, 0, 0], [1, 0, 0], [1, 2, 0], [0, 0, 0], [3, 0, 0], [4, 0, 0]])
    sep = encode_lists(v, np.asarray(["a|b||c"], dtype=object), max_length=5, separator="|")
    np.testing.assert_array_equal(sep, [[3, 2, 1, 0, 0]])


def test_in_graph_list_rule_equals_the_numpy_one():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(64, 9)).astype(np.int32)  # 0 = a dropped value or padding
    for length in (1, 4, 9, 12):
        want = np.zeros((64, length), np.int32)
        for r, row in enumerate(ids):
            kept = [x for x in row if x][::-1][:length]
            want[r, :len(kept)] = kept
        np.testing.assert_array_equal(most_recent_first(tf.constant(ids), length).numpy(), want)


@pytest.mark.parametrize("cell", [3.5, {"a": 1}, np.zeros((2, 2))])
def test_a_bad_list_cell_is_a_data_error_naming_the_field(cell):
    schema = Schema([Field("hist", max_length=3, min_count=1)])
    enc = FeatureEncoder(schema)
    cells = np.empty(1, dtype=object)
    cells[0] = cell
    with pytest.raises(DataError, match="field 'hist'.*multi-valued cell"):
        enc.update({"hist": cells})


@pytest.mark.parametrize("fields, message", [
    ([Field("h", max_length=3, shares="item")], "shares 'item', which is not a field"),
    ([Field("x", "numeric"), Field("h", max_length=3, shares="x")], "must be a categorical field with its own"),
    ([Field("a"), Field("b", shares="a"), Field("h", max_length=2, shares="b")], "must be a categorical field"),
])
def test_schema_refuses_bad_sharing(fields, message):
    with pytest.raises(ValueError, match=message):
        Schema(fields)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="numeric", max_length=3), "categorical fields only"),
    (dict(max_length=0), "max_length must be an integer >= 1"),
    (dict(separator="|"), "separator"),
    (dict(kind="sequence"), "max_length=N"),
])
def test_field_refuses_bad_list_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Field("f", **kwargs)


# ------------------------------------------------------------------------------------ data and vocabularies
@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    """A small CSV of news clicks: the candidate item, the user's earlier clicks (``|``-separated,
    oldest first) and a label that depends on whether the candidate was clicked before."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("clicks") / "clicks.csv"
    rows = ["user,item,history,label"]
    for _ in range(3000):
        user = rng.integers(0, 40)
        hist = [f"n{x}" for x in rng.integers(0, 60, size=rng.integers(0, 9))]
        item = f"n{rng.integers(0, 60)}"
        label = int(item in hist or rng.random() < 0.1)
        rows.append(f"u{user},{item},{'|'.join(hist)},{label}")
    path.write_text("\n".join(rows) + "\n")
    schema = Schema([Field("user"), Field("item"), Field("history", max_length=6, shares="item", separator="|")],
                    label="label")
    return load(str(path), schema, format="csv", label="label", batch_size=256, progress=False, seed=0)


def test_shared_vocabulary_counts_every_occurrence_and_batches_are_padded(clicks):
    assert set(clicks.encoder.vocabularies) == {"user", "item"}  # one vocabulary per table
    assert clicks.schema["history"].vocab_size == clicks.schema["item"].vocab_size
    x, y = next(iter(clicks.train))
    assert x["history"].shape == (256, 6) and x["history"].dtype == tf.int32
    assert x["item"].shape == (256,)
    # the counts hold the candidates' and the histories' occurrences (both fields read the same ids)
    seen = np.zeros(clicks.schema["item"].vocab_size)
    for feats, _ in clicks.train:
        np.add.at(seen, feats["item"].numpy(), 1)
        np.add.at(seen, feats["history"].numpy(), 1)
    seen[0] = 0  # padding and OOV
    counts = clicks.frequencies["item"]
    # kept histories are at most 6 long, so what the batches hold is at most what was counted
    assert (counts[1:] >= seen[1:]).all() and seen[1:].sum() > 0.9 * counts[1:].sum()


# ------------------------------------------------------------------------------------------------- models
def _schema(length):
    return Schema([Field("user", vocab_size=12), Field("item", vocab_size=30),
                   Field("history", max_length=length, shares="item", vocab_size=30),
                   Field("genres", max_length=3, vocab_size=7)])


def _rows(length, n=16, seed=0):
    rng = np.random.default_rng(seed)
    hist = np.zeros((n, length), np.int32)
    for r in range(n):
        k = rng.integers(0, min(length, 4) + 1)
        hist[r, :k] = rng.integers(1, 30, size=k)
    genres = np.zeros((n, 3), np.int32)
    genres[:, 0] = rng.integers(1, 7, size=n)
    return {"user": rng.integers(0, 12, size=n).astype(np.int32), "item": rng.integers(0, 30, size=n).astype(np.int32),
            "history": hist, "genres": genres}


@pytest.mark.parametrize("builder", [DIN, DeepFM])
def test_prediction_does_not_depend_on_the_amount_of_padding(builder):
    short = builder(_schema(4), embedding_dim=8, seed=0, hidden_units=(8,))
    long = builder(_schema(9), embedding_dim=8, seed=1, hidden_units=(8,))
    long.set_weights(short.get_weights())  # no weight depends on the length
    x = _rows(4)
    padded = dict(x, history=np.pad(x["history"], [(0, 0), (0, 5)]))
    np.testing.assert_allclose(np.asarray(long(padded)), np.asarray(short(x)), atol=1e-6)
    # and a row's own padding: an empty history equals no history at all, whatever else is in the batch
    empty = dict(x, history=np.zeros_like(x["history"]))
    p = np.asarray(short(empty))
    np.testing.assert_allclose(np.asarray(short({k: v[:1] for k, v in empty.items()})), p[:1], atol=1e-6)


def test_pooling_layers_mask_padding():
    ids = tf.constant([[2, 5, 0, 0], [0, 0, 0, 0]])
    rows = tf.random.normal([2, 4, 3], seed=1)
    mean = MaskedMeanPooling()([ids, rows]).numpy()
    np.testing.assert_allclose(mean[0], rows.numpy()[0, :2].mean(0), atol=1e-6)
    np.testing.assert_array_equal(mean[1], np.zeros(3))
    w = tf.constant([[[2.0], [3.0], [100.0], [100.0]]] * 2)
    out = MaskedWeightedSum()([ids, w, rows]).numpy()
    np.testing.assert_allclose(out[0], 2 * rows.numpy()[0, 0] + 3 * rows.numpy()[0, 1], atol=1e-5)
    np.testing.assert_array_equal(out[1], np.zeros(3))


def test_din_shares_one_table_and_refuses_a_schema_without_lists(tmp_path):
    model = DIN(_schema(5), embedding_dim=8, seed=0, hidden_units=(8,), attention_units=(4,))
    tables = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    assert sorted(t.name for t in tables) == ["embedding_genres", "embedding_item", "embedding_user"]
    item = model.get_layer("embedding_item")
    assert len(item._inbound_nodes) == 2  # called on the candidate and on the history
    assert {"attention_history_dense_0", "attention_history_score"} <= {layer.name for layer in model.layers}
    path = str(tmp_path / "din.keras")
    model.save(path)
    x = _rows(5)
    np.testing.assert_allclose(np.asarray(keras.models.load_model(path)(x)), np.asarray(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="DIN needs a multi-valued field"):
        DIN(Schema([Field("a", vocab_size=3)]))


# -------------------------------------------------------------------------------------------------- MEC
def test_mec_compresses_a_shared_table_once(clicks):
    model = build_model("din", clicks.schema, embedding_dim=8, seed=0, hidden_units=(16,), attention_units=(8,))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    model.fit(clicks.train, epochs=1, verbose=0)
    codes = learn_codes(model, clicks.frequencies, num_subspaces=2, num_codewords=8, seed=0, progress=False)
    assert sorted(codes) == ["item", "user"]  # the shared table once
    compressed = compress_embeddings(model, codes)
    layer = compressed.get_layer("embedding_item")
    assert len(layer._inbound_nodes) == 2  # still one layer for the candidate and the history
    unique = {id(x): x for x in compressed.layers if getattr(x, "is_embedding_table", False)
              or isinstance(x, keras.layers.Embedding)}
    assert embedding_bytes(compressed) == sum(int(getattr(x, "storage_bytes", 0) or 4 * np.prod(x.weights[0].shape))
                                              for x in unique.values())
    x, _ = next(iter(clicks.test))
    assert np.isfinite(np.asarray(compressed(x))).all()


# ----------------------------------------------------------------------------------------------- export
def test_export_takes_string_lists_and_padded_ids(clicks, tmp_path):
    model = build_model("din", clicks.schema, embedding_dim=8, seed=0, hidden_units=(16,), attention_units=(8,))
    enc = clicks.encoder
    sm = export.saved_model(model, str(tmp_path / "sm"), enc)
    serve = tf.saved_model.load(sm).signatures["serving_default"]
    hist_rows = [["n1", "n2", "n3"], [], ["n5", "never-seen", "n1", "n2", "n3", "n4", "n6", "n7", "n8"], ["n9"]]
    raw = {"user": np.asarray(["u1", "u2", "u3", "nobody"], dtype=object),
           "item": np.asarray(["n1", "n2", "n3", "n4"], dtype=object)}
    cells = np.empty(4, dtype=object)
    cells[:] = ["|".join(h) for h in hist_rows]
    want = np.asarray(model(enc.encode({"user": raw["user"], "item": raw["item"], "history": cells}))).reshape(-1)
    padded = export.pad_lists(hist_rows)
    got = serve(user=tf.constant(raw["user"].astype(str)), item=tf.constant(raw["item"].astype(str)),
                history=tf.constant(padded))["probability"].numpy().reshape(-1)
    np.testing.assert_allclose(got, want, atol=SM_TOL)
    wider = [r + [""] * 4 for r in padded]  # more padding: same answer
    got2 = serve(user=tf.constant(raw["user"].astype(str)), item=tf.constant(raw["item"].astype(str)),
                 history=tf.constant(wider))["probability"].numpy().reshape(-1)
    np.testing.assert_allclose(got2, want, atol=SM_TOL)
    # the REST converter takes JSON lists (padded); ragged ones are refused with the fix
    body = {"instances": [{"user": u, "item": i, "history": h} for u, i, h in zip(raw["user"], raw["item"], padded)]}
    response = export.predict_request(tf.saved_model.load(sm).signatures, json.dumps(body))
    np.testing.assert_allclose(np.ravel(response["predictions"]), want, atol=SM_TOL)
    ragged = {"instances": [{"user": u, "item": i, "history": h} for u, i, h in zip(raw["user"], raw["item"], hist_rows)]}
    with pytest.raises(export.RequestError, match="pad each row's list"):
        export.predict_request(tf.saved_model.load(sm).signatures, json.dumps(ragged))
    # ONNX takes the padded ids (the mask is ids != 0 inside)
    path = export.onnx(model, str(tmp_path / "din.onnx"), enc)
    ids = enc.encode({"user": raw["user"], "item": raw["item"], "history": cells})
    np.testing.assert_allclose(export.predict_onnx(path, ids).reshape(-1), want, atol=ONNX_TOL)


def test_vocabulary_of_a_list_field_is_its_tables():
    schema = Schema([Field("item", min_count=1), Field("history", max_length=2, shares="item", min_count=1)])
    enc = FeatureEncoder(schema)
    enc.update({"item": np.asarray(["a", "b"], dtype=object), "history": np.asarray(["c c a", ""], dtype=object)})
    schema = enc.finalize()
    assert enc.vocabularies["item"].tokens == ["a", "c", "b"]  # a, c twice each (ties by value), b once
    np.testing.assert_array_equal(enc.vocabularies["item"].counts, [0, 2, 2, 1])
    assert schema["history"].vocab_size == schema["item"].vocab_size == 4
    assert CATEGORICAL == schema["history"].kind


# ---------------------------------------------------------------------------------------------------- CLI
def _clicks_csv(path, rows=1500, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["user,movie,genres,history,rating,ts"]
    genres = ["Action", "Comedy", "Drama", "Horror"]
    for _ in range(rows):
        hist = [f"m{x}" for x in rng.integers(0, 40, size=rng.integers(0, 7))]
        movie = f"m{rng.integers(0, 40)}"
        g = "|".join(rng.choice(genres, size=rng.integers(0, 3), replace=False))
        rating = 5 if movie in hist else int(rng.integers(1, 5))
        lines.append(f"u{rng.integers(0, 30)},{movie},{g},{' '.join(hist)},{rating},{rng.integers(10**9)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tfmec_run_din_every_method_from_the_csv_list_flags(tmp_path):
    from tfmec.cli import main

    data = _clicks_csv(tmp_path / "ratings.csv")
    out = tmp_path / "run"
    code = main(["run", "--data", str(data), "--format", "csv", "--label", "rating", "--label-threshold", "4",
                 "--list", "genres:|", "--list", "history", "--share", "history=movie", "--max-length", "5",
                 "--drop", "ts",
                 "--model", "din", "--method", "none,mec,afm,mec+afm,int8,hash", "--epochs", "1",
                 "--embedding-dim", "8", "--codewords", "16", "--stage1-epochs", "1", "--afm-fine-tune-epochs", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    runs = {r["method"]: r for r in metrics["runs"]}
    assert set(runs) == {"baseline", "mec", "afm", "mec+afm", "int8", "hash"}
    assert all(0.0 <= r["test_auc"] <= 1.0 for r in runs.values())
    assert runs["mec"]["embedding_bytes"] < runs["baseline"]["embedding_bytes"]
    ranks = runs["afm"]["afm"]["ranks"]
    assert any(name.startswith("attention_history") for name in ranks) and "dnn_dense_0" in ranks, ranks
    vocab, _ = __import__("tfmec.data", fromlist=["load_vocabularies"]).load_vocabularies(str(out / "vocabulary.json"))
    assert set(vocab) == {"user", "movie", "genres"}  # history has no vocabulary of its own
    assert "din" in (out / "report.md").read_text()
    # the exported SavedModel takes the lists as strings
    serve = tf.saved_model.load(str(out / "baseline" / "saved_model" / "1")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["history"].shape.as_list() == [None, None]


def test_cli_list_flags_are_checked(tmp_path):
    from tfmec.experiment import RunConfig

    data = _clicks_csv(tmp_path / "ratings.csv", rows=10)
    with pytest.raises(ValueError, match="--share 'history'"):
        RunConfig(data=str(data), format="csv", label="rating", shares=["history"]).validate()
    with pytest.raises(ValueError, match="--list applies to --format csv only"):
        RunConfig(data=str(data), format="mind", lists=["history"]).validate()
    with pytest.raises(ValueError, match="--max-length must be at least 1"):
        RunConfig(max_length=0).validate()


def test_drop_leaves_a_column_out_of_any_format(tmp_path):
    path = tmp_path / "behaviors.tsv"
    path.write_text("".join(f"{i}\tU{i % 7}\t11/12/2019 2:14:46 PM\tN{i % 5} N{i % 3}\tN{i % 4}-{i % 2} N9-0\n"
                            for i in range(60)))
    full = load(str(path), format="mind", batch_size=16, progress=False, min_count=1)
    assert full.schema["history"].shares == "news_id" and full.schema["history"].max_length == 50
    data = load(str(path), format="mind", batch_size=16, progress=False, min_count=1, drop=["history"])
    assert "history" not in data.schema.names and "history" not in next(iter(data.train))[0]
    with pytest.raises(ValueError, match=r"fields \['history'\] share the table of a dropped column"):
        load(str(path), format="mind", progress=False, drop=["news_id"])
    with pytest.raises(ValueError, match="drop names columns \\['nope'\\]"):
        load(str(path), format="mind", progress=False, drop=["nope"])


def test_a_hand_written_model_may_take_histories_of_any_length():
    from tfmec.export.module import check_schema_matches

    schema = Schema([Field("item", vocab_size=9), Field("history", max_length=4, shares="item", vocab_size=9)])
    specs = {"item": tf.TensorSpec([None], tf.int32), "history": tf.TensorSpec([None, None], tf.int32)}
    check_schema_matches(specs, schema)  # [batch, None]: the served [batch, 4] fits it
    with pytest.raises(ValueError, match=r"multi-valued fields must be model inputs \[batch, max_length\]"):
        check_schema_matches(dict(specs, history=tf.TensorSpec([None, 7], tf.int32)), schema)
