"""Behaviour sequences: a click history that shares the item table, DIN, MEC, and serving with lists.

A small click log is written as CSV (``user, item, genres, history, clicked``), where ``history`` holds
the items the user clicked before, oldest first, and ``genres`` the item's genres separated by ``|``.
The schema says ``history`` is a multi-valued field that shares ``item``'s vocabulary and table (its
50 most recent known values, most recent first, 0-padded), and ``genres`` a multi-valued field of its
own. DIN attends over the history with the candidate item; MEC compresses the shared item table once
(its counts hold every occurrence, as candidate and in histories); the SavedModel takes the history as
strings ``[batch, n]`` padded with ``""``.

    python examples/sequences_din.py

The same from the command line: ``tfmec run --data clicks.csv --format csv --label clicked --list
'genres:|' --list history --share history=item --model din --method none,mec,mec+afm`` (and MIND's
``--format mind`` or MovieLens's ``--format movielens`` read their histories by themselves).
"""
import os
import tempfile

import numpy as np
import tensorflow as tf

import tfmec
from tfmec.backend import keras
from tfmec.data import Field, Schema

ROWS = 20_000


def write_clicks(path: str, seed: int = 0) -> None:
    """Items come in 10 topics of 50; a user clicks an item of a topic they clicked before more often."""
    rng = np.random.default_rng(seed)
    genres = ["news", "sports", "music", "film", "travel"]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user,item,genres,history,clicked\n")
        for _ in range(ROWS):
            history = rng.integers(0, 500, size=rng.integers(0, 12))
            item = int(rng.integers(0, 500))
            near = bool(np.any(history // 50 == item // 50))
            clicked = int(rng.random() < (0.6 if near else 0.1))
            tags = "|".join(rng.choice(genres, size=2, replace=False))
            fh.write(f"u{rng.integers(0, 300)},i{item},{tags},{' '.join(f'i{h}' for h in history)},{clicked}\n")


def main() -> int:
    keras.utils.set_random_seed(0)
    folder = tempfile.mkdtemp(prefix="tfmec_din_")
    path = os.path.join(folder, "clicks.csv")
    write_clicks(path)
    schema = Schema([Field("user"), Field("item"), Field("genres", max_length=3, separator="|"),
                     Field("history", max_length=50, shares="item")], label="clicked")
    data = tfmec.data.load(path, schema, format="csv", label="clicked", batch_size=256, seed=0, progress=False)
    print(data.schema["history"], "batches:", {k: tuple(v.shape) for k, v in next(iter(data.train))[0].items()})

    model = tfmec.models.DIN(data.schema, embedding_dim=16, seed=0)
    model.compile(keras.optimizers.Adam(2e-3), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    model.fit(data.train, validation_data=data.valid, epochs=3, verbose=0)
    auc = model.evaluate(data.test, verbose=0, return_dict=True)["auc"]

    codes = tfmec.mec.learn_codes(model, data.frequencies, num_subspaces=4, num_codewords=64, seed=0, progress=False)
    compressed = tfmec.mec.compress_embeddings(model, codes)
    compressed.compile(keras.optimizers.Adam(2e-4), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    compressed.fit(data.train, epochs=1, verbose=0)
    mec_auc = compressed.evaluate(data.test, verbose=0, return_dict=True)["auc"]
    base_bytes = tfmec.evaluation.embedding_bytes(model)
    mec_bytes = tfmec.evaluation.embedding_bytes(compressed)
    print(f"tables: {sorted(codes)} (history reads item's); DIN test AUC {auc:.4f}; MEC {mec_auc:.4f} at "
          f"{base_bytes / mec_bytes:.1f}x smaller embeddings ({base_bytes:,} -> {mec_bytes:,} bytes)")

    export_dir = tfmec.export.saved_model(compressed, os.path.join(folder, "serving"), data.encoder)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    histories = [["i3", "i17", "i250"], [], ["i499", "never-seen-item", "i12"]]
    out = serve(user=tf.constant(["u1", "u2", "nobody"]), item=tf.constant(["i15", "i40", "i11"]),
                genres=tf.constant(tfmec.export.pad_lists([["news"], ["music", "film"], []])),
                history=tf.constant(tfmec.export.pad_lists(histories)))["probability"].numpy().ravel()
    cells = np.empty(3, dtype=object)
    cells[:] = [" ".join(h) for h in histories]
    genres = np.empty(3, dtype=object)
    genres[:] = ["news", "music|film", ""]
    ids = data.encoder.encode({"user": np.asarray(["u1", "u2", "nobody"], dtype=object),
                               "item": np.asarray(["i15", "i40", "i11"], dtype=object),
                               "genres": genres, "history": cells})
    want = np.asarray(compressed(ids)).ravel()
    print("served probabilities", np.round(out, 4), "max |diff| to Keras", float(np.max(np.abs(out - want))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
