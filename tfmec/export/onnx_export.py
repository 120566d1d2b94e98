"""``tfmec.export.onnx``: the model's ``ids`` function as ONNX, converted with tf2onnx.

The ONNX graph takes the model's own inputs, one per field named ``field.name``: ``int32[batch]`` ids
for categorical fields and standardised ``float32[batch]`` for numeric ones (tf2onnx cannot convert
the string hash tables of the SavedModel's ``serving_default``), and returns ``probability``
``float32[batch, 1]``. The conversion starts from a concrete function (Keras 3's ``from_keras`` route
is broken); the weights become ONNX initializers at their stored dtypes, so bit-packed MEC codes stay
packed ``uint8``. The vocabulary (and numeric statistics and schema) that turn raw values into those
inputs is written beside the model as JSON, ``<name>.vocabulary.json``.

Needs the ``onnx`` extra: ``pip install 'tfmec[onnx]'`` (tf2onnx, onnxruntime).
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import tensorflow as tf

from tfmec.data.vocabulary import write_bytes_atomic
from tfmec.export.batching import predict_in_batches
from tfmec.export.module import OUTPUT_KEY, model_input_specs

DEFAULT_OPSET = 17


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"ONNX export needs {module!r}: pip install 'tfmec[onnx]' (tf2onnx, onnxruntime)") from err


def onnx_available() -> bool:
    """True when tf2onnx and onnxruntime import (the ``onnx`` extra)."""
    try:
        _require("tf2onnx")
        _require("onnxruntime")
    except ImportError:
        return False
    return True


def vocabulary_path(onnx_path: str) -> str:
    """``dir/name.onnx`` -> ``dir/name.vocabulary.json`` (where :func:`onnx` writes the vocabulary)."""
    stem = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    return stem + ".vocabulary.json"


def ids_function(model):
    """``(tf.function, [input specs dict])``: ``f({field: [batch]}) -> {"probability": float32[batch, 1]}``."""
    specs = model_input_specs(model)

    @tf.function(input_signature=[specs], autograph=False)
    def predict(inputs):
        probability = model(inputs, training=False)
        return {OUTPUT_KEY: tf.cast(tf.reshape(probability, [-1, 1]), tf.float32)}

    return predict, [specs]


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


def write_vocabulary_json(path: str, encoder, input_specs: dict) -> None:
    """The encoder's vocabularies, numeric statistics and schema as one JSON file (readable by
    :func:`tfmec.data.load_vocabularies`), plus the ONNX input dtypes."""
    from tfmec.data.vocabulary import vocabulary_payload, write_json_atomic

    payload = vocabulary_payload(encoder.vocabularies, encoder.numeric_stats)
    payload.update(schema=encoder.schema.to_dict(), oov_id=0,
                   onnx_inputs={name: spec.dtype.name for name, spec in input_specs.items()})
    write_json_atomic(path, payload)


def onnx(model, path: str, encoder=None, *, opset: int = DEFAULT_OPSET) -> str:
    """Converts ``model`` to ONNX at ``path`` (written atomically) and returns ``path``.

    Args:
        model: a trained Keras CTR model ``{field: [batch]} -> [batch, 1]`` (Keras 3 or tf-keras).
        path: the ``.onnx`` file to write.
        encoder: the :class:`~tfmec.data.FeatureEncoder` of the training data; when given, its
            vocabularies go beside the model as ``<name>.vocabulary.json`` (:func:`vocabulary_path`).
        opset: ONNX opset.
    ONNX inputs: ``{field.name: int32[batch] | float32[batch]}``; output ``probability`` ``float32[batch, 1]``.
    """
    _require("tf2onnx")
    import tf2onnx

    fn, signature = ids_function(model)
    with _quiet_tensorflow():
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    write_bytes_atomic(path, proto.SerializeToString(), suffix=".onnx")
    if encoder is not None:
        write_vocabulary_json(vocabulary_path(path), encoder, signature[0])
    return path


def onnx_session(path: str, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on CPU (``threads``: intra-op threads, default ORT's)."""
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def predict_onnx(path_or_session, inputs: dict, batch_size: int = 8192) -> np.ndarray:
    """Probabilities ``float32[n]`` of an ONNX model on ``{field: array[n]}`` (ids / standardised
    floats), with ONNX Runtime, in batches of ``batch_size``."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    dtypes = {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64 if i.type == "tensor(int64)" else np.float32)
              for i in session.get_inputs()}

    def batch(start, stop):
        return session.run([OUTPUT_KEY], {k: np.asarray(inputs[k][start:stop], dtype=t) for k, t in dtypes.items()})[0]

    return predict_in_batches(batch, inputs, batch_size)


__all__ = ["onnx", "onnx_available", "predict_onnx", "onnx_session", "vocabulary_path", "ids_function", "write_vocabulary_json"]
