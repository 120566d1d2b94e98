"""Small helpers shared by the tfmec layers (not public API)."""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Mapping

import numpy as np
import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras


#: The most rows a table layer takes: ids are int32 after :func:`map_out_of_range_ids`.
MAX_ROWS = 2**31 - 1

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


def map_out_of_range_ids(inputs, input_dim: int, oov_id: int, layer_name: str):
    """Integer ids of any shape as int32, every id outside ``[0, input_dim)`` replaced by ``oov_id``.

    Float ids are accepted (cast); other dtypes raise ``TypeError``. Int64 ids are range-checked
    before the cast to int32, so huge values cannot wrap back into the table.
    """
    ids = tf.convert_to_tensor(inputs)
    if not (ids.dtype.is_integer or ids.dtype.is_floating):
        raise TypeError(f"{layer_name}: ids must be integers, got dtype {ids.dtype.name}")
    if ids.dtype not in (tf.int32, tf.int64):
        ids = tf.cast(ids, tf.int64)
    valid = tf.logical_and(ids >= 0, ids < tf.constant(input_dim, ids.dtype))
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


def same_codebooks(a, b) -> bool:
    """True when two fields' codes decode with the same codebooks and projection (a sharing group).

    ``a`` and ``b`` are any objects with ``codebooks`` (``float32[M, K, d / M]``) and ``projection``
    (``float32[d, d]`` or None) attributes, such as :class:`tfmec.mec.codes.FieldCodes`; the layers
    need this check without importing :mod:`tfmec.mec`, so it lives here and ``tfmec.mec.codes``
    re-exports it.
    """
    if a.codebooks is not b.codebooks and not np.array_equal(a.codebooks, b.codebooks):
        return False
    if (a.projection is None) != (b.projection is None):
        return False
    return a.projection is None or np.array_equal(a.projection, b.projection)


def rename_kwargs(kwargs: Mapping, renames: Mapping[str, str], owner: str, warn: bool = True,
                  stacklevel: int = 3) -> dict:
    """``kwargs`` with each deprecated name of ``renames`` (``{old: new}``) replaced by its new name.

    Args:
        kwargs: keyword arguments, or a layer config (``get_config``'s dict, perhaps from an old file).
        renames: ``{old name: new name}``.
        owner: the function or class named in the messages.
        warn: one ``DeprecationWarning`` per old name found, naming the new one (False: rename silently,
            for ``from_config`` of a config saved before the rename, which the user cannot change).
        stacklevel: ``warnings.warn``'s (3: the caller of a function decorated with :func:`renamed_kwargs`).

    Returns:
        A new dict (``kwargs`` is not changed).

    Raises:
        TypeError: an old name and its new name are both given.
    """
    out = dict(kwargs)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(f"{owner}: got both {old!r} and {new!r}; {old!r} is the deprecated name of {new!r}, "
                            f"pass {new!r} only")
        if warn:
            warnings.warn(f"{owner}: the keyword {old!r} is deprecated and will be removed in the next release; "
                          f"use {new!r}", DeprecationWarning, stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


def renamed_kwargs(renames: Mapping[str, str], owner: str | None = None):
    """Decorator: a function or class accepts the old keyword names ``renames`` (``{old: new}``) for one
    release.

    A call with an old name emits a ``DeprecationWarning`` naming the new one and runs as if the new name
    had been given; the old and the new name together raise ``TypeError``. The decorated function keeps
    its signature (``inspect.signature`` and ``getfullargspec``, which Keras 3 reads on constructors).

    On a class (a Keras layer), the constructor is wrapped so (with the renames of decorated base classes
    too, under the class's own name), ``from_config`` renames the old keys of a config *silently* (a
    ``.keras`` file saved before the rename loads unchanged; ``get_config`` writes the new names only),
    and reading an old attribute name (``layer.vocab_size``) warns and returns the new one. Old names are
    served by ``__getattr__``, not properties, so Keras's saving, which reads every attribute that
    ``dir()`` lists, never trips the warning.

    Example::

        @register
        @renamed_kwargs({"vocab_size": "input_dim"})
        class QuantizedEmbedding(keras.layers.Layer): ...

        QuantizedEmbedding(vocab_size=10, ...)   # DeprecationWarning: use 'input_dim'
    """
    renames = dict(renames)

    def decorate(target):
        if isinstance(target, type):
            return _renamed_class(target, renames, owner or target.__name__)
        return _renamed_function(target, renames, owner or target.__qualname__)

    return decorate


def _renamed_function(func, renames: dict, owner: str):
    """``func`` accepting the old names of ``renames`` (see :func:`renamed_kwargs`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if kwargs and not renames.keys().isdisjoint(kwargs):
            kwargs = rename_kwargs(kwargs, renames, owner)
        return func(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(func)
    wrapper.renamed_kwargs = dict(renames)
    return wrapper


def _renamed_class(cls, renames: dict, owner: str):
    """``cls`` with its constructor, ``from_config`` and old attribute names renamed (see
    :func:`renamed_kwargs`)."""
    inherited = {}
    for base in reversed(cls.__mro__[1:]):
        inherited.update(getattr(base.__dict__.get("__init__"), "renamed_kwargs", {}))
    renames = {**inherited, **renames}
    init = cls.__dict__.get("__init__")
    if init is None:
        raise TypeError(f"renamed_kwargs: {cls.__name__} defines no __init__ of its own to rename the arguments of")
    cls.__init__ = _renamed_function(init, renames, owner)
    own_from_config = cls.__dict__.get("from_config")
    own_getattr = cls.__dict__.get("__getattr__")

    def from_config(klass, config, *args, **kwargs):
        config = rename_kwargs(config, renames, klass.__name__, warn=False)
        if own_from_config is not None:
            return own_from_config.__func__(klass, config, *args, **kwargs)
        return super(cls, klass).from_config(config, *args, **kwargs)

    from_config.__doc__ = (f"A layer from ``get_config``'s dict; the keys of configs saved before the rename "
                           f"({', '.join(f'{o} -> {n}' for o, n in renames.items())}) are accepted silently.")
    cls.from_config = classmethod(from_config)

    def __getattr__(self, name):
        new = renames.get(name)
        if new is not None:
            warnings.warn(f"{type(self).__name__}.{name} is deprecated and will be removed in the next release; "
                          f"use .{new}", DeprecationWarning, stacklevel=2)
            return getattr(self, new)
        if own_getattr is not None:
            return own_getattr(self, name)
        parent = getattr(super(cls, self), "__getattr__", None)
        if parent is not None:
            return parent(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    cls.__getattr__ = __getattr__
    return cls
