"""Keras lookup layers moved out of an ONNX graph, and applied again in NumPy.

ONNX Runtime cannot run TensorFlow lookup tables (tf2onnx turns a ``StringLookup`` into a
``LookupTableFindV2`` node it refuses, and converts no integer-keyed table), so before converting
a model :func:`plan` looks for ``StringLookup`` / ``IntegerLookup`` layers applied directly to a
model input. Each is moved out: the ONNX model takes, under the input's name, the int ids the
lookup outputs (same shape), and the lookup's vocabulary with its mask/OOV settings is written as
JSON beside the model (``lookups`` in ``<name>.vocabulary.json``, see :func:`lookup_entry`).
:func:`apply_lookups` maps raw values to those ids exactly as the layer does, so a caller gets the
Keras model's predictions from raw values.

Whatever cannot be moved is refused with an error naming the layer: a lookup applied to anything
but a model input (or to an input that also feeds other layers), a lookup with ``output_mode``
other than ``"int"``, ``invert=True`` or more than one OOV index (hashed OOV buckets are
FarmHash, which cannot be reproduced outside TensorFlow), ``Hashing`` layers (no ONNX op), and any
other layer that holds a TensorFlow resource.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.export.signature import named_inputs

LOOKUP_FORMAT = "keras-lookup-1"
_ADVICE = "apply it outside the model (feed the model the ids it outputs), or export with tfmec.export.saved_model, " \
          "which serves it as is"


def _class_names(layer) -> set:
    return {c.__name__ for c in type(layer).__mro__}


def is_lookup(layer) -> bool:
    """True for ``StringLookup`` / ``IntegerLookup`` (Keras 3 and tf-keras: ``IndexLookup`` subclasses)."""
    return "IndexLookup" in _class_names(layer)


def is_hashing(layer) -> bool:
    return bool({"Hashing", "HashedCrossing"} & _class_names(layer))


def holds_resource(layer) -> bool:
    """True when the layer holds a TensorFlow resource (a lookup table) as an attribute."""
    for value in list(vars(layer).values()):
        items = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, tf.saved_model.experimental.TrackableResource) for v in items):
            return True
    return False


def _kind(layer) -> str:
    return type(layer).__name__


def _flat_layers(model) -> list:
    if hasattr(model, "_flatten_layers"):
        return list(model._flatten_layers(include_self=False, recursive=True))
    return list(getattr(model, "layers", []))


def refusal(layer) -> str | None:
    """Why ``layer`` cannot be in an ONNX graph, or None."""
    if is_lookup(layer):
        return (f"layer {layer.name!r} ({_kind(layer)}) is a TensorFlow lookup table that ONNX Runtime cannot run, and "
                f"it is not applied directly to a model input, so tfmec cannot move it out of the ONNX graph; {_ADVICE}")
    if is_hashing(layer):
        return (f"layer {layer.name!r} ({_kind(layer)}) hashes values with FarmHash, which ONNX has no op for; {_ADVICE}")
    if holds_resource(layer):
        return (f"layer {layer.name!r} ({_kind(layer)}) holds a TensorFlow resource (a lookup table) that ONNX cannot "
                f"hold; {_ADVICE}")
    return None


def _node_layer(node):
    return getattr(node, "operation", None) or getattr(node, "layer", None)


def _node_inputs(node) -> list:
    ins = getattr(node, "keras_inputs", None)
    return list(ins if ins is not None else tf.nest.flatten(node.input_tensors))


def _node_outputs(node) -> list:
    return list(tf.nest.flatten(node.output_tensors))


def _model_nodes(model) -> list:
    nodes = []
    for depth in sorted(getattr(model, "_nodes_by_depth", {}) or {}):
        for node in model._nodes_by_depth[depth]:
            if not getattr(node, "is_input", False) and _node_layer(node) is not None and _node_inputs(node):
                nodes.append(node)
    return nodes


def _check_movable(layer) -> None:
    config = layer.get_config()
    problems = []
    if config.get("output_mode", "int") != "int":
        problems.append(f"output_mode={config.get('output_mode')!r} (only 'int' lookups can be applied outside)")
    if config.get("invert"):
        problems.append("invert=True")
    if int(config.get("num_oov_indices", 1)) > 1:
        problems.append(f"num_oov_indices={config.get('num_oov_indices')} (unseen values are hashed into OOV buckets "
                        f"with FarmHash, which cannot be reproduced outside TensorFlow; use num_oov_indices=1)")
    if config.get("sparse"):
        problems.append("sparse=True")
    if problems:
        raise ValueError(f"layer {layer.name!r} ({_kind(layer)}) cannot be moved out of the ONNX graph: "
                         f"{'; '.join(problems)}; {_ADVICE}")


def _token(value, string: bool):
    if string:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return int(value)


def lookup_entry(layer, ids_dtype: tf.DType) -> dict:
    """The JSON description of a lookup layer: ``tokens`` (the whole vocabulary, special tokens
    included: ``tokens[i]`` is the value of id ``i``), ``first_token_id`` (the id of the first real
    token), ``mask_token`` / ``mask_id`` (the mask token maps to 0; null when the layer has none),
    ``oov_id`` (the id of unseen values; null when the layer has no OOV index and refuses them),
    ``values`` (``"string"`` or ``"integer"``) and ``ids_dtype`` (what the ONNX model takes)."""
    config = layer.get_config()
    string = "StringLookup" in _class_names(layer)
    tokens = [_token(t, string) for t in layer.get_vocabulary(include_special_tokens=True)]
    mask = config.get("mask_token")
    num_oov = int(config.get("num_oov_indices", 1))
    start = (1 if mask is not None else 0)
    return {
        "format": LOOKUP_FORMAT, "layer": layer.name, "class": _kind(layer),
        "values": "string" if string else "integer",
        "tokens": tokens, "first_token_id": start + num_oov,
        "mask_token": None if mask is None else _token(mask, string), "mask_id": 0 if mask is not None else None,
        "oov_id": start if num_oov == 1 else None,
        "ids_dtype": ids_dtype.name,
    }


@dataclass
class MovedLookup:
    """A lookup applied directly to model input ``input_name``; ``output`` is its symbolic output."""
    input_name: str
    layer: object
    output: object

    def entry(self) -> dict:
        return lookup_entry(self.layer, tf.as_dtype(self.output.dtype))


def _call_arguments(node):
    """``(args, kwargs)`` a node called its layer with (symbolic tensors inside)."""
    arguments = getattr(node, "arguments", None)  # Keras 3
    if arguments is not None:
        return tuple(arguments.args), dict(arguments.kwargs)
    return tuple(node.call_args), dict(node.call_kwargs)  # tf-keras


def _training_false(layer, kwargs: dict) -> dict:
    if getattr(layer, "_call_has_training_arg", False) or getattr(layer, "_expects_training_arg", False):
        kwargs.setdefault("training", False)
    return kwargs


def _walk(model, fed: set):
    """The model's nodes (in call order) computable from the symbolic tensors whose ids are in ``fed``;
    ``fed`` grows by their outputs."""
    out = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            ins = _node_inputs(node)
            if getattr(node, "is_input", False) or not ins or any(id(t) not in fed for t in ins):
                continue
            out.append(node)
            fed.update(id(t) for t in _node_outputs(node))
    return out


def _graph_runner(model, feeds: list):
    """``run({id(symbolic tensor): tensor}) -> output tensor``: the model's graph run from the symbolic
    tensors ``feeds`` (model inputs or intermediate tensors) the way Keras runs a functional model (each
    layer called with its recorded arguments, ``training=False``, masks propagated by the layers)."""
    fed = {id(t) for t in feeds}
    nodes = _walk(model, fed)
    missing = [getattr(o, "name", o) for o in model.outputs if id(o) not in fed]
    if missing:
        raise ValueError(f"the model's outputs {missing} cannot be computed without its raw inputs")

    def run(values: dict):
        values = dict(values)

        def fill(x):
            return values[id(x)] if not isinstance(x, (int, float, str, bool, type(None))) and id(x) in values else x

        for node in nodes:
            layer = _node_layer(node)
            args, kwargs = tf.nest.map_structure(fill, _call_arguments(node))
            outputs = layer(*args, **_training_false(layer, kwargs))
            for x, y in zip(_node_outputs(node), tf.nest.flatten(outputs)):
                values[id(x)] = y
        flat = [values[id(o)] for o in model.outputs]
        if len(flat) != 1:
            raise ValueError(f"export needs a model with one output; this one has {len(flat)}")
        return flat[0]

    return run, nodes


def plan(model):
    """``(call, names, moved)``: how to convert the model.

    ``moved`` lists the :class:`MovedLookup` of the lookups applied directly to a model input (in
    ``model.inputs`` order); ``names`` are the model's input names in that order (the ONNX inputs keep
    them); ``call({name: tensor}) -> probability`` runs the model with the ids of each moved lookup fed
    in place of its output (and of its raw input), the other inputs as they are. Raises
    ``ValueError`` naming the layer for anything that cannot be in an ONNX graph and cannot be moved
    out. The model is not modified.
    """
    from tfmec.export.signature import has_declared_inputs, input_specs, model_caller

    layers = _flat_layers(model)
    if not has_declared_inputs(model):  # a subclassed model: no graph to move lookups out of
        for layer in layers:
            why = refusal(layer)
            if why:
                raise ValueError(why)
        return model_caller(model), list(input_specs(model)), []
    named = named_inputs(model)
    names = [n for n, _ in named]
    if not any(is_lookup(la) or is_hashing(la) or holds_resource(la) for la in layers):
        return model_caller(model), names, []
    model = getattr(model, "_functional", None) or model  # a Keras 3 Sequential runs a functional model
    if not getattr(model, "_nodes_by_depth", None):
        for layer in layers:
            why = refusal(layer)
            if why:
                raise ValueError(why)
    by_input = {id(t): n for n, t in named}
    consumers: dict[str, list] = {n: [] for n in names}
    nodes = _model_nodes(model)
    for node in nodes:
        for t in _node_inputs(node):
            if id(t) in by_input:
                consumers[by_input[id(t)]].append(node)
    moved = {}
    for node in nodes:
        layer = _node_layer(node)
        if not is_lookup(layer):
            continue
        ins = _node_inputs(node)
        if len(ins) != 1 or id(ins[0]) not in by_input:
            continue  # refused below, as a lookup left in the graph
        name = by_input[id(ins[0])]
        others = [_node_layer(n).name for n in consumers[name] if n is not node]
        if others:
            raise ValueError(f"model input {name!r} feeds layer {layer.name!r} ({_kind(layer)}) and also {others}, so "
                             f"the lookup cannot be moved out of the ONNX graph (ONNX Runtime cannot run TensorFlow "
                             f"lookup tables); {_ADVICE}")
        _check_movable(layer)
        (output,) = _node_outputs(node)
        moved[name] = MovedLookup(name, layer, output)
    feeds = [moved[n].output if n in moved else t for n, t in named]
    run, used = _graph_runner(model, feeds)
    for node in used:
        layer = _node_layer(node)
        for inner in [layer, *(_flat_layers(layer) if hasattr(layer, "_flatten_layers") else [])]:
            why = refusal(inner)
            if why:
                raise ValueError(why)

    def call(named_values: dict):
        return run({id(t): named_values[n] for n, t in zip(names, feeds)})

    return call, names, [moved[n] for n in names if n in moved]


def _apply_one(entry: dict, values) -> np.ndarray:
    string = entry["values"] == "string"
    arr = np.asarray(values.numpy() if hasattr(values, "numpy") else values)
    flat = arr.reshape(-1)
    if not string:
        if not np.issubdtype(flat.dtype, np.integer):
            if flat.size and not np.all(np.equal(np.mod(flat.astype(np.float64), 1), 0)):
                raise ValueError(f"lookup {entry['layer']!r} takes integers, got {flat.dtype} values")
        flat = flat.astype(np.int64)
    start = int(entry["first_token_id"])
    table = {tok: i for i, tok in enumerate(entry["tokens"]) if i >= start}
    if entry.get("mask_token") is not None:
        table[entry["mask_token"]] = int(entry["mask_id"])
    try:
        uniq, inverse = np.unique(flat, return_inverse=True) if flat.size else (flat, np.zeros(0, np.int64))
    except TypeError:  # bytes beside str cannot be sorted together: decode every value first
        flat = np.asarray([_token(v, True) for v in flat], dtype=object)
        uniq, inverse = np.unique(flat, return_inverse=True)
    oov = entry.get("oov_id")
    # one dictionary look-up (and, for strings, one decode) per distinct value, not per row
    keys = [_token(u, True) if string else int(u) for u in uniq]
    ids_u = np.asarray([table.get(k, -1) for k in keys], dtype=np.int64)
    if (ids_u < 0).any():
        if oov is None:
            unseen = [u for u, i in zip(uniq, ids_u) if i < 0][:5]
            raise ValueError(f"lookup {entry['layer']!r} has no OOV index and these values are not in its vocabulary: "
                             f"{unseen}")
        ids_u[ids_u < 0] = int(oov)
    ids = ids_u[inverse.reshape(-1)] if flat.size else np.zeros(0, np.int64)
    return ids.reshape(arr.shape).astype(tf.as_dtype(entry["ids_dtype"]).as_numpy_dtype)


@tfmec_export("tfmec.export.apply_lookups")
def apply_lookups(lookups: dict, inputs: dict) -> dict:
    """``inputs`` (the Keras model's own inputs, ``{name: array}``) with every input named in
    ``lookups`` (``{input name: entry}``, as :func:`tfmec.export.onnx` writes them) mapped to the ids
    its lookup layer gives: the mask token to 0, unseen values to the OOV id, same shape."""
    out = dict(inputs)
    for name, entry in lookups.items():
        if name in inputs:
            out[name] = _apply_one(entry, inputs[name])
    return out


__all__ = ["plan", "apply_lookups", "lookup_entry", "MovedLookup", "is_lookup", "is_hashing", "refusal", "LOOKUP_FORMAT"]
