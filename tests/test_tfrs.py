"""TFRS (issue 9): QuantizedEmbedding and AFMDense inside a tfrs.models.Model with a Ranking task and
tfrs.layers.dcn.Cross; compress_embeddings / afm.compress / learn_codes accept it; export parity.

tensorflow-recommenders imports only under tf-keras (``TF_USE_LEGACY_KERAS=1``). The TFRS tests run in
the tf-keras run of the suite (CI runs the suite in both modes); in the Keras 3 run they are skipped,
and what Keras 3 users get instead (a clear error from ``tfmec.integrations.tfrs``) is tested. In
tf-keras mode a missing tensorflow-recommenders skips locally but FAILS under ``CI=true``.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

import tfmec
from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.layers import AFMDense, QuantizedEmbedding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tf_keras = pytest.mark.skipif(
    not IS_LEGACY_KERAS,
    reason="tensorflow-recommenders cannot import under Keras 3; these tests run in the tf-keras run of the "
           "suite (TF_USE_LEGACY_KERAS=1), which CI runs as well",
)


@pytest.fixture(scope="module")
def tfrs():
    """The tensorflow_recommenders module; missing: skip locally, fail loudly under CI=true."""
    try:
        return importlib.import_module("tensorflow_recommenders")
    except ImportError as err:
        msg = f"tensorflow-recommenders is not installed ({err}); pip install -e '.[test]'"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("!!! CI=true but " + msg + " -- the TFRS tests cannot run !!!", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def data():
    fields = [tfmec.data.Field("I1", tfmec.data.NUMERIC)]
    fields += [tfmec.data.Field(f"C{i}", tfmec.data.CATEGORICAL) for i in (3, 6, 8, 10)]
    schema = tfmec.data.Schema(fields, label="label")
    return tfmec.data.load("synthetic", schema=schema, rows=1500, batch_size=128, seed=0, progress=False)


def _features(data, rows=256):
    x, _ = next(iter(data.test.unbatch().batch(rows)))
    return {k: v.numpy() for k, v in x.items()}


def _compile(model):
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    return model


@needs_tf_keras
def test_tfrs_train_mec_afm_finetune_export(tfrs, data, tmp_path):
    from tfmec.integrations.tfrs import TowerRankingModel, dcn_tower

    keras.utils.set_random_seed(0)
    model = _compile(TowerRankingModel(dcn_tower(data.schema, 8, hidden_units=(32, 16), seed=0)))
    assert isinstance(model, tfrs.models.Model) and isinstance(model.task, tfrs.tasks.Ranking)
    crosses = [layer for layer in model.tower.layers if isinstance(layer, tfrs.layers.dcn.Cross)]
    assert len(crosses) == 2
    history = model.fit(data.train, epochs=1, verbose=0).history
    assert {"auc", "loss", "regularization_loss"} <= set(history)

    # stage 1 reads the tower's tables through the TFRS model
    fields = ["C8", "C10"]
    codes = tfmec.mec.learn_codes(model, data.frequencies, fields=fields, num_subspaces=2, num_codewords=16,
                                  epochs=2, beta=0.05, progress=False)
    for f in fields:
        assert codes[f].vocab_size == model.tower.get_layer(f"embedding_{f}").input_dim

    # stage 2: a new TowerRankingModel whose tower has QuantizedEmbedding tables; the rest keeps its weights
    mec = tfmec.mec.compress_embeddings(model, codes)
    assert type(mec) is TowerRankingModel and mec is not model and mec.tower is not model.tower
    for f in fields:
        layer = mec.tower.get_layer(f"embedding_{f}")
        assert isinstance(layer, QuantizedEmbedding) and layer.contrastive_weight == pytest.approx(0.05)
        assert isinstance(model.tower.get_layer(f"embedding_{f}"), keras.layers.Embedding)  # original untouched
    for cross in crosses:
        for before, after in zip(cross.get_weights(), mec.tower.get_layer(cross.name).get_weights()):
            np.testing.assert_array_equal(before, after)
    _compile(mec)
    books = {f: np.asarray(mec.tower.get_layer(f"embedding_{f}").codebooks) for f in fields}
    history = mec.fit(data.train, epochs=1, verbose=0).history
    assert history["regularization_loss"][-1] > 0  # the layers' contrastive term reached the TFRS loss
    assert all(not np.array_equal(books[f], mec.tower.get_layer(f"embedding_{f}").codebooks) for f in fields)

    # AFM: the tower's Dense layers become AFMDense; a callable fine_tune gets the TFRS model
    seen = []

    def fine_tune(ranking):
        seen.append(type(ranking))
        _compile(ranking).fit(data.train, epochs=1, verbose=0)
        return ranking

    small, report = tfmec.afm.compress(mec, data.train.take(4), rank=4, fine_tune=fine_tune)
    assert type(small) is TowerRankingModel and seen == [TowerRankingModel]
    assert set(report.ranks) == {"dnn_dense_0", "dnn_dense_1"}
    assert all(isinstance(small.tower.get_layer(n), AFMDense) for n in report.ranks)
    assert all(isinstance(small.tower.get_layer(f"embedding_{f}"), QuantizedEmbedding) for f in fields)
    assert isinstance(mec.tower.get_layer("dnn_dense_0"), keras.layers.Dense)  # input untouched

    # the compressed TFRS model trains and evaluates with its task, and its tower exports with parity
    _compile(small)
    metrics = small.evaluate(data.test, return_dict=True, verbose=0)
    assert 0.0 <= metrics["auc"] <= 1.0
    features = _features(data)
    expected = np.asarray(small.predict(features, verbose=0)).reshape(-1)
    np.testing.assert_array_equal(expected, np.asarray(small.tower.predict(features, verbose=0)).reshape(-1))
    path = tfmec.export.saved_model(small.tower, str(tmp_path / "tfrs"), data.encoder)
    served = tfmec.export.predict_saved_model(path, features, signature="ids").reshape(-1)
    assert np.max(np.abs(served - expected)) <= 1e-6


@needs_tf_keras
def test_tfrs_example_runs_with_parity(tfrs, tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        example = importlib.import_module("tfrs_ranking")
    finally:
        sys.path.pop(0)
    status = example.main(["--rows", "1500", "--fields", "4", "--epochs", "1", "--min-vocab", "30",
                           "--out", str(tmp_path / "saved")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "max |keras - saved model|" in printed
    assert os.path.isdir(tmp_path / "saved" / "1")


@pytest.mark.skipif(IS_LEGACY_KERAS, reason="checks what Keras 3 users get; the tf-keras run tests TFRS itself")
def test_keras3_gets_a_clear_error():
    sys.modules.pop("tfmec.integrations.tfrs", None)
    with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS=1"):
        importlib.import_module("tfmec.integrations.tfrs")


def test_subclassed_model_without_tower_is_compressed_as_it_is(data):
    """A subclassed model without the tower protocol (both modes): an unbuilt one gets a clear error that
    names the protocol; once called, MEC compresses it as it is (issue 17: no rewrite needed)."""
    from tfmec.layers import QuantizedEmbedding

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.table = keras.layers.Embedding(10, 4, name="embedding_C3")

        def call(self, x):
            return self.table(x["C3"])

    model = Subclassed()
    with pytest.raises(ValueError, match="tower"):
        tfmec.afm.compress(model, data.train.take(1), rank=2)
    x = {"C3": np.arange(10, dtype="int32")}
    model(x)
    codes = tfmec.mec.learn_codes(model, num_subspaces=2, num_codewords=4, epochs=0, progress=False)
    assert list(codes) == ["C3"]
    small = tfmec.mec.compress_embeddings(model, codes)
    assert small is not model and isinstance(small.table, QuantizedEmbedding)
    assert isinstance(model.table, keras.layers.Embedding)  # the original is untouched
    np.testing.assert_allclose(np.asarray(small(x)), codes["C3"].decode(), atol=1e-6)
