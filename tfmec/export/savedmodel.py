"""``tfmec.export.saved_model``: a versioned SavedModel that TF Serving loads as is.

Layout of ``base_dir/<version>/`` (a standard SavedModel)::

    saved_model.pb            graph + the two signatures (see :mod:`tfmec.export.module`)
    variables/                the model's weights at their stored dtypes (packed MEC codes stay uint8)
    assets/vocab_<field>.txt  one vocabulary per categorical / bucketised field (keys: see
                              :mod:`tfmec.export.vocab_assets`), read into hash tables at load time
    assets.extra/tfmec.json   schema, numeric statistics and signature description (for people and
                              tools; TF Serving ignores assets.extra)
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.export.batching import predict_in_batches
from tfmec.export.module import OUTPUT_KEY, ServingModule, model_input_specs
from tfmec.export.preprocessing import RawPreprocessor, raw_dtype
from tfmec.export.signature import check_input_arrays
from tfmec.export.versions import atomic_directory, resolve_version
from tfmec.export.vocab_assets import KEY_ENCODING

METADATA_FILE = os.path.join("assets.extra", "tfmec.json")


def as_encoder(model, vocabulary):
    """A :class:`~tfmec.data.FeatureEncoder` from what ``saved_model(vocabulary=...)`` accepts.

    Args:
        model: the Keras model (its inputs name the fields).
        vocabulary: a ``FeatureEncoder`` (used as is), a ``{field: Vocabulary}`` dict (the model's
            int32 inputs become string categorical fields with these vocabularies, its float32 inputs
            numeric fields passed through unchanged: no transform, no standardisation), or None.
    Returns:
        a ``FeatureEncoder`` or None.
    """
    from tfmec.data import CATEGORICAL, NUMERIC, Field, FeatureEncoder, NumericStats, Schema

    if vocabulary is None or isinstance(vocabulary, FeatureEncoder):
        return vocabulary
    if not isinstance(vocabulary, dict):
        raise TypeError(f"vocabulary must be a FeatureEncoder or a {{field: Vocabulary}} dict, got {type(vocabulary).__name__}")
    fields, stats = [], {}
    for name, spec in model_input_specs(model).items():
        if spec.dtype.is_integer:
            if name not in vocabulary:
                raise ValueError(f"no vocabulary for the model's integer input {name!r}")
            fields.append(Field(name, CATEGORICAL, vocab_size=vocabulary[name].size))
        else:
            fields.append(Field(name, NUMERIC))
            stats[name] = NumericStats(name)  # n = 0: mean 0, std 1, i.e. values pass through
    return FeatureEncoder(Schema(fields), {f.name: vocabulary[f.name] for f in fields if f.kind == CATEGORICAL}, stats)


def _metadata(encoder, module) -> dict:
    def describe(fn):
        inputs = fn.structured_input_signature[1]
        return {name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()} for name, spec in inputs.items()}

    meta = {
        "format": "tfmec-saved-model",
        "version": 1,
        "outputs": {OUTPUT_KEY: {"dtype": "float32", "shape": [None, 1]}},
        "signatures": {"serving_default": describe(module.serving_default), "ids": describe(module.ids)},
        "oov_id": 0,
        "vocabulary_key_encoding": KEY_ENCODING,
    }
    if encoder is not None:
        meta["schema"] = encoder.schema.to_dict()
        meta["raw_inputs"] = {f.name: raw_dtype(f).name for f in encoder.schema}
        meta["numeric"] = [s.to_dict() for s in encoder.numeric_stats.values()]
    return meta


def write_saved_model(model, path: str, encoder=None) -> None:
    """Writes the SavedModel of ``model`` (with ``encoder``'s preprocessing, if any) into the existing
    empty folder ``path``. Not atomic: :func:`saved_model` calls it on a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="tfmec-vocab-") as staging:
        preprocessor = RawPreprocessor(encoder, staging) if encoder is not None else None
        module = ServingModule(model, preprocessor)
        try:
            tf.saved_model.save(module, path, signatures=module.signatures)
        except (AssertionError, ValueError) as err:
            if "untracked resource" not in str(err).lower():
                raise
            raise ValueError(f"the model uses a TensorFlow resource (a lookup table?) that none of its layers holds as "
                             f"an attribute, so the SavedModel cannot carry it; keep tables on a Keras layer of the "
                             f"model ({err})") from err
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as fh:
        json.dump(_metadata(encoder, module), fh, indent=1)


@tfmec_export("tfmec.export.saved_model")
def saved_model(model, base_dir: str, vocabulary=None, version: int | None = None, *, encoder=None,
                input_signature=None) -> str:
    """Exports ``model`` to ``base_dir/<version>/`` for TF Serving, atomically.

    Args:
        model: a trained tfmec model, or any functional Keras model with one probability output, Keras 3
            or tf-keras, taking its inputs as it declares them: a dict, a list or one input; ``[batch]``,
            ``[batch, 1]`` or ``[batch, length]``; int ids, ``tf.string`` raw values or floats.
            Preprocessing layers inside (``StringLookup``, ``IntegerLookup``, ``Hashing``) are exported
            with it (their tables and vocabularies travel in the SavedModel).
        base_dir: the model's folder that TF Serving watches (created if missing).
        vocabulary: the :class:`~tfmec.data.FeatureEncoder` the model was trained with (schema,
            vocabularies, numeric statistics: ``CTRData.encoder``), or a ``{field: Vocabulary}`` dict
            (see :func:`as_encoder`), or None (then ``serving_default`` takes the model's own inputs,
            like ``ids``).
        version: the version number; default one more than the newest existing (1 for a new folder).
            An existing version is never overwritten (``FileExistsError``).
        encoder: alias of ``vocabulary`` (give one of them).
        input_signature: for a model that declares no inputs (a subclassed model): ``{name:
            tf.TensorSpec}`` or a sample batch ``{name: array}`` (:func:`tfmec.export.declare_inputs`);
            the model is called with a dict of these names. tf-keras records it at the first call.

    Signatures (output ``{"probability": float32[batch, 1]}``):
        ``serving_default``: with a vocabulary, raw values, one ``[batch]`` input per field named
        ``field.name``: ``tf.string`` for categorical fields, ``tf.float32`` for numeric ones (NaN =
        missing); unknown values go to the OOV id 0. Without one, the model's own inputs.
        ``ids``: the model's own inputs: names from its input layers (or its dict's keys), batch
        dimension None, the rest and the dtype as declared (with a vocabulary, an id outside
        ``[0, vocab_size)`` is answered as the OOV id 0).
        Both refuse in-graph an input of another rank or declared dimension, and inputs of
        different batch sizes (``InvalidArgumentError`` naming the input).

    Returns:
        the path of the new version folder.

    The export is built in a hidden temporary folder in ``base_dir`` and renamed into place, so a
    failure leaves no partial version and every earlier version untouched.
    """
    if vocabulary is not None and encoder is not None:
        raise ValueError("give vocabulary= or encoder=, not both")
    if input_signature is not None:
        from tfmec.export.signature import declare_inputs

        declare_inputs(model, input_signature)
    enc = as_encoder(model, vocabulary if vocabulary is not None else encoder)
    version = resolve_version(base_dir, version)
    final = os.path.join(base_dir, str(version))
    with atomic_directory(final) as tmp:
        write_saved_model(model, tmp, enc)
    return final


@tfmec_export("tfmec.export.load_signature")
def load_signature(path: str, signature: str = "serving_default"):
    """A signature of a SavedModel: a callable ``fn(**inputs) -> {"probability": [batch, 1]}``.

    The loaded object is kept alive on the returned function (``fn.saved_model``)."""
    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise KeyError(f"{path} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    fn.saved_model = loaded  # the concrete function needs the loaded object's resources
    return fn


@tfmec_export("tfmec.export.predict_saved_model")
def predict_saved_model(path_or_fn, inputs, signature: str = "serving_default",
                        batch_size: int = 8192) -> np.ndarray:
    """Probabilities ``float32[n]`` of a SavedModel signature on ``inputs``, in batches of ``batch_size``.

    ``path_or_fn`` is a version folder or a signature (:func:`load_signature`, ``loaded.signatures[...]``).
    ``inputs``: ``{name: array[n, ...]}`` named as the signature's inputs (or the one array of a
    one-input signature). Raises ``ValueError`` before calling for missing or unknown inputs, an
    input whose shape does not fit the signature (rank and declared dimensions), or inputs of
    different batch sizes; the signature itself refuses the same in-graph.
    """
    fn = load_signature(path_or_fn, signature) if isinstance(path_or_fn, (str, os.PathLike)) else path_or_fn
    specs = fn.structured_input_signature[1]
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise ValueError(f"the {signature!r} signature takes inputs {sorted(specs)}; give them as a dict")
        inputs = {next(iter(specs)): inputs}
    missing, unknown = [k for k in specs if k not in inputs], [k for k in inputs if k not in specs]
    if missing or unknown:
        raise ValueError(f"the {signature!r} signature takes inputs {sorted(specs)}; missing {missing}, "
                         f"unknown {unknown}")
    inputs = {k: (v if hasattr(v, "shape") else np.asarray(v, dtype=object if specs[k].dtype == tf.string else None))
              for k, v in inputs.items()}
    check_input_arrays(inputs, specs)

    def batch(start, stop):
        return fn(**{k: tf.constant(np.asarray(inputs[k][start:stop]), dtype=specs[k].dtype) for k in specs})[OUTPUT_KEY]

    return predict_in_batches(batch, inputs, batch_size)


__all__ = ["saved_model", "write_saved_model", "as_encoder", "load_signature", "predict_saved_model", "METADATA_FILE"]
