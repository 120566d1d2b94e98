"""Test helpers for tfmec layers (and for layers users write against tfmec).

:func:`run_layer_test` puts one layer class through the checks every tfmec layer must pass, under the
Keras that :mod:`tfmec.backend` selected (Keras 3, or tf-keras with ``TF_USE_LEGACY_KERAS=1``). It is
modelled on Keras's own ``run_layer_test`` (``keras/src/testing/test_case.py``) but needs no test-case
class: every failed check raises ``AssertionError`` naming the layer class and the check, so it works
under pytest, unittest or a plain script.

Example::

    import numpy as np
    from tfmec.layers import HashedEmbedding
    from tfmec.testing import run_layer_test

    ids = np.array([[3, 1, 0], [7, 0, 0]], "int32")
    report = run_layer_test(
        HashedEmbedding, dict(input_dim=20, num_buckets=7, output_dim=4, seed=1, mask_zero=True), ids,
        expected_output_shape=(None, 3, 4),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
        supports_masking=True,
        expected_mask=ids != 0,
    )
    assert "training_step" in report["checks"]

The checks, in order (each name is what :func:`run_layer_test` lists in ``report["checks"]``):

``registered``
    ``keras.saving.get_registered_name(layer_cls)`` names a registered class (``package>Name``, not the
    bare class name): ``.keras`` files can find the class again. Skipped (and reported) only when
    ``custom_objects`` carries the class, as it must for a class that is not registered.
``eager``
    the layer, called on ``input_data``, gives outputs of ``expected_output_shape`` (None matches any
    size) and ``expected_output_dtype``; the weight counts are the expected ones.
``losses``
    with ``expected_num_losses``: a call with ``training=True`` adds that many finite losses (the
    layer's ``add_loss`` terms, e.g. :class:`~tfmec.layers.L2Penalty` or a contrastive term).
``config``
    ``layer_cls.from_config(layer.get_config())`` gives the same config (tuples read as lists) and,
    holding the same weights, the same outputs; the ``keras.saving.serialize_keras_object`` /
    ``deserialize_keras_object`` round trip gives the same config too.
``symbolic``
    called on ``keras.Input`` tensors, the layer gives outputs whose shape equals the eager outputs'
    (batch dimension aside) and whose dtype equals theirs, with the same weight counts.
``compute_output_shape``
    where the layer computes shapes (a ``NotImplementedError`` skips it, reported), the shape it
    computes for the inputs' shapes (batch dimension None) equals the eager output shape, batch aside.
``mask``
    with ``supports_masking`` given: ``layer.supports_masking`` equals it and
    ``layer.compute_mask(inputs)`` equals ``expected_mask`` (None: no mask). With a mask, the mask of
    the symbolic call has the expected mask's shape (batch aside) and a boolean dtype.
``keras_file``
    a functional model of the layer, saved as ``.keras`` and loaded back (``custom_objects`` passed),
    gives the same outputs.
``training_step``
    one ``train_on_batch`` step (SGD) of a functional model of the layer, with the loss
    ``sum(out * r)`` over a fixed random ``r`` plus the layer's own losses, is finite and changes every
    trainable weight. Skipped (reported) only when the built layer has no trainable weight.
``mixed_precision``
    under the ``mixed_float16`` global policy (restored afterwards, even when a check fails) the layer
    builds and runs; every float weight is float32, every float output is float16 (the layer's compute
    dtype) in eager and symbolic calls alike, finite, and, holding the float32 layer's weights, close
    to the float32 outputs.

Returns ``{"checks": [names of the checks run], "skipped": {name: reason}}``, so a test can insist that
a check it expects did run.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf

from tfmec.backend import keras

__all__ = ["run_layer_test", "MIXED_PRECISION_POLICY"]

MIXED_PRECISION_POLICY = "mixed_float16"


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    *,
    call_kwargs=None,
    expected_output_shape=None,
    expected_output_dtype=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_losses=None,
    supports_masking=None,
    expected_mask=None,
    run_training_step=True,
    run_mixed_precision=True,
    run_saving=True,
    custom_objects=None,
    atol=1e-6,
    rtol=1e-6,
    mixed_precision_tolerance=2e-2,
) -> dict:
    """Runs the checks of the module docstring on ``layer_cls(**init_kwargs)``.

    Args:
        layer_cls: the layer class (a subclass of ``keras.layers.Layer``).
        init_kwargs: constructor arguments (NumPy arrays allowed for arguments that are not part of the
            config; the checks copy weights, not initial values). No ``dtype``: the mixed-precision
            check sets the global policy itself.
        input_data: the layer's input, one NumPy array (or tensor), a list of them (a multi-input
            layer: ``layer([a, b])``) or a dict of them (passed as one nested input, as a functional
            model passes a dict of ``keras.Input``). Integer arrays are ids; the first dimension is the
            batch.
        call_kwargs: other arguments of every call (e.g. ``{"field": 1}``); no ``training``.
        expected_output_shape: the output shape (a tuple; None entries match any size; several
            outputs: a list of tuples).
        expected_output_dtype: the output dtype under the float32 policy (a name; several outputs: a
            list of names).
        expected_num_trainable_weights, expected_num_non_trainable_weights: weight counts of the built
            layer (None: not checked).
        expected_num_losses: losses a ``training=True`` call adds (None: not checked).
        supports_masking: the expected ``layer.supports_masking`` (None: the mask checks are skipped).
        expected_mask: what ``compute_mask(inputs)`` returns: an array (compared exactly) or None.
        run_training_step, run_mixed_precision, run_saving: False skips that check (reported as
            skipped by the caller).
        custom_objects: classes that a ``from_config`` / ``.keras`` load must find (not needed for
            registered classes).
        atol, rtol: tolerance of the round-trip comparisons (same weights, same ops: normally exact).
        mixed_precision_tolerance: relative tolerance of the float16 outputs against the float32 ones
            (of the largest absolute float32 output).

    Returns:
        ``{"checks": [...], "skipped": {name: reason}}``.

    Raises:
        AssertionError: a check failed (the message names the layer class and the check).
    """
    init_kwargs = dict(init_kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    if "dtype" in init_kwargs:
        raise ValueError("run_layer_test: init_kwargs must not set dtype (the mixed-precision check sets the policy)")
    if "training" in call_kwargs:
        raise ValueError("run_layer_test: call_kwargs must not set training (the checks choose it)")
    if expected_mask is not None and supports_masking is not True:
        raise ValueError("run_layer_test: expected_mask needs supports_masking=True")
    who = getattr(layer_cls, "__name__", repr(layer_cls))
    report = {"checks": [], "skipped": {}}
    inputs = _to_tensors(input_data)

    def check(name, condition, message):
        if not condition:
            raise AssertionError(f"{who}: {name}: {message}")

    def passed(name):
        if name not in report["checks"]:
            report["checks"].append(name)

    def skipped(name, reason):
        report["skipped"][name] = reason

    def check_counts(name, layer):
        check(name, layer.built, "the layer is not built after a call")
        if expected_num_trainable_weights is not None:
            got = len(layer.trainable_weights)
            check(name, got == expected_num_trainable_weights,
                  f"{got} trainable weights {_names(layer.trainable_weights)}, expected "
                  f"{expected_num_trainable_weights}")
        if expected_num_non_trainable_weights is not None:
            got = len(layer.non_trainable_weights)
            check(name, got == expected_num_non_trainable_weights,
                  f"{got} non-trainable weights {_names(layer.non_trainable_weights)}, expected "
                  f"{expected_num_non_trainable_weights}")

    with keras.utils.custom_object_scope(custom_objects or {}):
        # ---------------------------------------------------------------- registered
        registered = keras.saving.get_registered_name(layer_cls)
        if custom_objects and any(obj is layer_cls for obj in custom_objects.values()):
            skipped("registered", "the class comes in custom_objects")
        else:
            check("registered", ">" in registered,
                  f"the class is not registered (registered name {registered!r}); decorate it with "
                  f"tfmec.backend.register or keras.saving.register_keras_serializable")
            passed("registered")

        # ---------------------------------------------------------------- eager
        layer = layer_cls(**init_kwargs)
        outputs = layer(inputs, **call_kwargs)
        eager = _flatten(outputs)
        check_counts("eager", layer)
        if expected_output_shape is not None:
            wanted = _expected_list(expected_output_shape, len(eager), shape=True)
            for i, (spec, out) in enumerate(zip(wanted, eager)):
                check("eager", _shape_matches(spec, out.shape),
                      f"output {i} has shape {tuple(out.shape)}, expected {tuple(spec)}")
        if expected_output_dtype is not None:
            wanted = _expected_list(expected_output_dtype, len(eager), shape=False)
            for i, (dtype, out) in enumerate(zip(wanted, eager)):
                check("eager", tf.as_dtype(out.dtype) == tf.as_dtype(dtype),
                      f"output {i} has dtype {tf.as_dtype(out.dtype).name}, expected {tf.as_dtype(dtype).name}")
        for i, out in enumerate(eager):
            if tf.as_dtype(out.dtype).is_floating:
                check("eager", bool(np.all(np.isfinite(_numpy(out)))), f"output {i} is not finite")
        reference = [_numpy(x) for x in eager]
        passed("eager")

        # ---------------------------------------------------------------- losses
        if expected_num_losses is not None:
            layer(inputs, training=True, **call_kwargs)
            losses = list(layer.losses)
            check("losses", len(losses) == expected_num_losses,
                  f"a training call added {len(losses)} losses, expected {expected_num_losses}")
            for loss in losses:
                check("losses", bool(np.all(np.isfinite(_numpy(loss)))), f"a loss is not finite: {_numpy(loss)}")
            passed("losses")

        # ---------------------------------------------------------------- config
        config = layer.get_config()
        clone = layer_cls.from_config(config)
        check("config", type(clone) is layer_cls, f"from_config built a {type(clone).__name__}")
        _check_configs_equal(check, "config", config, clone.get_config())
        clone(inputs, **call_kwargs)  # build, then take the original's weights
        shapes, clone_shapes = _weight_shapes(layer), _weight_shapes(clone)
        check("config", clone_shapes == shapes,
              f"the layer rebuilt from its config has weights {clone_shapes}, the original {shapes}")
        clone.set_weights(layer.get_weights())
        _check_outputs_equal(check, "config", reference, clone(inputs, **call_kwargs), atol, rtol,
                             "the layer rebuilt from its config, holding the same weights")
        serialized = keras.saving.serialize_keras_object(layer)
        revived = keras.saving.deserialize_keras_object(serialized)
        check("config", type(revived) is layer_cls,
              f"deserialize_keras_object built a {type(revived).__name__} from {serialized.get('class_name')!r}")
        _check_configs_equal(check, "config", config, revived.get_config())
        passed("config")

        # ---------------------------------------------------------------- symbolic
        symbolic_inputs = _keras_inputs(inputs)
        symbolic_layer = layer_cls(**init_kwargs)
        symbolic = _flatten(symbolic_layer(symbolic_inputs, **call_kwargs))
        check("symbolic", len(symbolic) == len(eager),
              f"{len(symbolic)} symbolic outputs, {len(eager)} eager ones")
        check_counts("symbolic", symbolic_layer)
        for i, (sym, out) in enumerate(zip(symbolic, eager)):
            check("symbolic", _dims(sym.shape)[1:] == _dims(out.shape)[1:],
                  f"output {i}: symbolic shape {_dims(sym.shape)}, eager shape {_dims(out.shape)} (batch aside)")
            check("symbolic", _dtype_name(sym.dtype) == _dtype_name(out.dtype),
                  f"output {i}: symbolic dtype {_dtype_name(sym.dtype)}, eager dtype {_dtype_name(out.dtype)}")
        passed("symbolic")

        # ---------------------------------------------------------------- compute_output_shape
        try:
            computed = layer.compute_output_shape(_input_shapes(inputs))
        except NotImplementedError as err:
            skipped("compute_output_shape", f"not implemented: {err}")
        else:
            computed = [computed] if len(eager) == 1 else list(computed)
            check("compute_output_shape", len(computed) == len(eager),
                  f"{len(computed)} computed shapes for {len(eager)} outputs")
            for i, (shape, out) in enumerate(zip(computed, eager)):
                check("compute_output_shape", _dims(shape)[1:] == _dims(out.shape)[1:],
                      f"output {i}: computed shape {_dims(shape)}, eager shape {_dims(out.shape)} (batch aside)")
            passed("compute_output_shape")

        # ---------------------------------------------------------------- mask
        if supports_masking is not None:
            check("mask", bool(layer.supports_masking) == bool(supports_masking),
                  f"supports_masking is {layer.supports_masking}, expected {supports_masking}")
            mask = layer.compute_mask(inputs, None)  # no incoming mask
            if expected_mask is None:
                check("mask", mask is None, f"compute_mask returned {mask}, expected None")
            else:
                expected = np.asarray(expected_mask)
                check("mask", mask is not None, "compute_mask returned None, expected a mask")
                got = _numpy(mask)
                check("mask", got.shape == expected.shape and np.array_equal(got, expected),
                      f"compute_mask returned {got.tolist()}, expected {expected.tolist()}")
                sym_mask = symbolic_layer.compute_mask(symbolic_inputs, None)
                check("mask", sym_mask is not None, "compute_mask of the symbolic inputs returned None")
                check("mask", _dims(sym_mask.shape)[1:] == list(expected.shape[1:]),
                      f"symbolic mask shape {_dims(sym_mask.shape)}, expected {list(expected.shape)} (batch aside)")
                check("mask", _dtype_name(sym_mask.dtype) == "bool",
                      f"symbolic mask dtype {_dtype_name(sym_mask.dtype)}, expected bool")
            passed("mask")

        # ---------------------------------------------------------------- keras_file
        if run_saving:
            model = _functional(layer_cls, init_kwargs, inputs, call_kwargs)
            before = _flatten(model(inputs))
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "layer.keras")
                model.save(path)
                loaded = keras.models.load_model(path, custom_objects=custom_objects)
            inner = [x for x in loaded.layers if isinstance(x, layer_cls)]
            check("keras_file", len(inner) == 1, f"the loaded model holds {len(inner)} {who} layers, expected 1")
            _check_outputs_equal(check, "keras_file", [_numpy(x) for x in before], loaded(inputs), atol, rtol,
                                 "the model loaded from its .keras file")
            passed("keras_file")
        else:
            skipped("keras_file", "run_saving=False")

        # ---------------------------------------------------------------- training_step
        if not run_training_step:
            skipped("training_step", "run_training_step=False")
        elif not layer.trainable_weights:
            skipped("training_step", "the layer has no trainable weights")
        else:
            _training_step(check, layer_cls, init_kwargs, inputs, call_kwargs, reference)
            passed("training_step")

        # ---------------------------------------------------------------- mixed_precision
        if run_mixed_precision:
            _mixed_precision(check, layer_cls, init_kwargs, inputs, call_kwargs, layer, reference,
                             mixed_precision_tolerance)
            passed("mixed_precision")
        else:
            skipped("mixed_precision", "run_mixed_precision=False")
    return report


# -------------------------------------------------------------------------------------------- checks
def _training_step(check, layer_cls, init_kwargs, inputs, call_kwargs, reference):
    model = _functional(layer_cls, init_kwargs, inputs, call_kwargs)
    layer = [x for x in model.layers if isinstance(x, layer_cls)][0]
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=ref.shape).astype("float32") for ref in reference]

    def loss(y_true, y_pred):  # d loss / d output = r: every output element gets a gradient
        return tf.reduce_sum(tf.cast(y_true, tf.float32) * tf.cast(y_pred, tf.float32))

    with tf.GradientTape() as tape:
        outputs = _flatten(model(inputs, training=True))
        total = tf.add_n([loss(r, y) for r, y in zip(targets, outputs)] + [tf.reduce_sum(x) for x in model.losses])
    for w, grad in zip(layer.trainable_weights, tape.gradient(total, layer.trainable_weights)):
        check("training_step", grad is not None, f"trainable weight {w.name!r} gets no gradient")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=[loss] * len(targets))
    before = [np.array(_numpy(w)) for w in layer.trainable_weights]
    value = model.train_on_batch(inputs, targets if len(targets) > 1 else targets[0])
    value = np.asarray(value[0] if isinstance(value, (list, tuple)) else value, dtype=np.float64)
    check("training_step", bool(np.all(np.isfinite(value))), f"the loss of the training step is {value}")
    for w, old in zip(layer.trainable_weights, before):
        new = _numpy(w)
        check("training_step", bool(np.all(np.isfinite(new))), f"weight {w.name!r} is not finite after the step")
        check("training_step", not np.array_equal(new, old), f"trainable weight {w.name!r} did not change in one step")


def _mixed_precision(check, layer_cls, init_kwargs, inputs, call_kwargs, float_layer, reference, tolerance):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICY)
    try:
        layer = layer_cls(**init_kwargs)
        compute = _dtype_name(layer.compute_dtype)
        check("mixed_precision", compute == "float16",
              f"under {MIXED_PRECISION_POLICY} the compute dtype is {compute}, expected float16")
        outputs = _flatten(layer(inputs, **call_kwargs))
        for w in layer.weights:
            dtype = tf.as_dtype(w.dtype)
            if dtype.is_floating:
                check("mixed_precision", dtype == tf.float32,
                      f"weight {w.name!r} is {dtype.name} under {MIXED_PRECISION_POLICY}, expected float32")
        symbolic = _flatten(layer_cls(**init_kwargs)(_keras_inputs(inputs), **call_kwargs))
        for i, (out, sym, ref) in enumerate(zip(outputs, symbolic, reference)):
            dtype = _dtype_name(out.dtype)
            if np.issubdtype(ref.dtype, np.floating):
                check("mixed_precision", dtype == "float16",
                      f"output {i} is {dtype} under {MIXED_PRECISION_POLICY}, expected float16")
            check("mixed_precision", _dtype_name(sym.dtype) == dtype,
                  f"output {i}: symbolic dtype {_dtype_name(sym.dtype)}, eager dtype {dtype}")
        layer.set_weights(float_layer.get_weights())
        for i, (out, ref) in enumerate(zip(_flatten(layer(inputs, **call_kwargs)), reference)):
            got = _numpy(out).astype(np.float64)
            check("mixed_precision", bool(np.all(np.isfinite(got))), f"output {i} is not finite")
            scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
            err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
            check("mixed_precision", err <= tolerance * scale,
                  f"output {i} differs from the float32 output by {err:.3g} (allowed {tolerance * scale:.3g})")
    finally:
        keras.mixed_precision.set_global_policy(previous)


# -------------------------------------------------------------------------------------------- helpers
def _to_tensors(data):
    if isinstance(data, dict):
        return {key: _to_tensors(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_to_tensors(value) for value in data]
    return tf.convert_to_tensor(data)


def _keras_inputs(inputs, name=None):
    """``keras.Input`` tensors of the inputs' shapes (batch dimension None) and dtypes (a dict's inputs
    named by their keys, as Keras wants for a model's dict of inputs)."""
    if isinstance(inputs, dict):
        return {key: _keras_inputs(value, name=str(key)) for key, value in inputs.items()}
    if isinstance(inputs, list):
        return [_keras_inputs(value) for value in inputs]
    return keras.Input(shape=tuple(inputs.shape[1:]), dtype=inputs.dtype.name, name=name)


def _input_shapes(inputs):
    if isinstance(inputs, dict):
        return {key: _input_shapes(value) for key, value in inputs.items()}
    if isinstance(inputs, list):
        return [_input_shapes(value) for value in inputs]
    return (None,) + tuple(inputs.shape[1:])


def _functional(layer_cls, init_kwargs, inputs, call_kwargs):
    symbolic = _keras_inputs(inputs)
    outputs = layer_cls(**init_kwargs)(symbolic, **call_kwargs)
    return keras.Model(symbolic, outputs)


def _flatten(outputs) -> list:
    return list(tf.nest.flatten(outputs))


def _numpy(x) -> np.ndarray:
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


def _dims(shape) -> list:
    return tf.TensorShape(shape).as_list()


def _dtype_name(dtype) -> str:
    return tf.as_dtype(dtype).name


def _weight_shapes(layer) -> list:
    return [(w.name, tuple(_dims(w.shape))) for w in layer.weights]


def _names(weights) -> list:
    return [w.name for w in weights]


def _shape_matches(expected, shape) -> bool:
    got = _dims(shape)
    expected = list(expected)
    return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))


def _expected_list(expected, n: int, shape: bool) -> list:
    """``expected`` as one entry per output (a single shape tuple / dtype for a single output)."""
    single = (isinstance(expected, tuple) or not isinstance(expected, list)) if shape else not isinstance(
        expected, (list, tuple))
    items = [expected] if single else list(expected)
    if len(items) != n:
        raise AssertionError(f"{n} outputs, but {len(items)} expected shapes/dtypes were given")
    return items


def _plain(value):
    """A config value with tuples as lists and NumPy scalars as Python numbers (for comparing)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _check_configs_equal(check, name, a, b):
    a, b = _plain(a), _plain(b)
    if a == b:
        return
    keys = sorted(set(a) | set(b)) if isinstance(a, dict) and isinstance(b, dict) else []
    diff = {key: (a.get(key, "<missing>"), b.get(key, "<missing>")) for key in keys if a.get(key) != b.get(key)}
    check(name, False, f"the config changed in a round trip: {diff or (a, b)}")


def _check_outputs_equal(check, name, reference, outputs, atol, rtol, what):
    outputs = [_numpy(x) for x in _flatten(outputs)]
    check(name, len(outputs) == len(reference), f"{what} gives {len(outputs)} outputs, expected {len(reference)}")
    for i, (got, ref) in enumerate(zip(outputs, reference)):
        check(name, got.shape == ref.shape, f"{what}: output {i} has shape {got.shape}, expected {ref.shape}")
        check(name, np.allclose(got, ref, atol=atol, rtol=rtol),
              f"{what}: output {i} differs by up to {float(np.max(np.abs(got.astype(np.float64) - ref))):.3g}")

