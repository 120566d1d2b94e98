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
from tfmec.api_export import public_names
from tfmec.export import lookups, module, onnx_export, parity, savedmodel, signature, serving, versions

# every name exported as tfmec.export.* by the modules above (@tfmec_export, export_value)
__all__ = public_names(globals(), lookups, module, onnx_export, parity, savedmodel, signature, serving, versions)
