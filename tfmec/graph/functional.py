"""Rebuilding a functional Keras model layer by layer, with hooks on how each layer is cloned and called.

``keras.models.clone_model`` of Keras 3 takes a ``call_function`` hook; tf-keras's does not, so under
tf-keras the graph is replayed here the way tf-keras's own ``Functional._run_internal_graph`` does:
nodes from the deepest (the inputs) up, each node's arguments mapped to the new tensors. Both paths
clone every layer once (a layer called at several nodes stays one layer) and let
``call_function(new_layer, *args, **kwargs)`` make the call, which can add call arguments (MEC's
shared codebooks call one layer per field with ``field=i``).
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import IS_LEGACY_KERAS, keras


@tfmec_export("tfmec.graph.rebuild_functional")
def rebuild_functional(model, clone_function: Callable, call_function: Callable | None = None):
    """A new functional model computing ``model``'s graph with cloned layers.

    Args:
        model: a functional Keras model (any input/output structure).
        clone_function: ``fn(layer) -> object``, called once per layer (not for input layers); the
            object is what ``call_function`` receives.
        call_function: ``fn(obj, *args, **kwargs) -> outputs`` for each node of the graph (default:
            ``obj(*args, **kwargs)``).
    Returns:
        a functional ``keras.Model`` on new inputs of the same names, shapes and dtypes (weights are
        whatever the cloned layers hold).
    """
    call_function = call_function or (lambda op, *args, **kwargs: op(*args, **kwargs))
    if not IS_LEGACY_KERAS:
        return keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    return _rebuild_legacy(model, clone_function, call_function)


def _rebuild_legacy(model, clone_function, call_function):
    """tf-keras: replays ``model._nodes_by_depth`` (mirrors ``Functional._run_internal_graph``)."""
    new_inputs = []
    for x in model.inputs:
        layer = x._keras_history.layer
        new_inputs.append(keras.Input(batch_shape=x.shape, dtype=x.dtype, name=layer.name,
                                      sparse=getattr(layer, "sparse", False), ragged=getattr(layer, "ragged", False)))
    usage = model._tensor_usage_count
    tensor_dict = {}
    for x, y in zip(model.inputs, new_inputs):
        x_id = str(id(x))
        tensor_dict[x_id] = [y] * usage[x_id]
    clones = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            if any(t_id not in tensor_dict for t_id in node.flat_input_ids):
                continue  # not computable from the inputs (as in tf-keras)
            layer = node.layer
            if id(layer) not in clones:
                clones[id(layer)] = clone_function(layer)
            args, kwargs = node.map_arguments(tensor_dict)
            outputs = call_function(clones[id(layer)], *args, **kwargs)
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensor_dict[x_id] = [y] * usage[x_id]
    outputs = []
    for x in model.outputs:
        x_id = str(id(x))
        if x_id not in tensor_dict:
            raise ValueError(f"output {x.name} of model {model.name!r} is not connected to its inputs")
        outputs.append(tensor_dict[x_id].pop())
    return keras.Model(inputs=tf.nest.pack_sequence_as(model._nested_inputs, new_inputs),
                       outputs=tf.nest.pack_sequence_as(model._nested_outputs, outputs), name=model.name)


__all__ = ["rebuild_functional"]
