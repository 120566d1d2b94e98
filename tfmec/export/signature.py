"""The model's own inputs as serving inputs: names, specs, the structure the model is called with,
and the shape checks every signature runs before the model.

A Keras model declares its inputs with ``keras.Input``: any structure (a dict, a list, one tensor),
any shape (``[batch]``, ``[batch, 1]``, ``[batch, length]``), any dtype (int ids, ``tf.string`` raw
values, floats). :func:`input_specs` turns them into ``{name: tf.TensorSpec([None, *rest], dtype)}``
(the name is the dict key for a model built on a dict of inputs, else the input layer's name; the
batch dimension is None, the rest as declared); :func:`model_caller` calls the model with named
tensors in the structure it was built with.

TF Serving feeds a request's tensors to the graph without comparing their shapes with the
signature's, so a ``[n, 1]`` tensor sent to a ``[batch]`` input would run (and broadcast, or answer
fewer rows). :func:`enforce_shapes` makes the signature refuse it in-graph: every input's runtime
shape must match its spec (rank and every declared dimension) and all inputs must have the same
batch size, or the call fails with an ``InvalidArgumentError`` naming the input. The check works on
the shape rendered as a string (``"4,20"``) because TensorFlow folds numeric shape checks away using
the signature's declared shapes. :func:`check_input_arrays` is the same check in NumPy, for callers
that want a ``ValueError`` before calling.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export


def input_name(tensor) -> str:
    """The name of a Keras input tensor (its input layer's name, without ``:0``)."""
    return str(tensor.name).split(":")[0]


SIGNATURE_ATTR = "_tfmec_input_signature"
"""Where :func:`declare_inputs` keeps the input signature of a model that declares none."""


@tfmec_export("tfmec.export.declare_inputs")
def declare_inputs(model, signature) -> dict:
    """Tells export what a model without declared inputs (a subclassed model) takes.

    Args:
        model: the Keras model (functional models declare their inputs already).
        signature: ``{name: tf.TensorSpec}`` (batch dimension first), or a sample batch
            ``{name: array[batch, ...]}`` whose shapes (batch dimension freed) and dtypes are used.
            The model is called with a dict of these names.
    Returns:
        ``{name: tf.TensorSpec([None, ...], dtype, name=name)}``, also recorded on ``model``.
    """
    if not isinstance(signature, dict) or not signature:
        raise ValueError("input_signature must be a non-empty {name: tf.TensorSpec or sample array} dict")
    specs = {}
    for name, value in signature.items():
        if isinstance(value, tf.TensorSpec):
            shape = list(value.shape)
            dtype = value.dtype
        else:
            array = np.asarray(value)
            if array.ndim == 0:
                raise ValueError(f"input_signature: sample {name!r} has no batch dimension")
            shape, dtype = list(array.shape), tf.as_dtype(array.dtype if array.dtype.kind not in "OUS" else tf.string)
        specs[str(name)] = tf.TensorSpec([None, *shape[1:]], dtype, name=str(name))
    object.__setattr__(model, SIGNATURE_ATTR, specs)
    return specs


def declared_signature(model) -> dict | None:
    """The signature recorded by :func:`declare_inputs`, else the one tf-keras recorded at the model's
    first call (a dict of ``tf.TensorSpec``), else None."""
    specs = getattr(model, SIGNATURE_ATTR, None)
    if specs:
        return specs
    saved = getattr(model, "_saved_model_inputs_spec", None)  # tf-keras: set at the first call
    if isinstance(saved, dict) and saved and all(isinstance(v, tf.TensorSpec) for v in saved.values()):
        return {str(k): tf.TensorSpec([None, *list(v.shape)[1:]], v.dtype, name=str(k)) for k, v in saved.items()}
    return None


def model_input_tensors(model) -> list:
    """The model's input tensors (``model.inputs``); ``ValueError`` for a model without declared inputs."""
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise ValueError(f"export needs a model with declared inputs (a functional keras.Model(inputs, outputs) or a "
                         f"Sequential model starting with keras.Input); {type(model).__name__} "
                         f"{getattr(model, 'name', '')!r} has none: pass input_signature={{name: "
                         f"tf.TensorSpec([None, ...], dtype)}} or a sample batch {{name: array}} to the export")
    return inputs


def _input_structure(model):
    """The nested structure of input tensors the model was built with (dict, list or one tensor), or None."""
    for attr in ("_inputs_struct", "_nested_inputs"):  # Keras 3, tf-keras
        struct = getattr(model, attr, None)
        if struct is not None:
            return struct
    return None


def named_inputs(model) -> list:
    """``[(name, keras_tensor)]`` in ``model.inputs`` order; names are the dict keys of a model built on a
    flat dict of inputs (what ``model.predict`` takes), else the input layers' names."""
    tensors = model_input_tensors(model)
    struct = _input_structure(model)
    key_of = {}
    if isinstance(struct, dict):
        key_of = {id(t): str(k) for k, t in struct.items() if not isinstance(t, (dict, list, tuple))}
    out = [(key_of.get(id(t), input_name(t)), t) for t in tensors]
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"the model has several inputs named {dup}; give each keras.Input a unique name=")
    return out


def _tensor_spec(name: str, tensor) -> tf.TensorSpec:
    if getattr(tensor, "sparse", False) or getattr(tensor, "ragged", False) or not isinstance(
            getattr(tensor, "type_spec", tf.TensorSpec(None)), tf.TensorSpec):
        raise ValueError(f"input {name!r} is sparse or ragged; export takes dense inputs (pad lists of ids to a "
                         f"fixed length, e.g. [batch, length] with 0 as padding)")
    shape = tuple(tensor.shape)
    if len(shape) == 0:
        raise ValueError(f"input {name!r} has no batch dimension (shape ()); declare it with keras.Input(shape=...)")
    return tf.TensorSpec([None, *shape[1:]], tf.as_dtype(tensor.dtype), name=name)


def has_declared_inputs(model) -> bool:
    try:
        return bool(list(model.inputs or []))
    except (AttributeError, ValueError):
        return False


@tfmec_export("tfmec.export.input_specs")
def input_specs(model) -> dict:
    """``{name: tf.TensorSpec([None, *declared], dtype, name=name)}`` of the model's inputs, in
    ``model.inputs`` order (see :func:`named_inputs` for the names); for a model that declares none,
    the signature given with :func:`declare_inputs` (or recorded by tf-keras at its first call)."""
    if not has_declared_inputs(model):
        declared = declared_signature(model)
        if declared:
            return dict(declared)
    return {name: _tensor_spec(name, t) for name, t in named_inputs(model)}


def _unwrap(struct):
    """A tf-keras ``ListWrapper`` / ``_DictWrapper`` (or a Keras tracked collection) as a plain list / dict."""
    if isinstance(struct, dict):
        return {k: struct[k] for k in struct}
    if isinstance(struct, (list, tuple)):
        return list(struct)
    return struct


def structure_inputs(model, named: dict):
    """Named tensors ``{name: tensor}`` in the structure the model was built with: a dict (keyed as the
    model's dict was), a list (in its order), or the one tensor; a dict when the structure is unknown."""
    struct = _unwrap(_input_structure(model))
    try:
        name_of = {id(t): n for n, t in named_inputs(model)}
    except ValueError:  # no declared inputs (a subclassed model): call it with the dict
        return dict(named)

    def build(s):
        s = _unwrap(s)
        if isinstance(s, dict):
            return {k: build(v) for k, v in s.items()}
        if isinstance(s, list):
            return [build(v) for v in s]
        return named[name_of[id(s)]]

    if struct is None:  # a Sequential model: its one input
        return next(iter(named.values())) if len(name_of) == 1 and len(named) == 1 else dict(named)
    try:
        return build(struct)
    except KeyError:  # a structure whose tensors are not the model's inputs: call with names
        return dict(named)


def single_output(model) -> None:
    """``ValueError`` unless the model has one output with one value per row (a probability)."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) > 1:
        raise ValueError(f"export needs a model with one output (the probability per row); this one has "
                         f"{len(outputs)}: {[input_name(o) for o in outputs]}")
    if outputs:
        rest = tuple(outputs[0].shape)[1:]
        if any(d is not None and d != 1 for d in rest):
            raise ValueError(f"export needs one probability per row: output shape [batch] or [batch, 1]; the model's "
                             f"output has shape {tuple(outputs[0].shape)}")


def model_caller(model):
    """``call({name: tensor}) -> tensor``: the model on named inputs, in inference mode; a model that
    returns a one-element dict or list gives that element."""

    def call(named: dict):
        out = model(structure_inputs(model, named), training=False)
        flat = tf.nest.flatten(out)
        if len(flat) != 1:
            raise ValueError(f"export needs a model with one output; this one returned {len(flat)}")
        return flat[0]

    return call


def describe_shape(spec: tf.TensorSpec) -> str:
    """``"[batch]"``, ``"[batch, 20]"``, ``"[batch, ?]"``: a spec's shape as error messages show it."""
    return "[" + ", ".join(["batch"] + ["?" if d is None else str(d) for d in spec.shape[1:]]) + "]"


def _shape_string(x: tf.Tensor) -> tf.Tensor:
    """The runtime shape of ``x`` as a string ``"4,20"`` (a scalar: ``""``), opaque to TensorFlow's
    static shape folding."""
    return tf.strings.reduce_join(tf.strings.as_string(tf.raw_ops.Shape(input=x)), separator=",")


def enforce_shapes(inputs: dict, specs: dict) -> dict:
    """In-graph: the inputs, after asserts that each has its spec's rank and declared dimensions and
    that all share one batch size (see the module docstring). Returns ``{name: tensor}`` that depend
    on the asserts."""
    shapes = {name: _shape_string(inputs[name]) for name in specs}
    checks = []
    for name, spec in specs.items():
        pattern = r"\d+" + "".join("," + (r"\d+" if d is None else str(int(d))) for d in spec.shape[1:])
        checks.append(tf.debugging.Assert(
            tf.strings.regex_full_match(shapes[name], pattern),
            [f"tfmec: input {name} must have shape {describe_shape(spec)}, got shape", shapes[name]],
            name=f"check_shape_{len(checks)}"))
    names = list(specs)
    with tf.control_dependencies(checks):
        batch = {name: tf.strings.regex_replace(shapes[name], ",.*", "") for name in names}
        for name in names[1:]:
            checks.append(tf.debugging.Assert(
                tf.equal(batch[name], batch[names[0]]),
                [f"tfmec: inputs {names[0]} and {name} have different batch sizes", batch[names[0]], batch[name]],
                name=f"check_batch_{len(checks)}"))
    with tf.control_dependencies(checks):
        return {name: tf.identity(inputs[name]) for name in specs}


def check_input_arrays(inputs: dict, specs: dict) -> int:
    """NumPy form of :func:`enforce_shapes`: ``ValueError`` when an input's shape does not fit its spec
    or the batch sizes differ. Returns the batch size."""
    sizes = {}
    for name, spec in specs.items():
        shape = np.shape(inputs[name])
        want = spec.shape
        if len(shape) != want.rank or any(d is not None and d != s for d, s in zip(want.as_list()[1:], shape[1:])):
            raise ValueError(f"input {name!r} has shape {tuple(shape)}; the signature takes {describe_shape(spec)}")
        sizes[name] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the inputs have different batch sizes (lengths) {sizes}")
    return next(iter(sizes.values())) if sizes else 0


__all__ = ["input_name", "model_input_tensors", "named_inputs", "input_specs", "structure_inputs", "single_output",
           "model_caller", "describe_shape", "enforce_shapes", "check_input_arrays"]
