"""Compress your own model: a tutorial-style Keras model with its preprocessing inside.

The model below is written the way the Keras and TFRS tutorials write a MovieLens ranking model: raw
string ids in, a ``StringLookup`` and an ``Embedding`` per feature inside the model, an MLP on top. Nothing
in it knows about tfmec; the data is synthetic, in the MovieLens layout (user id, movie title, rating).

    python examples/your_own_model.py

Steps: train the model as usual; count how often each table row is looked up (through the model's own
StringLookups); learn the PQ codes (MEC stage 1); swap the tables (stage 2) and fine-tune with plain
``model.fit``; factor the MLP (AFM); save as ``.keras`` and reload; export a SavedModel that takes raw
strings, and ONNX (the string lookups move out of the ONNX graph into a vocabulary JSON beside it).
"""
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

import tfmec
from tfmec.backend import keras

ROWS = 20_000


def movielens_like(seed: int = 0):
    """Synthetic ratings in the MovieLens layout: ``user_id``, ``movie_title`` (strings) and a click
    label (rating >= 4), with popularity following a power law as in the real data."""
    rng = np.random.default_rng(seed)
    users = np.array([f"user_{i}" for i in range(2_000)])
    movies = np.array([f"movie_{i}" for i in range(3_000)])
    u = (rng.zipf(1.2, ROWS) - 1) % len(users)
    m = (rng.zipf(1.1, ROWS) - 1) % len(movies)
    taste = np.sin(u * 0.37) * np.cos(m * 0.11) + 0.3 * rng.standard_normal(ROWS)
    features = {"user_id": users[u], "movie_title": movies[m]}
    return features, (taste > 0).astype("float32"), users, movies


def build_model(users, movies):
    """The user's model: nothing tfmec-specific."""
    user_id = keras.Input(shape=(), dtype="string", name="user_id")
    movie_title = keras.Input(shape=(), dtype="string", name="movie_title")
    user_lookup = keras.layers.StringLookup(vocabulary=users, name="user_lookup")
    movie_lookup = keras.layers.StringLookup(vocabulary=movies, name="movie_lookup")
    x = keras.layers.Concatenate()([
        keras.layers.Embedding(len(users) + 1, 32, name="user_embedding")(user_lookup(user_id)),
        keras.layers.Embedding(len(movies) + 1, 32, name="movie_embedding")(movie_lookup(movie_title)),
    ])
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model({"user_id": user_id, "movie_title": movie_title}, out)


def main() -> int:
    keras.utils.set_random_seed(0)
    features, labels, users, movies = movielens_like()
    n_train = int(0.8 * ROWS)
    train = tf.data.Dataset.from_tensor_slices(({k: v[:n_train] for k, v in features.items()}, labels[:n_train]))
    test = tf.data.Dataset.from_tensor_slices(({k: v[n_train:] for k, v in features.items()}, labels[n_train:]))
    train, test = train.shuffle(n_train, seed=0).batch(256), test.batch(1024)

    model = build_model(users, movies)
    model.compile("adam", "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    model.fit(train, epochs=2, verbose=2)
    base_auc = model.evaluate(test, verbose=0, return_dict=True)["auc"]

    # 1. how often each row of each table is looked up, through the model's own StringLookups
    counts = tfmec.mec.count_ids(model, train.map(lambda x, y: x))
    print("tables:", {key: int(c.sum()) for key, c in counts.items()})  # {'user_embedding': ..., 'movie_embedding': ...}

    # 2. MEC stage 1 (codes) and stage 2 (the model with quantised tables), then plain fit
    codes = tfmec.mec.learn_codes(model, counts, num_subspaces=4, num_codewords=64, epochs=3)
    small = tfmec.mec.compress_embeddings(model, codes)
    small.compile(keras.optimizers.Adam(2e-4), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    small.fit(train, epochs=1, verbose=2)

    # 3. AFM on the MLP (Dense layers found wherever they sit), with one epoch of fine-tuning
    small, afm_report = tfmec.afm.compress(small, train.map(lambda x, y: x).take(20), energy=0.95,
                                           fine_tune={"train": train, "epochs": 1, "learning_rate": 2e-4})
    print(afm_report.summary())
    small.compile(keras.optimizers.Adam(2e-4), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    auc = small.evaluate(test, verbose=0, return_dict=True)["auc"]
    memory = tfmec.mec.memory_report(small)
    print(f"test AUC {base_auc:.4f} -> {auc:.4f}; embeddings {memory['original_embedding_bytes']:,} -> "
          f"{memory['embedding_bytes']:,} bytes ({memory['compression_ratio_embeddings']:.1f}x)")

    # 4. save and reload (any process that has imported tfmec), export for TF Serving and ONNX
    out = tempfile.mkdtemp(prefix="tfmec_your_model_")
    path = os.path.join(out, "small.keras")
    small.save(path)
    reloaded = keras.models.load_model(path)
    sample = {k: v[:8] for k, v in features.items()}
    assert np.array_equal(np.asarray(reloaded(sample)), np.asarray(small(sample)))

    version = tfmec.export.saved_model(small, os.path.join(out, "serving"))  # serving_default takes raw strings
    served = tfmec.export.predict_saved_model(version, sample)
    print("SavedModel:", version, "max |diff|", float(np.abs(served.reshape(-1) - np.asarray(small(sample)).reshape(-1)).max()))
    if tfmec.export.onnx_available():
        onnx_path = tfmec.export.onnx(small, os.path.join(out, "small.onnx"))
        y = tfmec.export.predict_onnx(onnx_path, sample)  # raw strings: looked up with the JSON beside the file
        print("ONNX:", onnx_path, "max |diff|", float(np.abs(y.reshape(-1) - np.asarray(small(sample)).reshape(-1)).max()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
