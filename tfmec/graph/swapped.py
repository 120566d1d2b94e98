"""Saving a subclassed model or custom layer whose sub-layers tfmec replaced.

A subclassed model is rebuilt from its config by its own ``__init__``, which creates the layers the
class wrote (a ``keras.layers.Embedding``), not the ones tfmec put in their place (a
``QuantizedEmbedding``), so a plain ``.keras`` round trip would fail to load the saved weights.
tfmec therefore records each replacement on the container (its *slot*: attribute name, list index or
dict key) and gives the object a class of its own, a subclass of the user's class that serialises as
``{"base": <the user's class and config>, "swaps": {slot: <the replacement layer>}}`` under the
registered name ``tfmec>SwappedLayer``. Loading (in any process that has imported tfmec) builds the
user's class from its config, puts the recorded layers back in their slots, and Keras then loads every
weight into the right layer. The user's class must be serialisable as Keras requires anyway
(registered with ``keras.saving.register_keras_serializable`` and constructible from its config).
"""
from __future__ import annotations

from tfmec.backend import keras

REGISTERED_NAME = "tfmec>SwappedLayer"
_SWAPS = "_tfmec_swaps"


def encode_slot(slot: tuple) -> str:
    """``("mlp", 0)`` -> ``"mlp/0"`` (index and key kinds kept: ``"#0"`` for an int index)."""
    return "/".join([slot[0]] + [f"#{s}" if isinstance(s, int) else str(s) for s in slot[1:]])


def decode_slot(text: str) -> tuple:
    parts = text.split("/")
    return tuple([parts[0]] + [int(p[1:]) if p.startswith("#") else p for p in parts[1:]])


def get_slot(obj, slot: tuple):
    value = getattr(obj, slot[0])
    return value if len(slot) == 1 else value[slot[1]]


class SwappedMixin:
    """The serialisation of a container with replaced sub-layers (module docstring)."""

    def get_config(self):
        base_cls = type(self)._tfmec_base_class
        base = {
            "module": base_cls.__module__,
            "class_name": base_cls.__name__,
            "config": base_cls.get_config(self),
            "registered_name": keras.saving.get_registered_name(base_cls),
        }
        swaps = {encode_slot(slot): keras.saving.serialize_keras_object(get_slot(self, slot))
                 for slot in getattr(self, _SWAPS, [])}
        return {"base": base, "swaps": swaps}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from tfmec.graph.swap import set_child

        base = keras.saving.deserialize_keras_object(config["base"], custom_objects=custom_objects)
        for text, layer_config in config.get("swaps", {}).items():
            slot = decode_slot(text)
            layer = keras.saving.deserialize_keras_object(layer_config, custom_objects=custom_objects)
            set_child(base, get_slot(base, slot), layer, build=False)
        return base


@keras.saving.register_keras_serializable(package="tfmec", name="SwappedLayer")
class SwappedLayer(SwappedMixin):
    """What ``tfmec>SwappedLayer`` names before any model was swapped in this process (loading only)."""


_classes: dict = {}


def swapped_class(cls):
    """The subclass of ``cls`` that serialises its replacements (created once per class)."""
    if issubclass(cls, SwappedMixin):
        return cls
    if cls not in _classes:
        sub = type(cls.__name__, (SwappedMixin, cls), {"_tfmec_base_class": cls, "__module__": cls.__module__,
                                                      "__doc__": cls.__doc__})
        keras.saving.register_keras_serializable(package="tfmec", name="SwappedLayer")(sub)
        _classes[cls] = sub
    return _classes[cls]


def mark_swapped(container, slot: tuple) -> None:
    """Records that ``container`` holds a replacement at ``slot`` and gives it its swapped class."""
    if isinstance(container, (keras.Sequential,)) or getattr(container, "_is_graph_network", False):
        return  # graphs serialise their layers themselves
    cls = swapped_class(type(container))
    if type(container) is not cls:
        object.__setattr__(container, "__class__", cls)
    slots = list(getattr(container, _SWAPS, []))
    if slot not in slots:
        slots.append(slot)
    object.__setattr__(container, _SWAPS, slots)


__all__ = ["SwappedMixin", "SwappedLayer", "swapped_class", "mark_swapped", "REGISTERED_NAME", "encode_slot",
           "decode_slot", "get_slot"]
