"""The exported object: a ``tf.Module`` around a trained Keras model with two serving signatures.

* ``ids``: the model's own inputs as it declares them (:func:`~tfmec.export.signature.input_specs`:
  any structure, ``[batch]`` / ``[batch, 1]`` / ``[batch, length]``, int ids, strings or floats; for a
  tfmec model ``{field.name: int32[batch] | float32[batch]}``) -> ``{"probability": float32[batch, 1]}``
  (with a vocabulary, an id outside ``[0, vocab_size)`` is answered as the OOV id 0);
* ``serving_default``: with an encoder, ``{field.name: tf.string[batch] | tf.float32[batch]}`` raw
  values -> :class:`~tfmec.export.preprocessing.RawPreprocessor` -> the model; without one, the same
  function as ``ids`` (a model with ``StringLookup`` / ``IntegerLookup`` / ``Hashing`` layers inside
  then takes raw values itself).

Both signatures refuse, in-graph, an input whose shape does not fit the signature or inputs of
different batch sizes (:func:`~tfmec.export.signature.enforce_shapes`).

The module tracks the model's weights as plain ``tf.Variable`` objects and the TensorFlow resources
of its layers (the lookup tables of ``StringLookup`` / ``IntegerLookup`` / ``TextVectorization``,
with their vocabulary files as assets), not the Keras model, whose optimizer state would be saved
too; so the SavedModel holds the variables at their stored dtypes (bit-packed ``uint8`` MEC codes
stay packed) and the graph reads them; nothing is folded into constants. Works with Keras 3 and
tf-keras models alike.
"""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import export_value, tfmec_export
from tfmec.export.signature import describe_shape, enforce_shapes, input_specs, model_caller, single_output

OUTPUT_KEY = "probability"
export_value("tfmec.export.OUTPUT_KEY", OUTPUT_KEY, doc="the output name of the exported serving signatures")


def tf_variables(model) -> list:
    """The ``tf.Variable`` behind every weight of a Keras 3 or tf-keras model (a tf-keras lookup's
    table handler, also listed among the weights, is not a variable: its table is tracked apart)."""
    from tfmec.backend import tf_variable
    from tfmec.evaluation import array_weights

    return [tf_variable(w) for w in array_weights(model.weights)]


def variable_dict(model) -> dict:
    """``{weight path: tf.Variable}`` of a model (``"embedding_C1.codes"``-style keys, unique), so the
    SavedModel's checkpoint names each variable after its weight."""
    out = {}
    from tfmec.evaluation import array_weights

    for w, v in zip(array_weights(model.weights), tf_variables(model)):
        key = (getattr(w, "path", None) or w.name).split(":")[0].replace("/", ".")
        base, i = key, 1
        while key in out:
            key, i = f"{base}_{i}", i + 1
        out[key] = v
    return out


def model_input_specs(model) -> dict:
    """``{name: tf.TensorSpec([None, *declared], dtype, name=name)}`` of the model's inputs as it declares
    them (see :func:`tfmec.export.signature.input_specs`)."""
    return input_specs(model)


def model_resources(model) -> list:
    """The TensorFlow resources held by the model's layers, nested models included: the lookup tables of
    ``StringLookup`` / ``IntegerLookup`` / ``TextVectorization`` (a SavedModel must track every resource
    its functions use, or saving fails with an "untracked resource" error)."""
    layers = (model._flatten_layers(include_self=True, recursive=True) if hasattr(model, "_flatten_layers")
              else [model, *getattr(model, "layers", [])])
    out, seen = [], set()
    for layer in layers:
        for value in list(vars(layer).values()):
            items = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, tf.saved_model.experimental.TrackableResource) and id(item) not in seen:
                    seen.add(id(item))
                    out.append(item)
    return out


def check_schema_matches(model_specs: dict, schema) -> None:
    """Raises ``ValueError`` when the schema's fields are not the model's inputs (names, dtypes, and
    shapes ``[batch]`` or ``[batch, 1]``; ``[batch, max_length]`` or ``[batch, None]`` for a
    multi-valued field)."""
    want = {f.name: (tf.int32 if f.is_categorical else tf.float32) for f in schema}
    have = {name: spec.dtype for name, spec in model_specs.items()}
    if set(want) != set(have):
        raise ValueError(f"the encoder's fields {sorted(want)} are not the model's inputs {sorted(have)}")
    bad = [(n, have[n].name, want[n].name) for n in want if have[n] != want[n]]
    if bad:
        raise ValueError(f"model inputs with unexpected dtypes (name, model, schema): {bad}")
    lists = {f.name: f.max_length for f in schema.lists}
    shapes = {n: describe_shape(s) for n, s in model_specs.items()
              if n not in lists and s.shape.as_list() not in ([None], [None, 1])}
    if shapes:
        raise ValueError(f"with an encoder, every model input must be [batch] or [batch, 1]; these are not: {shapes}")
    bad = {n: describe_shape(model_specs[n]) for n, length in lists.items()
           if model_specs[n].shape.as_list() not in ([None, length], [None, None])}
    if bad:
        raise ValueError(f"multi-valued fields must be model inputs [batch, max_length] or [batch, None] "
                         f"({ {n: f'[batch, {lists[n]}]' for n in bad} }); the model has {bad}")


def fit_to_specs(inputs: dict, specs: dict) -> dict:
    """``[batch]`` tensors reshaped to the ``[batch, 1]`` the model declares where it does (a
    multi-valued field's ``[batch, L]`` is kept)."""
    return {name: (tf.expand_dims(x, -1) if specs[name].shape.rank == 2 and x.shape.rank == 1 else x)
            for name, x in inputs.items()}


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


@tfmec_export("tfmec.export.ServingModule")
class ServingModule(tf.Module):
    """A Keras CTR model plus (optionally) its preprocessing, with the ``ids`` and ``serving_default``
    signatures (see the module docstring).

    Args:
        model: a Keras model with declared inputs (any structure and shapes, see
            :func:`~tfmec.export.signature.input_specs`) and one output, the probability
            ``[batch]`` or ``[batch, 1]`` (every tfmec model).
        preprocessor: a :class:`~tfmec.export.preprocessing.RawPreprocessor`, or None: then
            ``serving_default`` is the ``ids`` signature.
    """

    def __init__(self, model, preprocessor=None):
        super().__init__(name="tfmec_serving")
        specs = model_input_specs(model)
        single_output(model)
        self.model_variables = variable_dict(model)
        self.model_resources = model_resources(model)
        self.preprocessor = preprocessor
        if preprocessor is not None:
            check_schema_matches(specs, preprocessor.schema)
        call = model_caller(model)

        # the model's graph lives in ONE function that both signatures call (not traced twice: a
        # SavedModel stores each traced graph in full, and a MEC model's graph is large)
        @tf.function(input_signature=[specs], autograph=False)
        def predict(inputs):
            probability = call(inputs)
            return {OUTPUT_KEY: tf.cast(tf.reshape(probability, [-1, 1]), tf.float32)}

        sizes = oov_sizes(preprocessor.schema, specs) if preprocessor is not None else {}

        def predict_ids(**inputs):
            return predict(map_unknown_ids(enforce_shapes(inputs, specs), sizes))

        self.ids = tf.function(predict_ids, autograph=False).get_concrete_function(**specs)
        if preprocessor is None:
            self.serving_default = self.ids
        else:
            raw_specs = preprocessor.input_specs()

            def predict_raw(**raw):
                return predict(fit_to_specs(preprocessor(enforce_shapes(raw, raw_specs)), specs))

            self.serving_default = tf.function(predict_raw, autograph=False).get_concrete_function(**raw_specs)

    @property
    def signatures(self) -> dict:
        """``{"serving_default": ConcreteFunction, "ids": ConcreteFunction}`` for ``tf.saved_model.save``."""
        return {"serving_default": self.serving_default, "ids": self.ids}


__all__ = ["ServingModule", "map_unknown_ids", "oov_sizes", "tf_variables", "variable_dict", "model_input_specs",
           "model_resources", "check_schema_matches", "fit_to_specs", "OUTPUT_KEY"]
