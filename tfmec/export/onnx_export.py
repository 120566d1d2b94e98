"""``tfmec.export.onnx``: the model as ONNX, converted with tf2onnx.

The ONNX graph takes the model's own inputs, named and shaped as the model declares them
(:func:`~tfmec.export.signature.input_specs`; for a tfmec model one per field: ``int32[batch]`` ids
for categorical fields and standardised ``float32[batch]`` for numeric ones, since tf2onnx cannot
convert the string hash tables of the SavedModel's ``serving_default``), and returns
``probability`` ``float32[batch, 1]``. The conversion starts from a concrete function (Keras 3's
``from_keras`` route is broken); the weights become ONNX initializers at their stored dtypes, so
bit-packed MEC codes stay packed ``uint8``.

Lookup layers (``StringLookup`` / ``IntegerLookup``) applied directly to a model input are moved
out of the graph (:mod:`tfmec.export.lookups`): that ONNX input takes the lookup's int ids, and the
lookup's vocabulary goes into the JSON beside the model, which :func:`predict_onnx` applies to raw
values. Preprocessing that can be neither converted nor moved (a lookup elsewhere, ``Hashing``) is
refused with an error naming the layer. Every converted model is loaded with ONNX Runtime before
it is written and must use stock ONNX ops only; a model ONNX Runtime refuses is never written.

The JSON beside the model, ``<name>.vocabulary.json`` (:func:`vocabulary_path`), holds the encoder's
vocabularies, numeric statistics and schema when an encoder is given, and ``lookups`` (``{input:
vocabulary}``) when lookups were moved out; ``inputs`` lists the ONNX inputs in the model's order.

Needs the ``onnx`` extra: ``pip install 'tfmec[onnx]'`` (tf2onnx, onnxruntime).
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.data.vocabulary import write_bytes_atomic
from tfmec.export.batching import predict_in_batches
from tfmec.export.lookups import apply_lookups, plan
from tfmec.export.module import OUTPUT_KEY, model_input_specs
from tfmec.export.signature import single_output

DEFAULT_OPSET = 17


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"ONNX export needs {module!r}: pip install 'tfmec[onnx]' (tf2onnx, onnxruntime)") from err


@tfmec_export("tfmec.export.onnx_available")
def onnx_available() -> bool:
    """True when tf2onnx and onnxruntime import (the ``onnx`` extra)."""
    try:
        _require("tf2onnx")
        _require("onnxruntime")
    except ImportError:
        return False
    return True


@tfmec_export("tfmec.export.vocabulary_path")
def vocabulary_path(onnx_path: str) -> str:
    """``dir/name.onnx`` -> ``dir/name.vocabulary.json`` (where :func:`onnx` writes the vocabulary)."""
    stem = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    return stem + ".vocabulary.json"


def _onnx_function(model):
    """``(tf.function, [specs], {input: lookup entry})``: ``f(*inputs) -> {"probability": float32[batch, 1]}``
    over the ONNX inputs (model order), with the lookups applied directly to inputs moved out."""
    specs = model_input_specs(model)
    single_output(model)
    call, names, moved = plan(model)
    entries = {}
    for m in moved:
        out = m.output
        specs[m.input_name] = tf.TensorSpec([None, *tuple(out.shape)[1:]], tf.as_dtype(out.dtype), name=m.input_name)
        entries[m.input_name] = m.entry()
    signature = [specs[n] for n in names]

    @tf.function(input_signature=signature, autograph=False)
    def predict(*tensors):
        probability = call(dict(zip(names, tensors)))
        return {OUTPUT_KEY: tf.cast(tf.reshape(probability, [-1, 1]), tf.float32)}

    return predict, signature, entries


@contextlib.contextmanager
def _quiet_tensorflow():
    """TensorFlow's and tf2onnx's INFO/WARNING chatter off during the conversion (errors still show)."""
    loggers = [logging.getLogger(n) for n in ("tensorflow", "tf2onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_vocabulary_json(path: str, encoder, input_specs: dict, lookups: dict | None = None) -> None:
    """The JSON beside an ONNX model: the encoder's vocabularies, numeric statistics and schema
    (readable by :func:`tfmec.data.load_vocabularies`) when ``encoder`` is given, the lookups moved out
    of the graph (``{input name: entry}``, see :func:`tfmec.export.lookups.lookup_entry`), the ONNX
    input dtypes and their order."""
    from tfmec.data.vocabulary import vocabulary_payload, write_json_atomic

    payload = {"format": "tfmec-onnx-inputs"}
    if encoder is not None:
        payload.update(vocabulary_payload(encoder.vocabularies, encoder.numeric_stats))
        payload.update(schema=encoder.schema.to_dict(), oov_id=0)
    payload.update(onnx_inputs={name: spec.dtype.name for name, spec in input_specs.items()},
                   inputs=list(input_specs))
    if lookups:
        payload["lookups"] = lookups
    write_json_atomic(path, payload)


def check_onnx_model(proto) -> None:
    """``ValueError`` unless ``proto`` uses stock ONNX ops only and ONNX Runtime loads it."""
    stock = {"", "ai.onnx", "ai.onnx.ml"}
    custom = sorted({n.domain for n in proto.graph.node} - stock)
    if custom:
        ops = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node if n.domain not in stock})
        raise ValueError(f"the converted model needs custom ONNX ops {ops}; tfmec writes stock ONNX ops only")
    _require("onnxruntime")
    import onnxruntime as ort

    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        ops = sorted({n.op_type for n in proto.graph.node})
        raise ValueError(f"ONNX Runtime cannot load the converted model ({str(err).strip()[:500]}); ops in the graph: "
                         f"{ops}. Export with tfmec.export.saved_model, or move the op out of the model") from err


@tfmec_export("tfmec.export.onnx")
def onnx(model, path: str, encoder=None, *, opset: int = DEFAULT_OPSET, input_signature=None) -> str:
    """Converts ``model`` to ONNX at ``path`` (written atomically) and returns ``path``.

    Args:
        model: a trained Keras CTR model (Keras 3 or tf-keras) with declared inputs of any structure
            and shape (see :func:`tfmec.export.saved_model`) and one probability output.
        path: the ``.onnx`` file to write.
        encoder: the :class:`~tfmec.data.FeatureEncoder` of the training data; when given, its
            vocabularies go beside the model as ``<name>.vocabulary.json`` (:func:`vocabulary_path`).
        opset: ONNX opset.
        input_signature: for a model that declares no inputs, as in :func:`tfmec.export.saved_model`.
    ONNX inputs: the model's inputs, named, shaped and typed as it declares them, except that the
    input of a ``StringLookup`` / ``IntegerLookup`` applied directly to it takes the lookup's int ids
    (the vocabulary goes into the JSON beside the model; :func:`predict_onnx` applies it to raw values).
    Output ``probability`` ``float32[batch, 1]``.

    Raises:
        ValueError: preprocessing that ONNX cannot hold and that cannot be moved out (the message
            names the layer: a lookup not applied directly to an input, ``Hashing``, ...), or a
            converted model that ONNX Runtime refuses or that needs custom ops. Nothing is written then.
    """
    _require("tf2onnx")
    import tf2onnx

    if input_signature is not None:
        from tfmec.export.signature import declare_inputs

        declare_inputs(model, input_signature)
    fn, signature, lookups = _onnx_function(model)
    with _quiet_tensorflow():
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    check_onnx_model(proto)
    write_bytes_atomic(path, proto.SerializeToString(), suffix=".onnx")
    if encoder is not None or lookups:
        write_vocabulary_json(vocabulary_path(path), encoder, {s.name: s for s in signature}, lookups)
    return path


@tfmec_export("tfmec.export.read_lookups")
def read_lookups(path: str) -> tuple[dict, list]:
    """``(lookups, input order)`` from the JSON beside an ONNX model (``({}, [])`` when there is none)."""
    import json

    json_path = path if str(path).endswith(".json") else vocabulary_path(str(path))
    if not os.path.exists(json_path):
        return {}, []
    with open(json_path, encoding="utf-8") as fh:
        payload = json.load(fh)
    return dict(payload.get("lookups") or {}), list(payload.get("inputs") or [])


@tfmec_export("tfmec.export.onnx_session")
def onnx_session(path: str, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on CPU (``threads``: intra-op threads, default ORT's)."""
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@tfmec_export("tfmec.export.predict_onnx")
def predict_onnx(path_or_session, inputs, batch_size: int = 8192, *, lookups=None) -> np.ndarray:
    """Probabilities ``float32[n]`` of an ONNX model with ONNX Runtime, in batches of ``batch_size``.

    Args:
        path_or_session: the ``.onnx`` file written by :func:`onnx`, or an ``InferenceSession``.
        inputs: ``{input name: array[n, ...]}`` (a list in the model's input order, or one array, for
            a model with unnamed inputs).
        lookups: the lookups moved out of the graph to apply first: None (the JSON beside the file,
            if :func:`onnx` wrote any: then the inputs of those lookups are raw values, what the
            Keras model takes), False (none: every input is what the ONNX model takes), or a JSON
            path or ``{input: entry}`` dict.
    """
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    order = []
    if lookups is None:
        lookups, order = read_lookups(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else ({}, [])
    elif lookups is False:
        lookups = {}
    elif isinstance(lookups, (str, os.PathLike)):
        lookups, order = read_lookups(lookups)
    names = order or [i.name for i in session.get_inputs()]
    if not isinstance(inputs, dict):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(inputs) != len(names):
            raise ValueError(f"the ONNX model takes {len(names)} inputs {names}, got {len(inputs)} arrays")
        inputs = dict(zip(names, inputs))
    if lookups:
        inputs = apply_lookups(lookups, inputs)
    dtypes = {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64 if i.type == "tensor(int64)" else
                       np.bool_ if i.type == "tensor(bool)" else np.float64 if i.type == "tensor(double)" else
                       object if i.type == "tensor(string)" else np.float32)
              for i in session.get_inputs()}
    missing = [k for k in dtypes if k not in inputs]
    if missing:
        raise ValueError(f"the ONNX model takes inputs {sorted(dtypes)}; missing {missing}")

    def batch(start, stop):
        return session.run([OUTPUT_KEY], {k: np.asarray(inputs[k][start:stop], dtype=t) for k, t in dtypes.items()})[0]

    return predict_in_batches(batch, {k: inputs[k] for k in dtypes}, batch_size)


__all__ = ["onnx", "onnx_available", "predict_onnx", "onnx_session", "vocabulary_path", "write_vocabulary_json",
           "check_onnx_model", "read_lookups"]
