"""Every registered tfmec layer through :func:`tfmec.testing.run_layer_test` (issue 21, item 3).

The layers are found, not listed: every ``keras.layers.Layer`` subclass exported by :mod:`tfmec.layers`
and every class decorated with ``@register`` (or ``keras.saving.register_keras_serializable``) anywhere
under ``tfmec/`` (models aside). ``CASES`` holds the constructor arguments and inputs of each;
:func:`test_every_registered_layer_has_a_case` fails for a layer without one, so a new layer cannot
escape the harness. Run in both modes: ``pytest tests/test_layer_harness.py`` (Keras 3) and
``TF_USE_LEGACY_KERAS=1 pytest tests/test_layer_harness.py`` (tf-keras).
"""
import ast
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfmec
import tfmec.layers
from tfmec.backend import keras
from tfmec.layers.int8_embedding import pack_int4, quantize_int8
from tfmec.testing import MIXED_PRECISION_POLICY, run_layer_test

B = 4  # batch
IDS = np.array([[3, 1, 0], [7, 0, 0], [2, 9, 5], [0, 0, 0]], "int32")  # [B, L] ids, 0 is padding
RNG = np.random.default_rng(0)


def _floats(*shape):
    return RNG.normal(size=shape).astype("float32")


def _int8_table(rows, d, bits):
    q, step = quantize_int8(np.random.default_rng(1).normal(size=(rows, d)), bits=bits)
    return (pack_int4(q) if bits == 4 else q), step


_Q8, _S8 = _int8_table(12, 4, 8)
_Q4, _S4 = _int8_table(5, 5, 4)
_TIERS = [{"kind": "exact", "rows": 3},
          {"kind": "pq", "rows": 5, "num_subspaces": 2, "num_codewords": 4},
          {"kind": "hashed", "rows": 4, "num_subspaces": 4, "num_codewords": 4}]
_MASK = dict(supports_masking=True, expected_mask=IDS != 0)
_NO_MASK = dict(supports_masking=False, expected_mask=None)

# class name -> list of cases: (case id, init kwargs, input data, other run_layer_test arguments).
# Weight counts are written out (not measured): a layer that gains or loses a weight fails here.
CASES = {
    "NumericEmbedding": [
        ("batch", dict(output_dim=4, seed=1), _floats(B),
         dict(expected_output_shape=(B, 4), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
        ("batch_1", dict(output_dim=3), _floats(B, 1),
         dict(expected_output_shape=(B, 3), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0)),
    ],
    "StackFields": [
        ("vectors", {}, [_floats(B, 4), _floats(B, 4), _floats(B, 4)],
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
        ("scalars", {}, [_floats(B), _floats(B)],
         dict(expected_output_shape=(B, 2), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)),
    ],
    "FlattenFields": [
        ("fields", {}, _floats(B, 3, 4),
         dict(expected_output_shape=(B, 12), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "LinearTerms": [
        ("list", dict(bias_initializer="ones"), [_floats(B, 1), _floats(B, 1), _floats(B, 2)],
         dict(expected_output_shape=(B, 1), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
        ("tensor", {}, _floats(B, 3, 1),
         dict(expected_output_shape=(B, 1), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0)),
    ],
    "FMInteraction": [
        ("fields", {}, _floats(B, 3, 4),
         dict(expected_output_shape=(B, 1), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "InnerProduct": [
        ("fields", {}, _floats(B, 4, 3),
         dict(expected_output_shape=(B, 6), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "CrossNetV2": [
        ("mixed_ranks", dict(num_layers=2, rank=[None, 2], seed=1), _floats(B, 6),
         dict(expected_output_shape=(B, 6), expected_num_trainable_weights=5, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "GatedCrossNet": [
        ("two_layers", dict(num_layers=2, seed=1), _floats(B, 6),
         dict(expected_output_shape=(B, 6), expected_num_trainable_weights=6, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "SelfAttentionInteraction": [
        ("scaled", dict(heads=2, head_dim=3, use_scale=True, seed=1), _floats(B, 3, 4),
         dict(expected_output_shape=(B, 3, 6), expected_num_trainable_weights=4, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "L2Penalty": [
        ("penalty", dict(l2=0.1), _floats(B, 3, 4),
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              expected_num_losses=1, **_NO_MASK)),
    ],
    "SparseReadEmbedding": [
        ("masked", dict(input_dim=10, output_dim=4, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0,
              **_MASK)),
    ],
    "QuantizedEmbedding": [
        # bit-packed codes, projection, exact head rows and the contrastive term at once
        ("everything", dict(input_dim=10, num_subspaces=2, num_codewords=4, subspace_dim=2, projection=True, bits=2,
                            head_rows=2, contrastive_weight=0.1, num_negatives=2, seed=1, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=3, expected_num_non_trainable_weights=2,
              expected_num_losses=1, **_MASK)),
        ("plain_ids", dict(input_dim=10, num_subspaces=2, num_codewords=300, subspace_dim=3, seed=2),
         np.array([0, 4, 9, 12], "int64"),
         dict(expected_output_shape=(B, 6), expected_num_trainable_weights=1, expected_num_non_trainable_weights=1,
              **_NO_MASK)),
    ],
    "SharedQuantizedEmbedding": [
        ("second_field", dict(input_dims=[5, 10], num_subspaces=2, num_codewords=4, subspace_dim=2, seed=1,
                              contrastive_weight=0.1, num_negatives=2, field_names=["a", "b"], mask_zero=True), IDS,
         dict(call_kwargs={"field": 1}, expected_output_shape=(B, 3, 4), expected_num_trainable_weights=1,
              expected_num_non_trainable_weights=2, expected_num_losses=1, **_MASK)),
    ],
    "TieredEmbedding": [
        ("three_tiers", dict(input_dim=12, output_dim=4, tiers=_TIERS, seed=1, contrastive_weight=0.1,
                             num_negatives=2, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=1, expected_num_non_trainable_weights=2,
              expected_num_losses=1, **_MASK)),
    ],
    "AFMDense": [
        ("sequence", dict(units=3, rank=2, activation="tanh", seed=1), _floats(B, 2, 5),
         dict(expected_output_shape=(B, 2, 3), expected_num_trainable_weights=4, expected_num_non_trainable_weights=0,
              supports_masking=True, expected_mask=None)),
    ],
    "LowRankEmbedding": [
        ("masked", dict(input_dim=10, output_dim=4, rank=2, seed=1, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=3, expected_num_non_trainable_weights=0,
              **_MASK)),
    ],
    "Int8Embedding": [
        ("int8", dict(input_dim=12, output_dim=4, embeddings=_Q8, scales=_S8, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=0, expected_num_non_trainable_weights=2,
              **_MASK)),
        ("int4_hashed", dict(input_dim=12, output_dim=5, bits=4, num_buckets=5, salt=3, embeddings=_Q4, scales=_S4),
         IDS, dict(expected_output_shape=(B, 3, 5), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=2, **_NO_MASK)),
    ],
    "HashedEmbedding": [
        ("masked", dict(input_dim=20, num_buckets=7, output_dim=4, seed=1, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=1, expected_num_non_trainable_weights=0,
              **_MASK)),
    ],
    "QREmbedding": [
        ("mul", dict(input_dim=20, output_dim=4, num_buckets=5, seed=1, mask_zero=True), IDS,
         dict(expected_output_shape=(B, 3, 4), expected_num_trainable_weights=2, expected_num_non_trainable_weights=0,
              **_MASK)),
        ("add", dict(input_dim=20, output_dim=4, num_buckets=6, combiner="add", seed=1), IDS[:, 0],
         dict(expected_output_shape=(B, 4), expected_num_trainable_weights=2, expected_num_non_trainable_weights=0)),
    ],
    "MaskedMeanPooling": [
        ("rows", {}, [IDS, _floats(B, 3, 4)],
         dict(expected_output_shape=(B, 4), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
    "TargetAttentionInputs": [
        ("history", {}, [_floats(B, 3, 4), _floats(B, 4)],
         dict(expected_output_shape=(B, 3, 16), expected_num_trainable_weights=0,
              expected_num_non_trainable_weights=0, **_NO_MASK)),
    ],
    "MaskedWeightedSum": [
        ("rows", {}, [IDS, _floats(B, 3, 1), _floats(B, 3, 4)],
         dict(expected_output_shape=(B, 4), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
              **_NO_MASK)),
    ],
}


def _decorated_classes() -> set:
    """``(module, class name)`` of every class under tfmec/ decorated with ``register`` or
    ``register_keras_serializable`` (read from the source, so a module nobody imported counts too)."""
    root = Path(tfmec.__file__).parent
    found = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module = ".".join(("tfmec",) + path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name in ("register", "register_keras_serializable"):
                    found.add((module.removesuffix(".__init__"), node.name))
    return found


def registered_layers() -> dict:
    """Class name -> class of every registered tfmec layer (models excluded)."""
    classes = {obj for obj in vars(tfmec.layers).values() if inspect.isclass(obj)}
    for module, name in _decorated_classes():
        classes.add(getattr(importlib.import_module(module), name))
    layers = {cls.__name__: cls for cls in classes
              if issubclass(cls, keras.layers.Layer) and not issubclass(cls, keras.Model)}
    assert len(layers) == len({cls for cls in layers.values()}), "two layer classes share a name"
    return layers


LAYERS = registered_layers()
PARAMS = [pytest.param(name, case, id=f"{name}-{case[0]}") for name in sorted(CASES) for case in CASES[name]]


def test_every_registered_layer_has_a_case():
    missing = sorted(set(LAYERS) - set(CASES))
    assert not missing, f"registered layers without a case in tests/test_layer_harness.py CASES: {missing}"
    stale = sorted(set(CASES) - set(LAYERS))
    assert not stale, f"CASES names classes that are not registered tfmec layers: {stale}"
    assert len(LAYERS) >= 22  # the enumeration itself still finds the layers


def test_the_enumeration_reads_decorators_outside_tfmec_layers():
    decorated = _decorated_classes()
    assert ("tfmec.mec.model", "MECModel") in decorated  # a model: found, then left out as one
    assert ("tfmec.layers.pooling", "MaskedWeightedSum") in decorated
    assert "MECModel" not in LAYERS and "LazyAdam" not in LAYERS


@pytest.mark.parametrize("name, case", PARAMS)
def test_layer(name, case):
    _, init_kwargs, data, kwargs = case
    keras.utils.set_random_seed(0)
    assert keras.saving.get_registered_name(LAYERS[name]) == f"tfmec>{name}"
    report = run_layer_test(LAYERS[name], init_kwargs, data, **kwargs)
    expected = {"registered", "eager", "config", "symbolic", "compute_output_shape", "mask", "keras_file",
                "training_step", "mixed_precision"}
    if "supports_masking" not in kwargs:
        expected.discard("mask")
    if "expected_num_losses" in kwargs:
        expected.add("losses")
    if kwargs["expected_num_trainable_weights"] == 0:  # nothing to train: the one skip allowed
        expected.discard("training_step")
        assert report["skipped"] == {"training_step": "the layer has no trainable weights"}
    else:
        assert report["skipped"] == {}
    assert set(report["checks"]) == expected
    assert keras.mixed_precision.global_policy().name == "float32"


# ------------------------------------------------------------------ the harness catches broken layers
class _Broken(keras.layers.Layer):
    """A correct dense-ish layer, then broken one way per subclass below."""

    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units))
        self.built = True

    def call(self, inputs):
        return tf.matmul(tf.cast(inputs, self.compute_dtype), tf.cast(self.kernel, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class _LosesConfig(_Broken):
    def get_config(self):
        return keras.layers.Layer.get_config(self)  # units forgotten: from_config gets the default


class _Float32Always(_Broken):
    def call(self, inputs):
        return tf.matmul(tf.cast(inputs, tf.float32), tf.cast(self.kernel, tf.float32))  # ignores the policy


class _Frozen(_Broken):
    def call(self, inputs):
        return tf.matmul(tf.cast(inputs, self.compute_dtype), tf.stop_gradient(tf.cast(self.kernel, self.compute_dtype)))


class _WrongShape(_Broken):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units + 1,)


def _run_broken(cls, **kwargs):
    objects = {cls.__name__: cls}
    run_layer_test(cls, {"units": 3}, _floats(B, 5), custom_objects=objects, **kwargs)


def test_the_harness_passes_the_correct_layer():
    report = run_layer_test(_Broken, {"units": 3}, _floats(B, 5), custom_objects={"_Broken": _Broken},
                            expected_output_shape=(None, 3), expected_num_trainable_weights=1)
    assert report["skipped"] == {"registered": "the class comes in custom_objects"}


@pytest.mark.parametrize("cls, kwargs, message", [
    (_LosesConfig, {}, r"_LosesConfig: config: the layer rebuilt from its config has weights .*\(5, 2\)"),
    (_Float32Always, {}, r"_Float32Always: mixed_precision: output 0 is float32"),
    (_Frozen, {}, r"_Frozen: training_step: trainable weight .*kernel.* gets no gradient"),
    # Keras 3 computes the symbolic shape with compute_output_shape, tf-keras traces the call
    (_WrongShape, {}, r"_WrongShape: (symbolic|compute_output_shape): output 0: \w+ shape \[None, 4\]"),
    (_Broken, {"expected_num_trainable_weights": 2}, r"_Broken: eager: 1 trainable weights"),
    (_Broken, {"expected_output_shape": (None, 4)}, r"_Broken: eager: output 0 has shape \(4, 3\)"),
])
def test_the_harness_fails_a_broken_layer(cls, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        _run_broken(cls, **kwargs)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after a failure too


def test_an_unregistered_layer_fails_without_custom_objects():
    with pytest.raises(AssertionError, match=r"_Broken: registered: the class is not registered"):
        run_layer_test(_Broken, {"units": 3}, _floats(B, 5))


@keras.saving.register_keras_serializable(package="tfmec_harness_test")  # not "tfmec": not a tfmec layer
class _DictSum(keras.layers.Layer):
    def call(self, inputs):
        return tf.cast(inputs["a"], self.compute_dtype) + 2.0 * tf.cast(inputs["b"], self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape["a"]


def test_a_registered_layer_with_a_dict_input():
    report = run_layer_test(_DictSum, {}, {"a": _floats(B, 3), "b": _floats(B, 3)}, expected_output_shape=(B, 3),
                            expected_num_trainable_weights=0)
    assert "mixed_precision" in report["checks"] and "keras_file" in report["checks"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must not set dtype"):
        run_layer_test(_Broken, {"units": 3, "dtype": MIXED_PRECISION_POLICY}, _floats(B, 5))
    with pytest.raises(ValueError, match="expected_mask needs supports_masking=True"):
        run_layer_test(_Broken, {"units": 3}, _floats(B, 5), expected_mask=np.ones(B, bool))
