"""What given layers receive and return while a model runs on data, for models of any kind.

A functional model could be cut into a sub-model ending at a layer, but a layer inside a subclassed
model or a custom layer has no graph to cut. :func:`capturing` instead wraps each watched layer's
``call`` for the duration of a ``with`` block, so that running the model (inside a ``tf.function``)
records each watched layer's first positional input and its output; the wrappers are removed on exit.
Used by :func:`tfmec.mec.count_ids` (the ids that reach each table, after the model's own
preprocessing) and by AFM's calibration (what each Dense layer really sees).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import tensorflow as tf


class Capture:
    """Per watched layer, the tensors of the current trace: ``inputs[i]`` / ``outputs[i]`` are lists
    (one entry per call of layer ``i`` in one forward pass)."""

    def __init__(self, n: int):
        self.inputs = [[] for _ in range(n)]
        self.outputs = [[] for _ in range(n)]

    def clear(self):
        for lst in self.inputs + self.outputs:
            lst.clear()


@contextlib.contextmanager
def patched_calls(layers: Sequence, make_call: Callable):
    """Within the block, ``layers[i].call`` is ``make_call(i, original_call)`` (an instance attribute,
    so the class and every other layer are untouched); the originals come back on exit, whatever
    happens inside."""
    patched = []
    try:
        for i, layer in enumerate(layers):
            object.__setattr__(layer, "call", make_call(i, layer.call))
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            try:
                object.__delattr__(layer, "call")
            except AttributeError:
                pass


@contextlib.contextmanager
def capturing(layers: Sequence):
    """Within the block, every call of ``layers[i]`` appends its first positional input to
    ``capture.inputs[i]`` and its output to ``capture.outputs[i]``; yields the :class:`Capture`."""
    capture = Capture(len(layers))

    def make_call(i, original):
        def hooked(*args, **kwargs):
            out = original(*args, **kwargs)
            x = args[0] if args else kwargs.get("inputs")
            if any(seen is x for seen in capture.inputs[i]):
                return out  # the same tensor looked up again (e.g. twice in one expression): once
            capture.inputs[i].append(x)
            capture.outputs[i].append(out)
            return out

        return hooked

    with patched_calls(layers, make_call):
        yield capture


def _graph_of(tensor):
    parts = tf.nest.flatten(tensor, expand_composites=True)
    return getattr(parts[0], "graph", None) if parts else None


def features_of(element):
    """The features of a dataset element: ``element[0]`` of a ``(features, label[, weight])`` tuple,
    else the element itself."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        return element[0]
    return element


def run_capturing(model, layers: Sequence, data: Iterable, reduce: Callable, *, what: str = "inputs",
                  max_batches: int | None = None, progress: str | None = None) -> int:
    """Runs ``model`` (``training=False``) over ``data`` and hands each batch's captured tensors to
    ``reduce(i, list_of_numpy_arrays)`` for every watched layer ``i``.

    Args:
        model: any Keras model (functional, subclassed, nested).
        layers: the layers to watch (each must be reached by the model's forward pass).
        data: a ``tf.data.Dataset`` or iterable of ``(features, label)`` batches or bare features.
        reduce: called per batch and layer with the list of arrays the layer received (``what="inputs"``)
            or returned (``"outputs"``) in that batch (several when the layer is called several times).
        max_batches: stop after this many batches.
        progress: a label for a progress bar (tqdm) or None.
    Returns:
        the number of batches run.
    Raises:
        ValueError: when a watched layer is never called by the forward pass.
    """
    layers = list(layers)
    with capturing(layers) as capture:
        @tf.function(reduce_retracing=True)
        def forward(features):
            capture.clear()
            model(features, training=False)
            got = capture.inputs if what == "inputs" else capture.outputs
            graph = tf.compat.v1.get_default_graph()  # tf-keras may call layers in scratch graphs too
            return [[t for t in x if _graph_of(t) in (graph, None)] for x in got]

        iterator = iter(data)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=progress, unit="batch", leave=False)
        batches = 0
        try:
            for element in iterator:
                if max_batches is not None and batches >= max_batches:
                    break
                per_layer = forward(features_of(element))
                for i, tensors in enumerate(per_layer):
                    if not tensors:
                        raise ValueError(f"layer {layers[i].name!r} is not called when the model runs on this data")
                    reduce(i, [t.numpy() for t in tensors])
                batches += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return batches


__all__ = ["patched_calls", "capturing", "run_capturing", "Capture", "features_of"]
