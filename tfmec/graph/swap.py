"""The clone-and-swap of tfmec: a copy of any Keras model with some layers replaced.

``swap_layers(model, replace)`` returns a new model computing what ``model`` computes, where every
layer ``L`` for which ``replace(L)`` returns something is replaced by that (a layer, or for a
functional graph any callable), and every other layer is a fresh copy holding the same weights
and, for lookup layers (``StringLookup``, ``IntegerLookup``), the same vocabulary. The input model
is never modified (unless ``inplace=True``). A layer called from several places (a shared table) is
replaced once and stays shared: ``replace`` is asked once per layer object.

How each kind of container is copied:

* functional models (``keras.Model(inputs, outputs)``, functional subclasses such as ``MECModel``)
  and ``Sequential`` models: the graph is replayed (:func:`tfmec.graph.functional.rebuild_functional`)
  with each layer copied or replaced; nested models are handled recursively;
* subclassed models and custom layers (layers held as attributes, in lists or dicts): a new
  instance is constructed from the layer's config, its sub-layers are paired with the original's (same
  classes, same order), each pair's state is transferred (weights, vocabularies) and replaced
  sub-layers are set in place of the new instance's own. Under Keras 3 the automatic config of a
  subclassed ``keras.Model`` holds the constructor's defaults, not the arguments it was called with,
  so such a model needs its own ``get_config`` (or a constructor without arguments), or
  ``inplace=True``; the error says so.

MEC (:func:`tfmec.mec.compress_embeddings`), AFM (:func:`tfmec.afm.compress`), int8
(:func:`tfmec.baselines.quantize_embeddings`) and hashing (:func:`tfmec.baselines.hash_embeddings`)
all rewrite models through :func:`swap_layers`.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable

import numpy as np

from tfmec.backend import IS_LEGACY_KERAS, keras
from tfmec.graph.functional import rebuild_functional
from tfmec.graph.walk import child_layers


class CopyError(ValueError):
    """A layer or model that tfmec cannot copy; the message says what to change."""


def is_functional(model) -> bool:
    """True for a functional Keras model or a ``Sequential`` with a graph (built with an input)."""
    try:
        return isinstance(model, keras.Model) and bool(model.inputs) and model.input is not None
    except Exception:  # noqa: BLE001 - subclassed models raise on .inputs / .input
        return False


def is_sequential(layer) -> bool:
    return isinstance(layer, keras.Sequential)


def _lookup_types() -> tuple:
    names = ("StringLookup", "IntegerLookup")
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


def transfer_state(old, new) -> None:
    """Gives ``new`` (a fresh layer of ``old``'s class and config) ``old``'s build, weights and
    vocabulary. Leaf layers only (sub-layers are paired by the caller)."""
    if isinstance(old, _lookup_types()):
        if getattr(old, "output_mode", "int") == "int" and not _same_vocabulary(old, new):
            new.set_vocabulary(old.get_vocabulary(include_special_tokens=False))
    weights = old.get_weights()
    if not weights:
        return
    if not new.built:
        build_config = old.get_build_config() if hasattr(old, "get_build_config") else None
        if not build_config:
            raise CopyError(f"layer {old.name!r} ({type(old).__name__}) holds weights but records no build shape; "
                            f"tfmec cannot copy it")
        new.build_from_config(build_config)
        if IS_LEGACY_KERAS and getattr(new, "_build_input_shape", None) is None:
            # tf-keras records the build shape in Layer.build; a build() not calling it would leave the copy
            # without one, and a copy of the copy impossible
            keras.layers.Layer.build(new, build_config.get("input_shape"))
    new.set_weights(weights)


def _same_vocabulary(a, b) -> bool:
    try:
        return list(a.get_vocabulary()) == list(b.get_vocabulary())
    except Exception:  # noqa: BLE001 - an uninitialised table
        return False


def _is_auto_config_untrustworthy(layer, cls=None) -> bool:
    """Keras 3 records a subclassed Model's constructor defaults, not its arguments (Model.__new__
    does not pass them on), so its automatic config is only right for a constructor without
    parameters."""
    cls = cls or type(layer)
    if IS_LEGACY_KERAS or not issubclass(cls, keras.Model):
        return False
    if "get_config" in _own_methods(cls):
        return False
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return bool(params)


def _own_methods(cls) -> set:
    names = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith(("keras.", "tf_keras.", "tensorflow.")) or klass is object:
            break
        names.update(vars(klass))
    return names


def copy_hint(layer) -> str:
    cls = type(layer).__name__
    return (f"tfmec copies {cls!r} by constructing a new one from its config; give the class a get_config that "
            f"returns its constructor arguments (two lines:\n"
            f"    def get_config(self):\n"
            f"        return {{**super().get_config(), \"embedding_dim\": self.embedding_dim}}  # every __init__ argument\n"
            f"and let __init__ accept **kwargs), or pass inplace=True to swap the layers of this very object "
            f"(as keras's Model.quantize does)")


def new_instance(layer):
    """A new, unbuilt layer of ``layer``'s class constructed from its config (``CopyError`` naming the
    change to make when that is impossible or would be wrong). A container whose sub-layers tfmec
    replaced before (:mod:`tfmec.graph.swapped`) comes back with fresh copies of the replacements."""
    from tfmec.graph.swapped import SwappedMixin, get_slot

    if not isinstance(layer, SwappedMixin):
        return _construct(layer, type(layer))
    new = _construct(layer, type(layer)._tfmec_base_class)
    for slot in getattr(layer, "_tfmec_swaps", []):
        current = get_slot(layer, slot)
        fresh = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(current))
        set_child(new, get_slot(new, slot), fresh, build=False)
    return new


def _construct(layer, cls):
    new = _construct_unnamed(layer, cls)
    keep_name(layer, new)
    return new


def keep_name(old, new) -> None:
    """Gives ``new`` the name of ``old`` (automatic configs and sub-layers created by a constructor get
    fresh automatic names, which would change every path of the copy)."""
    if new.name != old.name:
        object.__setattr__(new, "_name" if IS_LEGACY_KERAS else "name", old.name)


def _construct_unnamed(layer, cls):
    if _is_auto_config_untrustworthy(layer, cls):
        raise CopyError(f"{cls.__name__!r} is a subclassed keras.Model whose constructor takes arguments and "
                        f"which defines no get_config, so Keras cannot tell the arguments it was built with. "
                        + copy_hint(layer))
    if not IS_LEGACY_KERAS and issubclass(cls, keras.Model) and "get_config" not in _own_methods(cls):
        try:
            return cls()
        except Exception as err:  # noqa: BLE001
            raise CopyError(f"cannot construct a new {cls.__name__!r}: {err}. " + copy_hint(layer)) from err
    try:
        return cls.from_config(cls.get_config(layer))
    except Exception as err:  # noqa: BLE001 - any failure of user code or Keras
        raise CopyError(f"cannot copy layer {layer.name!r} ({cls.__name__}) from its config: "
                        f"{type(err).__name__}: {err}. " + copy_hint(layer)) from err


class _Swapper:
    def __init__(self, replace: Callable, inplace: bool = False):
        answers: dict = {}

        def ask(layer):  # replace is asked once per layer object, whoever asks (pairing, rebuild checks)
            if id(layer) not in answers:
                answers[id(layer)] = replace(layer)
            return answers[id(layer)]

        self.replace = ask
        self.inplace = inplace
        self.memo: dict = {}
        self.replaced: dict = {}  # id(old) -> new, only the replaced layers

    # ------------------------------------------------------------------ entry points
    def layer(self, old):
        """The copy (or replacement) of ``old``, memoised by identity."""
        key = id(old)
        if key in self.memo:
            return self.memo[key]
        if not isinstance(old, keras.layers.Layer):
            return old  # a stateless operation of a Keras 3 graph (e.g. the NotEqual of a mask)
        new = self.replace(old)
        if new is not None:
            self.replaced[key] = new
        elif is_sequential(old):
            new = self._sequential(old)
        elif is_functional(old):
            new = self._functional(old)
        elif child_layers(old):
            new = self._container(old)
        else:
            new = new_instance(old)
            transfer_state(old, new)
        self.memo[key] = new
        return new

    # ------------------------------------------------------------------ containers
    def _functional(self, model):
        new = rebuild_functional(model, clone_function=self.layer)
        return keep_class(model, new)

    def _sequential(self, model):
        layers = [self.layer(layer) for layer in child_layers(model)]
        not_layers = [type(x).__name__ for x in layers if not isinstance(x, keras.layers.Layer)]
        if not_layers:
            raise CopyError(f"Sequential {model.name!r}: a replacement of type {not_layers[0]} is not a layer")
        inputs = []
        if is_functional(model):
            x = model.inputs[0]
            inputs = [keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype)]
        return keras.Sequential(inputs + layers, name=model.name)

    def _container(self, old):
        """A subclassed model / custom layer: construct a new one, pair sub-layers, transfer or replace."""
        new = new_instance(old)
        self.memo[id(old)] = new
        self._pair(old, new)
        return new

    def _pair(self, old, new):
        """Gives ``new`` (a fresh instance of ``old``'s class) ``old``'s state, sub-layer by sub-layer;
        sub-layers are paired by where their parent holds them (attribute name, list index, dict key)."""
        old_slots, new_slots = child_slots(old), child_slots(new)
        if set(old_slots) != set(new_slots) and getattr(old, "built", False) and not getattr(new, "built", True):
            build_like(new, old)  # a layer that creates its sub-layers in build() (e.g. tfrs's Cross)
            new_slots = child_slots(new)
        if set(old_slots) != set(new_slots) or any(type(old_slots[k]) is not type(new_slots[k])
                                                     and self.memo.get(id(old_slots[k])) is None
                                                     and not _replaced_kind(old_slots[k], new_slots[k])
                                                     for k in old_slots):
            raise CopyError(
                f"a new {type(old).__name__!r} built from its config holds the sub-layers "
                f"{ {'.'.join(map(str, k)): type(c).__name__ for k, c in new_slots.items()} }, the original "
                f"{ {'.'.join(map(str, k)): type(c).__name__ for k, c in old_slots.items()} }: tfmec cannot pair "
                f"them. " + copy_hint(old))
        for slot, o in old_slots.items():
            n = new_slots[slot]
            keep_name(o, n)
            r = self.memo.get(id(o))
            if r is None:
                r = self.replace(o)
                if r is not None:
                    self.replaced[id(o)] = r
                    self.memo[id(o)] = r
            if r is None and (is_sequential(o) or is_functional(o) or type(o) is not type(n)):
                r = self.layer(o)
            if r is not None:
                if not isinstance(r, keras.layers.Layer):
                    raise CopyError(f"{o.name!r} inside {type(old).__name__!r} can only be replaced by a layer, not "
                                    f"a {type(r).__name__} (a call with extra arguments needs a functional model)")
                set_child(new, n, r)
            elif child_layers(o):
                self.memo[id(o)] = n
                self._pair(o, n)
            else:
                transfer_state(o, n)
                self.memo[id(o)] = n
        _transfer_own_weights(old, new)
        _copy_build_record(old, new)

    def _inplace_children(self, layer):
        for child in child_layers(layer):
            replacement = self.replace(child) if id(child) not in self.memo else self.memo[id(child)]
            if replacement is not None:
                self.memo[id(child)] = replacement
                self.replaced.setdefault(id(child), replacement)
                set_child(layer, child, replacement)
            elif needs_rebuild(child, self):
                set_child(layer, child, self.layer(child))
            else:
                self._inplace_children(child)


def _replaced_kind(old, new) -> bool:
    """True when ``old`` stands where the class puts a layer of another kind because tfmec replaced it
    before (a model compressed before, copied again): a tfmec table, a replaced Dense, a container with
    replacements of its own. The slot is filled by copying ``old``."""
    from tfmec.graph.swapped import SwappedMixin

    if isinstance(old, SwappedMixin):
        return issubclass(type(old), type(new))
    return type(old).__module__.startswith("tfmec.") and isinstance(new, keras.layers.Layer)


def child_slots(layer) -> dict:
    """``{slot: sub-layer}`` where a slot says where ``layer`` holds it: ``(attribute,)``,
    ``(attribute, index)`` or ``(attribute, key)``; Keras's own tracking stores are skipped."""
    slots = {}
    for name, value in list(vars(layer).items()):
        if name.startswith(_INTERNAL_PREFIXES) or name in _INTERNAL_NAMES:
            continue
        if isinstance(value, keras.layers.Layer):
            slots[(name,)] = value
        elif isinstance(value, (list, tuple)) or _is_list_wrapper(value):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    slots[(name, i)] = item
        elif isinstance(value, dict) or _is_dict_wrapper(value):
            for k, item in value.items():
                if isinstance(item, keras.layers.Layer):
                    slots[(name, k)] = item
    return slots


def _copy_build_record(old, new) -> None:
    """Marks ``new`` built as ``old`` is and copies the input shapes Keras recorded when ``old`` was
    built (saved as its ``build_config``, which loading needs to create the weights before filling them)."""
    for attr in ("_build_shapes_dict", "_build_input_shape"):
        if getattr(old, attr, None) is not None:
            object.__setattr__(new, attr, getattr(old, attr))
    new.built = old.built


def needs_rebuild(layer, swapper) -> bool:
    """True when a functional / Sequential ``layer`` contains a layer to replace (its graph must be
    replayed: a graph cannot be edited in place)."""
    if not (is_sequential(layer) or is_functional(layer)):
        return False
    from tfmec.graph.walk import iter_layers

    return any(swapper.replace(ref.layer) is not None for ref in iter_layers(layer))


def own_weights(layer) -> list:
    """The weights ``layer`` creates itself, not through its sub-layers."""
    inner = {id(w) for child in child_layers(layer) for w in child.weights}
    return [w for w in layer.weights if id(w) not in inner]


def _transfer_own_weights(old, new) -> None:
    """Variables a container creates itself (not through sub-layers): copied by position."""
    if old is new:
        return
    own_old = own_weights(old)
    if not own_old:
        return
    own_new = own_weights(new)
    if len(own_new) != len(own_old):
        raise CopyError(f"{type(old).__name__!r} creates its own variables in build(); tfmec cannot rebuild them. "
                        + copy_hint(old))
    for a, b in zip(own_old, own_new):
        b.assign(np.asarray(a.numpy()))


_INTERNAL_PREFIXES = ("__", "_self_", "_keras", "_inbound", "_outbound", "_tracker", "_trackable")
_INTERNAL_NAMES = {"_layers", "_metrics", "_loss_ids", "_losses", "_functional", "_compiled_trainable_state"}


@contextlib.contextmanager
def _unlocked(layer):
    tracker = getattr(layer, "_tracker", None)
    locked = bool(getattr(tracker, "locked", False))
    if locked:
        tracker.unlock()
    try:
        yield
    finally:
        if locked:
            tracker.lock()


def build_like(new, old) -> None:
    """Builds an unbuilt replacement ``new`` with the input shape ``old`` was built with, so that its
    weights exist (and count in its parent's ``weights``) before the model is next called."""
    if getattr(new, "built", True) or not getattr(old, "built", False):
        return
    config = old.get_build_config() if hasattr(old, "get_build_config") else None
    if config:
        new.build_from_config(config)


def set_child(parent, old, new, build: bool = True) -> None:
    """Replaces sub-layer ``old`` of ``parent`` by ``new`` wherever ``parent`` holds it (an attribute,
    a list or tuple element, a dict value), keeping Keras's tracking right (``old``'s weights leave
    ``parent.weights``, ``new``'s join; with ``build`` an unbuilt ``new`` is built like ``old``) and
    recording the slot so that ``parent`` still saves and loads (:mod:`tfmec.graph.swapped`)."""
    from tfmec.graph.swapped import mark_swapped

    if isinstance(parent, keras.Sequential):
        raise CopyError(f"Sequential {parent.name!r}: layers are replaced by rebuilding it")
    if build and isinstance(new, keras.layers.Layer):
        build_like(new, old)
    slots = []
    with _unlocked(parent):
        for name, value in list(vars(parent).items()):
            if name.startswith(_INTERNAL_PREFIXES) or name in _INTERNAL_NAMES:
                continue  # Keras's own tracking stores (fixed by _untrack below)
            if value is old:
                object.__getattribute__(parent, "__delattr__")(name)
                setattr(parent, name, new)
                slots.append((name,))
            elif isinstance(value, (list, tuple)) or _is_list_wrapper(value):
                items = list(value)
                if any(item is old for item in items):
                    slots += [(name, i) for i, item in enumerate(items) if item is old]
                    items = [new if item is old else item for item in items]
                    object.__getattribute__(parent, "__delattr__")(name)
                    setattr(parent, name, type(value)(items) if isinstance(value, tuple) else items)
            elif isinstance(value, dict) or _is_dict_wrapper(value):
                if any(item is old for item in value.values()):
                    slots += [(name, k) for k, v in value.items() if v is old]
                    items = {k: (new if v is old else v) for k, v in value.items()}
                    object.__getattribute__(parent, "__delattr__")(name)
                    setattr(parent, name, items)
    if not slots:
        raise CopyError(f"cannot find where {type(parent).__name__!r} holds its sub-layer {old.name!r} "
                        f"(tfmec replaces attributes, list and dict entries)")
    _untrack(parent, old)
    for slot in slots:
        mark_swapped(parent, slot)


def _untrack(parent, old) -> None:
    for store in ("_layers", "_self_tracked_trackables"):
        items = getattr(parent, store, None)
        if isinstance(items, list) and any(x is old for x in items):
            with _unlocked(parent):
                items[:] = [x for x in items if x is not old]


def _is_list_wrapper(value) -> bool:
    return type(value).__name__ in ("ListWrapper", "TrackedList")


def _is_dict_wrapper(value) -> bool:
    return type(value).__name__ in ("_DictWrapper", "TrackedDict")


def keep_class(original, new):
    """``new`` (a plain functional model) as ``original``'s functional subclass (e.g. ``MECModel``)
    when that class can be built from ``inputs=``/``outputs=``."""
    cls = type(original)
    if type(new) is cls or cls.__module__.startswith(("keras.", "tf_keras.")):
        return new
    try:
        return cls(inputs=new.input, outputs=new.output, name=new.name)
    except Exception:  # noqa: BLE001 - a subclass with another constructor: a plain functional model
        return new


def swap_layers(model, replace: Callable, *, inplace: bool = False):
    """A copy of ``model`` (module docstring) with the layers ``replace`` picks replaced.

    Args:
        model: any Keras model or layer: functional, ``Sequential``, subclassed, nested.
        replace: ``fn(layer) -> replacement or None``, asked once per layer object; a replacement is
            a layer (any callable inside a functional graph).
        inplace: swap inside ``model`` itself where it is a subclassed model (its functional
            sub-models are still rebuilt, and set in place of the old ones).
    Returns:
        ``(new_model, replaced)``: the copy, and ``{id(old layer): replacement}`` of what was replaced.
    Raises:
        CopyError: a layer that cannot be copied, with the change that makes it possible.
    """
    swapper = _Swapper(replace, inplace=inplace)
    if inplace and not (is_functional(model) or is_sequential(model)):
        swapper.memo[id(model)] = model
        swapper._inplace_children(model)
        new = model
    else:
        new = swapper.layer(model)
    return new, swapper.replaced


__all__ = ["swap_layers", "own_weights", "transfer_state", "set_child", "keep_class", "new_instance", "is_functional",
           "is_sequential", "CopyError", "copy_hint"]
