"""Small helpers shared by the tfmec layers (not public API)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras


def as_shape(shape) -> tuple:
    """A shape (TensorShape, tuple or list) as a tuple of ints / None."""
    return tuple(tf.TensorShape(shape).as_list())


def serialize_initializer(identifier):
    """Initializer identifier -> a JSON-able config (strings stay strings)."""
    if identifier is None or isinstance(identifier, str):
        return identifier
    if isinstance(identifier, dict):
        return identifier
    return keras.initializers.serialize(keras.initializers.get(identifier))


def make_initializer(identifier, seed: int | None, offset: int):
    """A *fresh* initializer instance for one weight.

    Keras 3 initializers with an integer seed return the same values on every call, so a layer
    that creates several weights from one initializer must derive one seed per weight: when
    ``seed`` is given (or the initializer carries its own integer seed) weight number ``offset``
    gets ``seed + offset``. Without any seed a new unseeded instance is built per weight, which
    follows ``keras.utils.set_random_seed``.
    """
    init = keras.initializers.get(identifier)
    config = init.get_config()
    if "seed" in config:
        base = seed if seed is not None else config.get("seed")
        if isinstance(base, int):
            config["seed"] = int(base) + int(offset)
        return init.__class__.from_config(config)
    return init.__class__.from_config(config) if config else init


def derive_seed(seed: int | None, index: int) -> int | None:
    """Seed number ``index`` derived from a model-level seed (None stays None)."""
    if seed is None:
        return None
    return (int(seed) * 7919 + 1009 * (int(index) + 1)) % (2**31 - 1)


def is_shape_list(shape) -> bool:
    """True when ``shape`` is a list of shapes (the input of a multi-input layer)."""
    if isinstance(shape, tf.TensorShape):
        return False
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and not isinstance(shape[0], (int, type(None)))


def map_out_of_range_ids(inputs, vocab_size: int, oov_id: int, layer_name: str):
    """Integer ids of any shape as int32, every id outside ``[0, vocab_size)`` replaced by ``oov_id``.

    Float ids are accepted (cast); other dtypes raise ``TypeError``. Int64 ids are range-checked
    before the cast to int32, so huge values cannot wrap back into the table.
    """
    ids = tf.convert_to_tensor(inputs)
    if not (ids.dtype.is_integer or ids.dtype.is_floating):
        raise TypeError(f"{layer_name}: ids must be integers, got dtype {ids.dtype.name}")
    if ids.dtype not in (tf.int32, tf.int64):
        ids = tf.cast(ids, tf.int64)
    valid = tf.logical_and(ids >= 0, ids < tf.constant(vocab_size, ids.dtype))
    return tf.cast(tf.where(valid, ids, tf.constant(oov_id, ids.dtype)), tf.int32)


def array_initializer(array: np.ndarray):
    """An initializer returning ``array`` (not serialised: the weights carry the values); a weight of
    another shape is refused."""

    def init(shape, dtype=None, **kwargs):
        if tuple(int(x) for x in shape) != tuple(array.shape):
            raise ValueError(f"initial value of shape {array.shape} does not fit a weight of shape {tuple(shape)}")
        return tf.constant(array, dtype=dtype)

    return init


def zero_mask(inputs, mask_zero: bool):
    """The mask ``keras.layers.Embedding(mask_zero=...)`` computes for ids ``inputs [...]``: None when
    ``mask_zero`` is False, else bool ``inputs != 0`` of the ids' own shape (``[batch]``, ``[batch, 1]``,
    ``[batch, length]``...). Symbolic inputs work in both modes (``keras.ops`` under Keras 3, whose
    KerasTensors refuse TensorFlow ops; ``tf`` under tf-keras)."""
    if not mask_zero:
        return None
    if IS_LEGACY_KERAS:
        return tf.not_equal(inputs, 0)
    return keras.ops.not_equal(inputs, 0)
