"""tfmec.export: SavedModel for TF Serving and ONNX, both checked against the Keras model.

::

    path = tfmec.export.saved_model(model, "saved_models/ctr", data.encoder)   # saved_models/ctr/1
    tfmec.export.onnx(model, "saved_models/ctr.onnx", data.encoder)           # + ctr.vocabulary.json

Any functional Keras model exports as it is: its inputs as it declares them (any structure, shapes
``[batch]`` / ``[batch, 1]`` / ``[batch, length]``, ids, strings or floats), with ``StringLookup`` /
``IntegerLookup`` / ``Hashing`` layers inside.

Modules: :mod:`~tfmec.export.savedmodel` (versioned atomic SavedModel), :mod:`~tfmec.export.module`
(the two signatures), :mod:`~tfmec.export.signature` (the model's own inputs, in-graph shape checks),
:mod:`~tfmec.export.preprocessing` and :mod:`~tfmec.export.vocab_assets` (raw values -> ids
in-graph), :mod:`~tfmec.export.onnx_export`, :mod:`~tfmec.export.lookups` (lookup layers moved out
of ONNX graphs), :mod:`~tfmec.export.serving` (TF Serving REST requests), :mod:`~tfmec.export.parity`,
:mod:`~tfmec.export.versions`, :mod:`~tfmec.export.run` (the export step of ``tfmec run``).
"""
from tfmec.export.lookups import apply_lookups
from tfmec.export.module import OUTPUT_KEY, ServingModule
from tfmec.export.onnx_export import onnx, onnx_available, onnx_session, predict_onnx, read_lookups, vocabulary_path
from tfmec.export.parity import check_parity, encode_raw, keras_probabilities, max_abs_diff, raw_from_ids
from tfmec.export.savedmodel import load_signature, predict_saved_model, saved_model
from tfmec.export.signature import declare_inputs, input_specs
from tfmec.export.serving import RequestError, format_response, pad_lists, predict_request, request_to_inputs
from tfmec.export.versions import directory_bytes, existing_versions, next_version

__all__ = [
    "saved_model", "load_signature", "predict_saved_model", "ServingModule", "OUTPUT_KEY",
    "onnx", "onnx_available", "onnx_session", "predict_onnx", "vocabulary_path", "apply_lookups", "read_lookups", "input_specs", "declare_inputs",
    "check_parity", "raw_from_ids", "encode_raw", "keras_probabilities", "max_abs_diff",
    "request_to_inputs", "format_response", "predict_request", "RequestError", "pad_lists",
    "existing_versions", "next_version", "directory_bytes",
]
