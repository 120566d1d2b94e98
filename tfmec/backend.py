"""The one place in tfmec that imports Keras.

tfmec runs on Keras 3 (the default of TensorFlow 2.16+) and on tf-keras (Keras 2), selected the way
TensorFlow itself selects it: ``TF_USE_LEGACY_KERAS=1`` in the environment picks tf-keras. Every
other module does ``from tfmec.backend import keras`` and writes its layer math with TensorFlow ops,
so the numbers are the same in both modes.
"""
from __future__ import annotations

import os

import tensorflow as tf  # noqa: F401  (imported first so Keras finds its backend)

from tfmec.api_export import export_value


class BackendError(RuntimeError):
    """Raised when the Keras that would be used cannot run tfmec (for example a JAX backend)."""


def legacy_keras_requested() -> bool:
    """True when ``TF_USE_LEGACY_KERAS`` asks for tf-keras (Keras 2)."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def _load_keras():
    if legacy_keras_requested():
        try:
            import tf_keras as _keras
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise BackendError(
                "TF_USE_LEGACY_KERAS=1 selects tf-keras, but the package 'tf-keras' is not installed. "
                "Install it with: pip install 'tf-keras~=2.21' (or unset TF_USE_LEGACY_KERAS for Keras 3)."
            ) from err
        return _keras, True
    requested = os.environ.get("KERAS_BACKEND", "").strip().lower()
    if requested and requested != "tensorflow":
        _refuse(requested)  # before importing Keras, which may fail on a missing jax/torch first
    import keras as _keras

    backend_name = _keras.backend.backend()
    if backend_name != "tensorflow":  # set in ~/.keras/keras.json
        _refuse(backend_name)
    return _keras, False


def _refuse(backend_name: str):
    raise BackendError(
        f"tfmec needs Keras with the TensorFlow backend, but the Keras backend is '{backend_name}'. "
        "Set KERAS_BACKEND=tensorflow (or unset it, and check ~/.keras/keras.json) before importing tfmec."
    )


keras, IS_LEGACY_KERAS = _load_keras()
KERAS_MODE = "tf-keras" if IS_LEGACY_KERAS else "keras3"
export_value("tfmec.keras", keras, doc="the Keras that tfmec uses: Keras 3, or tf-keras with TF_USE_LEGACY_KERAS=1")
export_value("tfmec.KERAS_MODE", KERAS_MODE, doc='"keras3" or "tf-keras": which Keras tfmec.keras is')


def register(cls=None, *, name=None):
    """Registers a layer or model class for (de)serialisation under the package name ``tfmec``.

    Usable as ``@register`` or ``@register(name="Other")``.
    """

    def wrap(inner):
        return keras.saving.register_keras_serializable(package="tfmec", name=name or inner.__name__)(inner)

    return wrap(cls) if cls is not None else wrap


def tf_variable(variable) -> tf.Variable:
    """The ``tf.Variable`` behind a Keras 3 variable (its ``.value``) or a tf-keras one (itself): what
    ``tf.gather`` needs for a sparse read (``ResourceGather``) and what ``tf.train.Checkpoint`` and
    ``tf.Module`` track. Raises ``TypeError`` for anything not backed by a ``tf.Variable``.

    Inside a Keras 3 layer's call under a mixed-precision policy ``.value`` is the variable cast to
    the compute dtype (a tensor); the ``tf.Variable`` is then its ``_value``."""
    inner = variable if isinstance(variable, tf.Variable) else getattr(variable, "value", None)
    if not isinstance(inner, tf.Variable):
        inner = getattr(variable, "_value", None)
    if not isinstance(inner, tf.Variable):
        raise TypeError(f"variable {getattr(variable, 'name', variable)!r} is not backed by a tf.Variable")
    return inner


def legacy_functional_get_config(model) -> dict:
    """tf-keras only: the graph config of a functional subclass of ``keras.Model`` built with
    ``inputs=``/``outputs=`` (tf-keras's own ``get_config`` returns only ``name`` for those)."""
    from tf_keras.src.engine import functional

    return functional.get_network_config(model)


def legacy_functional_from_config(cls, config: dict, custom_objects=None):
    """tf-keras only: rebuilds a functional subclass ``cls`` from :func:`legacy_functional_get_config`."""
    from tf_keras.src.engine import functional

    inputs, outputs, _ = functional.reconstruct_from_config(config, custom_objects)
    return cls(inputs=inputs, outputs=outputs, name=config.get("name"))


__all__ = ["keras", "IS_LEGACY_KERAS", "KERAS_MODE", "BackendError", "register", "legacy_keras_requested",
           "legacy_functional_get_config", "legacy_functional_from_config", "tf_variable"]
