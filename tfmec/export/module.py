"""The exported object: a ``tf.Module`` around a trained Keras model with two serving signatures.

* ``ids``: ``{field.name: int32[batch] (categorical) | float32[batch] (numeric, standardised)}`` ->
  ``{"probability": float32[batch, 1]}``: the model's own inputs (with a vocabulary, an id outside
  ``[0, vocab_size)`` is answered as the OOV id 0);
* ``serving_default``: ``{field.name: tf.string[batch] | tf.float32[batch]}`` raw values ->
  :class:`~tfmec.export.preprocessing.RawPreprocessor` -> the model -> ``{"probability": ...}``.

The module tracks the model's weights as plain ``tf.Variable`` objects (not the Keras model, whose
optimizer state would be saved too), so the SavedModel holds the variables at their stored dtypes
(bit-packed ``uint8`` MEC codes stay packed) and the graph reads them; nothing is folded into
constants. Works with Keras 3 and tf-keras models alike.
"""
from __future__ import annotations

import tensorflow as tf

OUTPUT_KEY = "probability"


def tf_variables(model) -> list:
    """The ``tf.Variable`` behind every weight of a Keras 3 or tf-keras model."""
    from tfmec.backend import tf_variable

    return [tf_variable(w) for w in model.weights]


def variable_dict(model) -> dict:
    """``{weight path: tf.Variable}`` of a model (``"embedding_C1.codes"``-style keys, unique), so the
    SavedModel's checkpoint names each variable after its weight."""
    out = {}
    for w, v in zip(model.weights, tf_variables(model)):
        key = (getattr(w, "path", None) or w.name).split(":")[0].replace("/", ".")
        base, i = key, 1
        while key in out:
            key, i = f"{base}_{i}", i + 1
        out[key] = v
    return out


def model_input_specs(model) -> dict:
    """``{name: tf.TensorSpec([None], dtype, name=name)}`` of a model with one ``[batch]`` input per field.

    Raises ``ValueError`` for a model whose inputs are not rank-1 named tensors.
    """
    specs = {}
    for t in model.inputs:
        name = t.name.split(":")[0]
        shape = tuple(t.shape)
        if len(shape) != 1:
            raise ValueError(f"export needs one [batch] input per field; input {name!r} has shape {shape}")
        specs[name] = tf.TensorSpec([None], tf.as_dtype(t.dtype), name=name)
    return specs


def check_schema_matches(model_specs: dict, schema) -> None:
    """Raises ``ValueError`` when the schema's fields are not the model's inputs (names and dtypes)."""
    want = {f.name: (tf.int32 if f.is_categorical else tf.float32) for f in schema}
    have = {name: spec.dtype for name, spec in model_specs.items()}
    if set(want) != set(have):
        raise ValueError(f"the encoder's fields {sorted(want)} are not the model's inputs {sorted(have)}")
    bad = [(n, have[n].name, want[n].name) for n in want if have[n] != want[n]]
    if bad:
        raise ValueError(f"model inputs with unexpected dtypes (name, model, schema): {bad}")


def oov_sizes(schema, specs: dict) -> dict:
    """``{field: vocab_size}`` of the schema's categorical fields that are integer model inputs."""
    return {f.name: int(f.vocab_size) for f in schema.categorical
            if f.vocab_size and f.name in specs and specs[f.name].dtype.is_integer}


def map_unknown_ids(inputs: dict, vocab_sizes: dict) -> dict:
    """``inputs`` with every id outside ``[0, vocab_size)`` of a field in ``vocab_sizes`` replaced by the
    OOV id 0 (``int[batch]`` each), so the ``ids`` signature answers an unknown id like an unseen value
    instead of failing inside a gather (or, for a negative id, reading another row)."""
    out = dict(inputs)
    for name, size in vocab_sizes.items():
        ids = inputs[name]
        valid = tf.logical_and(ids >= 0, ids < tf.constant(size, ids.dtype))
        out[name] = tf.where(valid, ids, tf.zeros_like(ids))
    return out


class ServingModule(tf.Module):
    """A Keras CTR model plus (optionally) its preprocessing, with the ``ids`` and ``serving_default``
    signatures (see the module docstring).

    Args:
        model: a Keras model ``{field: [batch]} -> [batch, 1]`` probability (every tfmec model).
        preprocessor: a :class:`~tfmec.export.preprocessing.RawPreprocessor`, or None: then
            ``serving_default`` is the ``ids`` signature.
    """

    def __init__(self, model, preprocessor=None):
        super().__init__(name="tfmec_serving")
        self.model_variables = variable_dict(model)
        self.preprocessor = preprocessor
        specs = model_input_specs(model)
        if preprocessor is not None:
            check_schema_matches(specs, preprocessor.schema)

        # the model's graph lives in ONE function that both signatures call (not traced twice: a
        # SavedModel stores each traced graph in full, and a MEC model's graph is large)
        @tf.function(input_signature=[specs], autograph=False)
        def predict(inputs):
            probability = model(inputs, training=False)
            return {OUTPUT_KEY: tf.cast(tf.reshape(probability, [-1, 1]), tf.float32)}

        sizes = oov_sizes(preprocessor.schema, specs) if preprocessor is not None else {}

        def predict_ids(**inputs):
            return predict(map_unknown_ids(inputs, sizes))

        self.ids = tf.function(predict_ids, autograph=False).get_concrete_function(**specs)
        if preprocessor is None:
            self.serving_default = self.ids
        else:
            def predict_raw(**raw):
                return predict(preprocessor(raw))

            self.serving_default = tf.function(predict_raw, autograph=False).get_concrete_function(
                **preprocessor.input_specs())

    @property
    def signatures(self) -> dict:
        """``{"serving_default": ConcreteFunction, "ids": ConcreteFunction}`` for ``tf.saved_model.save``."""
        return {"serving_default": self.serving_default, "ids": self.ids}


__all__ = ["ServingModule", "map_unknown_ids", "oov_sizes", "tf_variables", "variable_dict", "model_input_specs",
           "check_schema_matches", "OUTPUT_KEY"]
