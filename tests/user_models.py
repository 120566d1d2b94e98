"""Models written the way recommender engineers write them in Keras, for the tests of tfmec on users'
own models (tests/test_user_models.py). Nothing here uses tfmec: each builder returns a model as a
tutorial, DeepCTR or a hand-written script would, and synthetic data in the form it takes.

Every builder returns ``Style(model, data, eval_x, loss)``: ``data`` a ``tf.data.Dataset`` of
``(features, label)`` batches, ``eval_x`` a dict (or tuple) of inputs for comparing predictions.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras

ROWS = 768
BATCH = 128
USERS = np.array([f"user_{i}" for i in range(120)])
MOVIES = np.array([f"movie_{i}" for i in range(300)])
HISTORY = 12


@dataclasses.dataclass
class Style:
    model: object
    data: object
    eval_x: object
    loss: str = "binary_crossentropy"
    string_inputs: bool = False


def _zipf(rng, n, size):
    return (rng.zipf(1.3, size) - 1) % n


def _labels(rng, *keys):
    score = sum(np.sin(k.astype(np.float64) * (i + 1.7)) for i, k in enumerate(keys))
    return (score + 0.3 * rng.standard_normal(len(keys[0])) > 0).astype("float32")


def _dataset(features, labels):
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(BATCH)


def _head(x, name_prefix="mlp"):
    x = keras.layers.Dense(32, activation="relu", name=f"{name_prefix}_0")(x)
    x = keras.layers.Dense(16, activation="relu", name=f"{name_prefix}_1")(x)
    return keras.layers.Dense(1, activation="sigmoid", name=f"{name_prefix}_out")(x)


def _eval(features, n=64):
    return {k: v[:n] for k, v in features.items()}


def string_lookup(seed=0) -> Style:
    """The Keras/TFRS tutorial pattern: raw strings in, ``StringLookup`` -> ``Embedding`` inside."""
    rng = np.random.default_rng(seed)
    u, m = _zipf(rng, len(USERS), ROWS), _zipf(rng, len(MOVIES), ROWS)
    features = {"user_id": USERS[u], "movie_title": MOVIES[m]}
    user = keras.Input(shape=(), dtype="string", name="user_id")
    movie = keras.Input(shape=(), dtype="string", name="movie_title")
    user_lookup = keras.layers.StringLookup(vocabulary=USERS[:100], name="user_lookup")  # 20 users are OOV
    movie_lookup = keras.layers.StringLookup(name="movie_lookup")
    movie_lookup.adapt(MOVIES)
    x = keras.layers.Concatenate()([
        keras.layers.Embedding(101, 8, name="user_emb")(user_lookup(user)),
        keras.layers.Embedding(movie_lookup.vocabulary_size(), 8, name="movie_emb")(movie_lookup(movie)),
    ])
    model = keras.Model({"user_id": user, "movie_title": movie}, _head(x))
    return Style(model, _dataset(features, _labels(rng, u, m)), _eval(features), string_inputs=True)


def integer_lookup(seed=0) -> Style:
    """Raw integer ids (sparse, large values) through ``IntegerLookup`` inside the model."""
    rng = np.random.default_rng(seed)
    raw_items = (np.arange(200) * 7919 + 13).astype("int64")
    i, c = _zipf(rng, 200, ROWS), rng.integers(0, 10, ROWS)
    features = {"item": raw_items[i], "category": c.astype("int64")}
    item = keras.Input(shape=(), dtype="int64", name="item")
    cat = keras.Input(shape=(), dtype="int64", name="category")
    lookup = keras.layers.IntegerLookup(name="item_lookup")
    lookup.adapt(raw_items)
    x = keras.layers.Concatenate()([
        keras.layers.Embedding(lookup.vocabulary_size(), 8, name="item_table")(lookup(item)),
        keras.layers.Embedding(10, 4, name="category_table")(cat),
    ])
    model = keras.Model({"item": item, "category": cat}, _head(x))
    return Style(model, _dataset(features, _labels(rng, i, c)), _eval(features))


def hashing(seed=0) -> Style:
    """The hashing trick written by hand: ``Hashing(num_bins)`` -> ``Embedding(num_bins, d)``."""
    rng = np.random.default_rng(seed)
    q = _zipf(rng, 500, ROWS)
    features = {"query": np.array([f"q{j}" for j in q])}
    query = keras.Input(shape=(), dtype="string", name="query")
    ids = keras.layers.Hashing(num_bins=256, name="query_hash")(query)
    x = keras.layers.Embedding(256, 8, name="query_emb")(ids)
    model = keras.Model({"query": query}, _head(x))
    return Style(model, _dataset(features, _labels(rng, q)), _eval(features), string_inputs=True)


def own_names(seed=0) -> Style:
    """Ids prepared outside the model, the user's own layer names (``item_embedding``...)."""
    rng = np.random.default_rng(seed)
    u, i = _zipf(rng, 150, ROWS), _zipf(rng, 250, ROWS)
    features = {"uid": u.astype("int32"), "iid": i.astype("int32")}
    uid = keras.Input(shape=(), dtype="int32", name="uid")
    iid = keras.Input(shape=(), dtype="int32", name="iid")
    x = keras.layers.Concatenate()([keras.layers.Embedding(150, 8, name="user_embedding")(uid),
                                    keras.layers.Embedding(250, 8, name="item_embedding")(iid)])
    model = keras.Model({"uid": uid, "iid": iid}, _head(x, "tower"))
    return Style(model, _dataset(features, _labels(rng, u, i)), _eval(features))


def shared_table(seed=0) -> Style:
    """One item table read by two inputs: the candidate item and the last clicked item."""
    rng = np.random.default_rng(seed)
    cand, last = _zipf(rng, 300, ROWS), _zipf(rng, 300, ROWS)
    features = {"candidate": cand.astype("int32"), "last_click": last.astype("int32")}
    a = keras.Input(shape=(), dtype="int32", name="candidate")
    b = keras.Input(shape=(), dtype="int32", name="last_click")
    items = keras.layers.Embedding(300, 8, name="items")
    x = keras.layers.Concatenate()([items(a), items(b), keras.layers.Multiply()([items(a), items(b)])])
    model = keras.Model({"candidate": a, "last_click": b}, _head(x))
    return Style(model, _dataset(features, _labels(rng, cand, last)), _eval(features))


def masked_history(seed=0) -> Style:
    """A padded click history (id 0 = padding) with ``mask_zero=True`` and masked mean pooling, next to
    the candidate item read through the same table."""
    rng = np.random.default_rng(seed)
    cand = 1 + _zipf(rng, 299, ROWS)
    lengths = rng.integers(1, HISTORY + 1, ROWS)  # Keras's masked mean of an empty history is 0/0
    hist = 1 + _zipf(rng, 299, (ROWS, HISTORY))
    hist[np.arange(HISTORY)[None, :] >= lengths[:, None]] = 0
    features = {"candidate": cand.astype("int32"), "history": hist.astype("int32")}
    c = keras.Input(shape=(), dtype="int32", name="candidate")
    h = keras.Input(shape=(HISTORY,), dtype="int32", name="history")
    items = keras.layers.Embedding(300, 8, mask_zero=True, name="item_table")
    pooled = keras.layers.GlobalAveragePooling1D(name="history_mean")(items(h))
    x = keras.layers.Concatenate()([items(c), pooled])
    model = keras.Model({"candidate": c, "history": h}, _head(x))
    return Style(model, _dataset(features, _labels(rng, cand, hist[:, 0])), _eval(features))


@keras.saving.register_keras_serializable(package="user_models")
class TwoTower(keras.Model):
    """A hand-written subclassed model: tables and MLP as attributes, ``call`` written by hand."""

    def __init__(self, num_users=150, num_items=250, dim=8, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_table = keras.layers.Embedding(num_users, dim, name="user_table")
        self.item_table = keras.layers.Embedding(num_items, dim, name="item_table")
        self.mlp = [keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16, activation="relu")]
        self.out = keras.layers.Dense(1, activation="sigmoid")

    def call(self, inputs):
        x = tf.concat([self.user_table(inputs["uid"]), self.item_table(inputs["iid"])], axis=-1)
        for layer in self.mlp:
            x = layer(x)
        return self.out(x)

    def get_config(self):
        return {**super().get_config(), "num_users": self.num_users, "num_items": self.num_items, "dim": self.dim}


def subclassed(seed=0) -> Style:
    rng = np.random.default_rng(seed)
    u, i = _zipf(rng, 150, ROWS), _zipf(rng, 250, ROWS)
    features = {"uid": u.astype("int32"), "iid": i.astype("int32")}
    model = TwoTower(num_users=150, num_items=250, dim=8)
    model(_eval(features, 2))
    return Style(model, _dataset(features, _labels(rng, u, i)), _eval(features))


def nested_functional(seed=0) -> Style:
    """A functional model calling a functional sub-model (the embedding tower) and a Sequential MLP."""
    rng = np.random.default_rng(seed)
    u, i = _zipf(rng, 150, ROWS), _zipf(rng, 250, ROWS)
    features = {"uid": u.astype("int32"), "iid": i.astype("int32")}
    tu = keras.Input(shape=(), dtype="int32", name="tower_uid")
    ti = keras.Input(shape=(), dtype="int32", name="tower_iid")
    tower = keras.Model([tu, ti], keras.layers.Concatenate()([keras.layers.Embedding(150, 8, name="users")(tu),
                                                              keras.layers.Embedding(250, 8, name="items")(ti)]),
                        name="embedding_tower")
    mlp = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")],
                           name="mlp")
    uid = keras.Input(shape=(), dtype="int32", name="uid")
    iid = keras.Input(shape=(), dtype="int32", name="iid")
    model = keras.Model({"uid": uid, "iid": iid}, mlp(tower([uid, iid])))
    return Style(model, _dataset(features, _labels(rng, u, i)), _eval(features))


@keras.saving.register_keras_serializable(package="user_models")
class DNN(keras.layers.Layer):
    """DeepCTR's ``DNN``: a custom layer holding its Dense layers in a list."""

    def __init__(self, hidden_units=(32, 16), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.dense_layers = [keras.layers.Dense(u, activation="relu") for u in self.hidden_units]

    def call(self, inputs):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


def deepctr_style(seed=0) -> Style:
    """DeepCTR's layout: ``[batch, 1]`` inputs, ``sparse_emb_<field>`` tables, ``Flatten``, a ``DNN``."""
    rng = np.random.default_rng(seed)
    sizes = {"C1": 200, "C2": 60, "C3": 12}
    cols = {f: _zipf(rng, v, ROWS) for f, v in sizes.items()}
    features = {f: c.reshape(-1, 1).astype("int32") for f, c in cols.items()}
    inputs = {f: keras.Input(shape=(1,), dtype="int32", name=f) for f in sizes}
    embs = [keras.layers.Flatten()(keras.layers.Embedding(v, 8, name=f"sparse_emb_{f}")(inputs[f]))
            for f, v in sizes.items()]
    x = DNN((32, 16), name="dnn")(keras.layers.Concatenate()(embs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prediction")(x))
    return Style(model, _dataset(features, _labels(rng, *cols.values())), _eval(features))


def tfrs_tutorial(seed=0) -> Style:
    """The TFRS "basic ranking" tutorial model, as written there (tf-keras only), registered so that
    its ``.keras`` file reloads (the two-line change the README documents)."""
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(seed)
    u, m = _zipf(rng, len(USERS), ROWS), _zipf(rng, len(MOVIES), ROWS)
    features = {"user_id": USERS[u], "movie_title": MOVIES[m]}
    ratings = (1 + (u + m) % 5).astype("float32")
    unique_user_ids, unique_movie_titles = USERS, MOVIES

    @keras.saving.register_keras_serializable(package="user_models")
    class RankingModel(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            embedding_dimension = 8
            self.user_embeddings = keras.Sequential([
                keras.layers.StringLookup(vocabulary=unique_user_ids, mask_token=None),
                keras.layers.Embedding(len(unique_user_ids) + 1, embedding_dimension)])
            self.movie_embeddings = keras.Sequential([
                keras.layers.StringLookup(vocabulary=unique_movie_titles, mask_token=None),
                keras.layers.Embedding(len(unique_movie_titles) + 1, embedding_dimension)])
            self.ratings = keras.Sequential([keras.layers.Dense(32, activation="relu"),
                                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])

        def call(self, inputs):
            user_id, movie_title = inputs
            user_embedding = self.user_embeddings(user_id)
            movie_embedding = self.movie_embeddings(movie_title)
            return self.ratings(tf.concat([user_embedding, movie_embedding], axis=1))

    @keras.saving.register_keras_serializable(package="user_models")
    class MovielensModel(tfrs.models.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.ranking_model = RankingModel()
            self.task = tfrs.tasks.Ranking(loss=keras.losses.MeanSquaredError(),
                                           metrics=[keras.metrics.RootMeanSquaredError()])

        def call(self, features):
            return self.ranking_model((features["user_id"], features["movie_title"]))

        def compute_loss(self, features, training=False):
            features = dict(features)
            labels = features.pop("user_rating")
            return self.task(labels=labels, predictions=self(features))

    model = MovielensModel()
    model(_eval(features, 2))
    data = tf.data.Dataset.from_tensor_slices({**features, "user_rating": ratings}).batch(BATCH)
    return Style(model, data, _eval(features), loss="tfrs", string_inputs=True)


STYLES = {
    "string_lookup": string_lookup,
    "integer_lookup": integer_lookup,
    "hashing": hashing,
    "own_names": own_names,
    "shared_table": shared_table,
    "masked_history": masked_history,
    "subclassed": subclassed,
    "nested_functional": nested_functional,
    "deepctr_style": deepctr_style,
    "tfrs_tutorial": tfrs_tutorial,
}
"""Builders of the model styles; ``tfrs_tutorial`` needs tf-keras (TFRS imports only there)."""

NEEDS_TF_KERAS = {"tfrs_tutorial"}
HAS_LEGACY = IS_LEGACY_KERAS
