"""Fit your own model's embeddings in a memory budget: popularity tiers chosen for you.

The same tutorial-style model as ``examples/your_own_model.py`` (raw string ids, a ``StringLookup`` and
an ``Embedding`` per feature inside the model, an MLP on top), trained as usual. Then one call,
``tfmec.mec.compress_to_budget``, turns every table into a ``TieredEmbedding`` whose bytes fit the
budget: the most used ids keep exact rows, the next ones PQ codes, the long tail a zero-byte hashed
code. Validation data picks the popularity exponent; a plain ``model.fit`` fine-tunes.

    python examples/memory_budget.py

Prints the tiers of each table, the AUC before and after, the bytes, and the SavedModel's parity.
"""
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfmec  # noqa: E402
from tfmec.backend import keras  # noqa: E402
from your_own_model import ROWS, build_model, movielens_like  # noqa: E402

RATIO = 32  # the budget: the float tables' bytes / 32


def main() -> int:
    keras.utils.set_random_seed(0)
    features, labels, users, movies = movielens_like()
    n_train, n_valid = int(0.8 * ROWS), int(0.9 * ROWS)

    def split(a, b):
        return tf.data.Dataset.from_tensor_slices(({k: v[a:b] for k, v in features.items()}, labels[a:b]))

    train = split(0, n_train).shuffle(n_train, seed=0).batch(256)
    valid, test = split(n_train, n_valid).batch(1024), split(n_valid, ROWS).batch(1024)

    model = build_model(users, movies)
    model.compile("adam", "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    model.fit(train, epochs=2, verbose=2)
    base_auc = model.evaluate(test, verbose=0, return_dict=True)["auc"]

    counts = tfmec.mec.count_ids(model, train.map(lambda x, y: x))  # through the model's own StringLookups
    full = tfmec.mec.memory_report(model)["embedding_bytes"]
    small, plan = tfmec.mec.compress_to_budget(model, counts, full // RATIO, validation_data=valid)
    print(plan.describe())  # the tiers of each table
    small.compile(keras.optimizers.Adam(2e-4), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    small.fit(train, validation_data=valid, epochs=1, verbose=2)
    auc = small.evaluate(test, verbose=0, return_dict=True)["auc"]
    memory = tfmec.mec.memory_report(small)
    print(f"test AUC {base_auc:.4f} -> {auc:.4f}; embeddings {full:,} -> {memory['embedding_bytes']:,} bytes "
          f"({memory['compression_ratio_embeddings']:.1f}x, budget {full // RATIO:,})")
    assert memory["embedding_bytes"] <= full // RATIO

    out = tempfile.mkdtemp(prefix="tfmec_budget_")
    sample = {k: v[:8] for k, v in features.items()}
    version = tfmec.export.saved_model(small, os.path.join(out, "serving"))  # serving_default takes raw strings
    served = tfmec.export.predict_saved_model(version, sample)
    print("SavedModel:", version, "max |diff|",
          float(np.abs(served.reshape(-1) - np.asarray(small(sample)).reshape(-1)).max()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
