"""Tests of tfmec.layers: shapes, NumPy references, config round trips (both Keras modes)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmec.backend import keras
from tfmec.layers import (
    MLP,
    CrossNetV2,
    FlattenFields,
    FMInteraction,
    GatedCrossNet,
    InnerProduct,
    L2Penalty,
    LinearTerms,
    NumericEmbedding,
    SelfAttentionInteraction,
    StackFields,
    mlp_block,
    pair_indices,
)

B, F, D = 5, 4, 3
RNG = np.random.default_rng(0)


def _emb(batch=B, fields=F, dim=D):
    return RNG.normal(size=(batch, fields, dim)).astype("float32")


def _np(x):
    return np.asarray(x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _roundtrip(layer, inputs):
    """from_config(get_config()) gives a layer that, with the same weights, computes the same."""
    out = _np(layer(inputs))
    clone = layer.__class__.from_config(layer.get_config())
    clone(inputs)  # build
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(clone(inputs)), out, rtol=1e-6, atol=1e-6)
    assert clone.get_config() == layer.get_config()
    return out


def test_numeric_embedding():
    layer = NumericEmbedding(4, seed=1)
    x = RNG.normal(size=(B,)).astype("float32")
    out = _roundtrip(layer, x)
    assert out.shape == (B, 4)
    v = _np(layer.get_weights()[0])
    np.testing.assert_allclose(out, x[:, None] * v[None, :], rtol=1e-6)
    # [batch, 1] input too
    np.testing.assert_allclose(_np(layer(x[:, None])), out, rtol=1e-6)
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        NumericEmbedding(0)


def test_stack_and_flatten_fields():
    parts = [RNG.normal(size=(B, D)).astype("float32") for _ in range(F)]
    stacked = _np(StackFields()(parts))
    assert stacked.shape == (B, F, D)
    np.testing.assert_array_equal(stacked[:, 2], parts[2])
    scalars = [RNG.normal(size=(B,)).astype("float32") for _ in range(3)]
    assert _np(StackFields()(scalars)).shape == (B, 3)
    flat = _np(FlattenFields()(stacked))
    np.testing.assert_array_equal(flat, stacked.reshape(B, F * D))
    assert StackFields().compute_output_shape([(None, D)] * F) == (None, F, D)
    assert FlattenFields().compute_output_shape((None, F, D)) == (None, F * D)


def test_linear_terms():
    layer = LinearTerms()
    parts = [RNG.normal(size=(B, 1)).astype("float32") for _ in range(3)]
    layer(parts)
    layer.set_weights([np.array([0.25], "float32")])
    out = _roundtrip(layer, parts)
    assert out.shape == (B, 1)
    np.testing.assert_allclose(out, sum(parts) + 0.25, rtol=1e-6)


def test_fm_interaction_matches_pairwise_sum():
    e = _emb()
    out = _roundtrip(FMInteraction(), e)
    assert out.shape == (B, 1)
    ref = sum((e[:, i] * e[:, j]).sum(-1) for i in range(F) for j in range(i + 1, F))
    np.testing.assert_allclose(out[:, 0], ref, rtol=1e-5, atol=1e-5)


def test_inner_product():
    e = _emb()
    out = _roundtrip(InnerProduct(), e)
    assert out.shape == (B, F * (F - 1) // 2)
    rows, cols = pair_indices(F)
    assert list(zip(rows, cols))[:3] == [(0, 1), (0, 2), (0, 3)]
    ref = np.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in zip(rows, cols)], axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # FM = sum of the inner products
    np.testing.assert_allclose(_np(FMInteraction()(e))[:, 0], ref.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [None, 2, [None, 3]])
def test_cross_net_v2(rank):
    x0 = RNG.normal(size=(B, 6)).astype("float32")
    layer = CrossNetV2(2, rank=rank, bias_initializer="random_normal", seed=3)
    out = _roundtrip(layer, x0)
    assert out.shape == (B, 6)
    w = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in layer.weights}
    x = x0
    ranks = rank if isinstance(rank, list) else [rank] * 2
    for layer_idx in range(2):
        if ranks[layer_idx] is None:
            xw = x @ w[f"kernel_{layer_idx}"]
        else:
            assert w[f"v_kernel_{layer_idx}"].shape == (6, ranks[layer_idx])
            xw = x @ w[f"v_kernel_{layer_idx}"] @ w[f"u_kernel_{layer_idx}"]
        x = x0 * (xw + w[f"bias_{layer_idx}"]) + x
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


def test_gated_cross_net():
    x0 = RNG.normal(size=(B, 6)).astype("float32")
    layer = GatedCrossNet(2, bias_initializer="random_normal", seed=4)
    out = _roundtrip(layer, x0)
    assert out.shape == (B, 6)
    w = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in layer.weights}
    assert not np.allclose(w["cross_kernel_0"], w["gate_kernel_0"])  # distinct seeds per weight
    x = x0
    for i in range(2):
        x = x0 * (x @ w[f"cross_kernel_{i}"] + w[f"bias_{i}"]) * _sigmoid(x @ w[f"gate_kernel_{i}"]) + x
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


def _attention_ref(e, w, heads, head_dim, use_residual, use_scale):
    def split(m):  # [B, F, H*h] -> [B, H, F, h]
        return m.reshape(m.shape[0], m.shape[1], heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = (split(e @ w[n]) for n in ("query_kernel", "key_kernel", "value_kernel"))
    logits = q @ k.transpose(0, 1, 3, 2)
    if use_scale:
        logits = logits / np.sqrt(head_dim)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    out = (a @ v).transpose(0, 2, 1, 3).reshape(e.shape[0], e.shape[1], heads * head_dim)
    if use_residual:
        out = out + e @ w["residual_kernel"]
    return np.maximum(out, 0)


@pytest.mark.parametrize("use_residual,use_scale", [(True, False), (False, True)])
def test_self_attention_interaction(use_residual, use_scale):
    e = _emb()
    layer = SelfAttentionInteraction(heads=2, head_dim=3, use_residual=use_residual, use_scale=use_scale, seed=5)
    out = _roundtrip(layer, e)
    assert out.shape == (B, F, 6)
    w = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in layer.weights}
    assert ("residual_kernel" in w) == use_residual
    np.testing.assert_allclose(out, _attention_ref(e, w, 2, 3, use_residual, use_scale), rtol=1e-5, atol=1e-5)


def test_l2_penalty_adds_loss_only_when_training():
    x = _emb()
    inp = keras.Input(shape=(F, D))
    model = keras.Model(inp, L2Penalty(0.1, name="pen")(inp))
    np.testing.assert_array_equal(_np(model(x)), x)
    model(x, training=True)
    losses = [float(v) for v in model.losses]
    assert len(losses) == 1
    np.testing.assert_allclose(losses[0], 0.1 * (x**2).sum() / B, rtol=1e-5)
    assert L2Penalty.from_config(L2Penalty(0.1).get_config()).l2 == 0.1
    with pytest.raises(ValueError, match="l2 must be >= 0, got -1.0"):
        L2Penalty(-1.0)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_block_is_plain_dense_layers(batch_norm):
    inp = keras.Input(shape=(7,))
    out = mlp_block(inp, (8, 4), dropout=0.1, batch_norm=batch_norm, name="dnn", seed=0)
    model = keras.Model(inp, out)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.name for d in dense] == ["dnn_dense_0", "dnn_dense_1"]
    assert all(type(d) is keras.layers.Dense for d in dense)
    assert _np(model(np.ones((B, 7), "float32"))).shape == (B, 4)
    if not batch_norm:
        x = RNG.normal(size=(B, 7)).astype("float32")
        (k0, b0), (k1, b1) = dense[0].get_weights(), dense[1].get_weights()
        ref = np.maximum(np.maximum(x @ k0 + b0, 0) @ k1 + b1, 0)
        np.testing.assert_allclose(_np(model(x)), ref, rtol=1e-5, atol=1e-5)


def test_mlp_recipe_names_are_unique():
    inp = keras.Input(shape=(7,))
    mlp = MLP((5,), name="tower")
    a, b = mlp(inp), mlp(inp)
    model = keras.Model(inp, [a, b])
    names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert sorted(names) == ["tower_1_dense_0", "tower_dense_0"]
    assert MLP(**mlp.get_config()).hidden_units == (5,)


def test_layers_save_and_load_in_a_model(tmp_path):
    inp = keras.Input(shape=(F, D))
    x = SelfAttentionInteraction(2, 2, use_scale=True, name="att")(inp)
    flat = FlattenFields(name="flat")(x)
    c = CrossNetV2(2, rank=3, name="cross")(flat)
    g = GatedCrossNet(1, name="gcross")(flat)
    ip = InnerProduct(name="ip")(inp)
    fm = FMInteraction(name="fm")(inp)
    out = LinearTerms(name="lin")([c, g, ip, fm])
    model = keras.Model(inp, out)
    e = _emb()
    path = str(tmp_path / "layers.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_np(loaded(e)), _np(model(e)), rtol=1e-6, atol=1e-6)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="FMInteraction"):
        FMInteraction()(tf.zeros((2, 3)))
    with pytest.raises(ValueError, match="CrossNetV2"):
        CrossNetV2(1)(tf.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        CrossNetV2(0)
    with pytest.raises(ValueError, match="one rank per layer"):
        CrossNetV2(2, rank=[3])
