"""Masks and sequences (issue 17, item 4): every tfmec embedding layer takes ``mask_zero`` and ids of any
shape (``[batch]``, ``[batch, 1]``, ``[batch, length]``) exactly as ``keras.layers.Embedding`` does.

Each layer is compared with a plain ``keras.layers.Embedding(mask_zero=True)`` holding the layer's
decoded rows (the layer called on ``arange(V)``): same outputs and masks, and the same answers from
masked layers downstream (pooling, a mean that reads the mask, attention, an LSTM). Run in both modes:
``pytest tests/test_layer_masks.py`` (Keras 3) and ``TF_USE_LEGACY_KERAS=1 pytest ...`` (tf-keras).
"""
import types

import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.layers import (
    HashedEmbedding,
    Int8Embedding,
    LowRankEmbedding,
    QuantizedEmbedding,
    SharedQuantizedEmbedding,
    SparseReadEmbedding,
)

V = 23  # ids of the field under test: [0, V), 0 is padding
KINDS = ["quantized", "shared", "int8", "hashed", "lowrank", "sparse"]
# [batch, length] histories with trailing padding (no all-padding row: a masked mean of nothing is NaN,
# for keras.layers.Embedding as well)
IDS = np.array([[5, 3, 9, 0, 0, 0], [7, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6], [22, 11, 0, 0, 0, 0]], "int32")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _make(kind, mask_zero=True, name="emb"):
    """``(layer, call kwargs)``: a tfmec embedding layer over ids ``[0, V)``."""
    if kind == "quantized":
        return QuantizedEmbedding(V, 2, 8, 3, seed=1, mask_zero=mask_zero, name=name), {}
    if kind == "shared":  # the second field: its rows sit at a non-zero offset of the shared table
        return SharedQuantizedEmbedding([7, V], 2, 8, 3, seed=1, mask_zero=mask_zero, name=name), {"field": 1}
    if kind == "int8":
        table = np.random.default_rng(1).normal(size=(V, 4))
        return Int8Embedding.from_table(table, mask_zero=mask_zero, name=name), {}
    if kind == "hashed":
        return HashedEmbedding(V, 11, 4, seed=1, mask_zero=mask_zero, name=name), {}
    if kind == "lowrank":
        return LowRankEmbedding(V, 6, 2, seed=1, mask_zero=mask_zero, name=name), {}
    if kind == "sparse":
        return SparseReadEmbedding(V, 5, mask_zero=mask_zero, name=name), {}
    raise AssertionError(kind)


def _plain_twin(layer, kwargs, mask_zero=True):
    """A ``keras.layers.Embedding`` holding ``layer``'s decoded table ``[V, d]`` (and the table)."""
    table = np.asarray(layer(np.arange(V, dtype="int32"), **kwargs))
    plain = keras.layers.Embedding(
        V, table.shape[1], mask_zero=mask_zero, embeddings_initializer=keras.initializers.Constant(table)
    )
    return plain, table


class MaskedMean(keras.layers.Layer):
    """``[batch, length, d]`` -> ``[batch, d]``: the mean over the positions of the incoming mask
    ``[batch, length]``; refuses to run without one (so a dropped mask fails loudly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            raise ValueError("MaskedMean: no mask arrived")
        w = tf.cast(mask, inputs.dtype)[..., None]
        return tf.reduce_sum(inputs * w, axis=1) / tf.reduce_sum(w, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None


def _heads(with_masked_mean=True):
    """Masked layers shared by the models under comparison (one set of weights)."""
    heads = dict(gap=keras.layers.GlobalAveragePooling1D(), lstm=keras.layers.LSTM(3), att=keras.layers.Attention())
    if with_masked_mean:
        heads["mean"] = MaskedMean()
    return heads


def _model(layer, kwargs, heads):
    """ids ``[batch, length]`` -> [masked average pooling, (masked mean,) LSTM state, pooled attention]."""
    inp = keras.Input(shape=(None,), dtype="int32")
    x = layer(inp, **kwargs)
    outputs = [heads["gap"](x), heads["lstm"](x), heads["gap"](heads["att"]([x, x]))]
    if "mean" in heads:
        outputs.append(heads["mean"](x))
    return keras.Model(inp, outputs)


def _numpy_all(outputs):
    return [np.asarray(o) for o in outputs]


def _mask_of(tensor):
    mask = getattr(tensor, "_keras_mask", None)
    return None if mask is None else np.asarray(mask)


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_and_masks_match_keras_embedding_for_every_id_shape(kind):
    layer, kw = _make(kind)
    plain, table = _plain_twin(layer, kw)
    assert layer.mask_zero is True and layer.supports_masking == plain.supports_masking
    for ids in (IDS[:, 0], IDS[:, :1], IDS):  # [batch], [batch, 1], [batch, length]
        out, ref = layer(ids, **kw), plain(ids)
        assert tuple(out.shape) == tuple(ref.shape) == ids.shape + (table.shape[1],)
        np.testing.assert_allclose(np.asarray(out), table[ids], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(layer.compute_mask(ids)), np.asarray(plain.compute_mask(ids)))
        np.testing.assert_array_equal(np.asarray(layer.compute_mask(ids)), ids != 0)
        np.testing.assert_array_equal(_mask_of(out), _mask_of(ref))  # the mask set on eager outputs
        assert _mask_of(out) is not None
    for shape in ((), (1,), (None,)):  # symbolic shapes as Keras's
        inp = keras.Input(shape=shape, dtype="int32")
        ours, theirs = layer(inp, **kw), plain(inp)
        assert tuple(tf.TensorShape(ours.shape).as_list()) == tuple(tf.TensorShape(theirs.shape).as_list())


@pytest.mark.parametrize("kind", KINDS)
def test_masked_pooling_attention_and_lstm_match_keras_embedding(kind):
    layer, kw = _make(kind)
    plain, _ = _plain_twin(layer, kw)
    heads = _heads()
    ours = _numpy_all(_model(layer, kw, heads)(IDS))
    theirs = _numpy_all(_model(plain, {}, heads)(IDS))
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # the padding rows would change the answer: the check above is not vacuous
    unmasked, unmasked_kw = _make(kind, mask_zero=False, name="unmasked")
    unmasked(IDS[:, 0], **unmasked_kw)  # built
    unmasked.set_weights(layer.get_weights())
    pooled = np.asarray(keras.layers.GlobalAveragePooling1D()(unmasked(IDS, **unmasked_kw)))
    assert np.abs(pooled - ours[0]).max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_prediction_of_a_row_does_not_depend_on_padding(kind):
    layer, kw = _make(kind)
    model = _model(layer, kw, _heads())
    row = [5, 3, 9]
    outs = []
    for length in (3, 4, 9):
        ids = np.zeros((2, length), "int32")
        ids[0, :3] = row
        ids[1, 0] = 7
        outs.append(_numpy_all(model(ids)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_keras_file_round_trip_keeps_mask_zero(kind, tmp_path):
    layer, kw = _make(kind)
    model = _model(layer, kw, _heads(with_masked_mean=False))
    before = _numpy_all(model(IDS))
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    loaded = again.get_layer("emb")
    assert type(loaded) is type(layer) and loaded.mask_zero is True and loaded.supports_masking
    for a, b in zip(before, _numpy_all(again(IDS))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.compute_mask(IDS)), IDS != 0)


@pytest.mark.parametrize("kind", KINDS)
def test_config_carries_mask_zero_and_old_configs_default_to_false(kind):
    layer, _ = _make(kind)
    config = layer.get_config()
    assert config["mask_zero"] is True
    assert type(layer).from_config(config).mask_zero is True
    old = {k: v for k, v in config.items() if k != "mask_zero"}  # a config saved before mask_zero existed
    restored = type(layer).from_config(old)
    assert restored.mask_zero is False and not restored.supports_masking
    assert restored.compute_mask(IDS) is None


@pytest.mark.parametrize("kind", KINDS)
def test_without_mask_zero_no_mask_and_padding_counts(kind):
    layer, kw = _make(kind, mask_zero=False)
    plain, _ = _plain_twin(layer, kw, mask_zero=False)
    assert layer.mask_zero is False and layer.get_config()["mask_zero"] is False
    assert layer.supports_masking == plain.supports_masking
    assert layer.compute_mask(IDS) is None and _mask_of(layer(IDS, **kw)) is None
    heads = _heads(with_masked_mean=False)
    for a, b in zip(_numpy_all(_model(layer, kw, heads)(IDS)), _numpy_all(_model(plain, {}, heads)(IDS))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the contrastive term of the PQ layers
# M = 2 sub-spaces of dim 1, K = 2 codewords [1, -0.2] each, one negative per row. A negative flips the code
# of one sub-space; for code (0, 0) = (1, 1) either flip has cosine +c with the positive, for code
# (1, 1) = (-0.2, -0.2) either flip has cosine -c (c = 0.8 / sqrt(2 * 1.04)). Id 0 gets code (0, 0), every
# other id (1, 1), so every row's loss is known in closed form whatever negatives are drawn.
_COS = 0.8 / np.sqrt(2 * 1.04)
_TAU = 0.5


def _row_loss(cos_negative):
    return np.logaddexp(1 / _TAU, cos_negative / _TAU) - 1 / _TAU


def _contrastive_layer(kind, mask_zero):
    codebooks = np.array([[[1.0], [-0.2]], [[1.0], [-0.2]]], "float32")  # [M, K, 1]
    common = dict(num_subspaces=2, num_codewords=2, subspace_dim=1, codebooks=codebooks, contrastive_weight=1.0,
                  num_negatives=1, contrastive_temperature=_TAU, seed=3, mask_zero=mask_zero)
    if kind == "quantized":
        codes = np.ones((V, 2), "int64")
        codes[0] = 0
        return QuantizedEmbedding(V, codes=codes, **common), {}
    codes = np.ones((7 + V, 2), "int64")
    codes[7] = 0  # id 0 of field 1
    return SharedQuantizedEmbedding([7, V], codes=codes, **common), {"field": 1}


@pytest.mark.parametrize("kind", ["quantized", "shared"])
def test_contrastive_loss_skips_padding_with_mask_zero(kind):
    masked, kw = _contrastive_layer(kind, mask_zero=True)
    counted = _row_loss(-_COS)  # every non-padding id
    padding = _row_loss(_COS)
    masked(IDS, training=True, **kw)  # [batch, length] ids: flattened for the loss
    np.testing.assert_allclose(float(masked.last_contrastive_loss), counted, rtol=1e-6)
    np.testing.assert_allclose(float(sum(masked.losses)), counted, rtol=1e-6)
    masked(np.zeros((2, 3), "int32"), training=True, **kw)  # all padding: nothing counts, no NaN
    assert float(masked.last_contrastive_loss) == 0.0
    unmasked, kw = _contrastive_layer(kind, mask_zero=False)
    unmasked(IDS, training=True, **kw)
    zeros = int((IDS == 0).sum())
    expected = (zeros * padding + (IDS.size - zeros) * counted) / IDS.size
    np.testing.assert_allclose(float(unmasked.last_contrastive_loss), expected, rtol=1e-6)
    assert abs(expected - counted) > 1e-3


@pytest.mark.parametrize("kind", ["quantized", "shared"])
def test_fit_on_padded_histories_with_contrastive_term_under_xla(kind):
    layer = QuantizedEmbedding(V, 2, 8, 3, seed=1, mask_zero=True, contrastive_weight=0.1)
    kw = {}
    if kind == "shared":
        layer = SharedQuantizedEmbedding([7, V], 2, 8, 3, seed=1, mask_zero=True, contrastive_weight=0.1)
        kw = {"field": 1}
    inp = keras.Input(shape=(None,), dtype="int32")
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(layer(inp, **kw)))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
    history = model.fit(IDS, np.ones((4, 1), "float32"), epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(np.asarray(layer.negatives_step)) == 4


# ---------------------------------------------------------------- factories copy the setting
def test_factories_take_mask_zero():
    rng = np.random.default_rng(0)
    codes, codebooks = rng.integers(0, 4, size=(V, 2)), rng.normal(size=(2, 4, 3)).astype("float32")
    field_codes = types.SimpleNamespace(codes=codes, codebooks=codebooks, projection=None)
    assert QuantizedEmbedding.from_codes(field_codes, mask_zero=True).mask_zero is True
    assert QuantizedEmbedding.from_codes(field_codes).mask_zero is False
    from tfmec.mec.codes import FieldCodes

    group = [FieldCodes("a", codes, codebooks), FieldCodes("b", codes[:5], codebooks)]
    assert SharedQuantizedEmbedding.from_codes(group, mask_zero=True).mask_zero is True
    assert Int8Embedding.from_table(rng.normal(size=(V, 4)), mask_zero=True).mask_zero is True

    source = keras.layers.Embedding(V, 4, mask_zero=True)
    source(np.arange(3))
    int8 = Int8Embedding.from_embedding(source)
    assert int8.mask_zero is True  # copied from the Embedding it replaces
    assert Int8Embedding.from_embedding(source, mask_zero=False).mask_zero is False
    np.testing.assert_array_equal(np.asarray(int8.compute_mask(IDS)), IDS != 0)
    u_k, mu = np.eye(4)[:, :2], np.zeros(4)
    assert LowRankEmbedding.from_embedding(source, u_k, mu).mask_zero is True
    assert LowRankEmbedding.from_embedding(source, u_k, mu, mask_zero=False).mask_zero is False
    plain = keras.layers.Embedding(V, 4)
    plain(np.arange(3))
    assert Int8Embedding.from_embedding(plain).mask_zero is False
    assert LowRankEmbedding.from_embedding(plain, u_k, mu).mask_zero is False
