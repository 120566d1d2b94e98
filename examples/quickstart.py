"""Quick start: load data, build a zoo model from its schema, train, evaluate, save and reload.

    python examples/quickstart.py                  # embedded synthetic data
    python examples/quickstart.py train.txt criteo # your own file and its format
"""
import sys

import numpy as np

import tfmec
from tfmec.backend import keras
from tfmec.evaluation import evaluate
from tfmec.training import compile_ctr, fit_early_stopping


def main(argv):
    if len(argv) >= 2:
        data = tfmec.data.load(argv[0], format=argv[1], seed=0, batch_size=512)
    else:
        data = tfmec.data.load("synthetic", rows=50_000, seed=0, batch_size=512)
    print(data.schema, "rows:", data.rows)

    # Any zoo model: LR, FM, DeepFM, DCNv2, PNN, GDCN, AutoInt. The embedding factory decides what
    # each field's table is (here a plain Keras Embedding; MEC plugs its quantised one in here).
    def factory(field, dim, name):
        return keras.layers.Embedding(field.vocab_size, dim, name=name)

    model = tfmec.models.DeepFM(data.schema, embedding_dim=16, embedding_factory=factory, seed=0)
    compile_ctr(model, learning_rate=2e-3)
    fit_early_stopping(model, data.train, data.valid, epochs=5, patience=1)
    print("test:", evaluate(model, data.test))

    model.save("/tmp/tfmec_quickstart.keras")
    reloaded = keras.models.load_model("/tmp/tfmec_quickstart.keras")
    x, _ = next(iter(data.test))
    diff = np.abs(np.asarray(model(x)) - np.asarray(reloaded(x))).max()
    print(f"reloaded model, max |difference| = {diff:.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
