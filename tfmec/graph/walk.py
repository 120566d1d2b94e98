"""Finding layers by structure: every layer of a model, however deep it sits, with its path.

A Keras model nests layers in three ways: functional graphs and ``Sequential`` models list them in
``model.layers``; subclassed models and custom layers hold them as attributes (plain, in lists, in
dicts), which Keras tracks. :func:`iter_layers` walks all three and yields each layer object ONCE
(a layer called from several places, i.e. a shared table, is one entry), with a path made of the
layer names from the model down (``"ranking_model/user_embeddings/embedding"``).

:func:`find_tables` picks the embedding tables among them: ``keras.layers.Embedding`` (and its
subclasses) and tfmec's own table layers (``is_embedding_table = True``). A table's *key* is how
tfmec's dict-shaped results (codes, frequencies, reports) name it:

* ``<field>`` for a table named ``embedding_<field>`` (the convention of the models tfmec builds,
  kept as a convenience; not Keras's automatic names ``embedding_1``, ``embedding_2``...), and the
  layer name for the first-order ``linear_<field>`` tables;
* otherwise the layer's own name when no other table has that name, else its full path.

Every public function accepts a table by key, by layer name or by path (:func:`resolve_table`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from tfmec.api_export import tfmec_export
from tfmec.backend import keras

FIELD_TABLE_PREFIX = "embedding_"
"""Tables named ``embedding_<field>`` (tfmec's zoo) are keyed by ``<field>``."""


@tfmec_export("tfmec.graph.LayerRef")
@dataclasses.dataclass
class LayerRef:
    """One layer of a model.

    Attributes:
        layer: the layer object.
        path: ``/``-joined layer names from the model (excluded) down to ``layer`` (included).
        parent: the layer or model that holds it (the model itself for top-level layers).
        depth: 1 for the model's own layers, 2 for theirs, ...
    """

    layer: object
    path: str
    parent: object
    depth: int


@tfmec_export("tfmec.graph.TableRef")
@dataclasses.dataclass
class TableRef(LayerRef):
    """An embedding table: a :class:`LayerRef` plus its key (see the module docstring) and shape
    ``[input_dim, output_dim]``."""

    key: str = ""
    input_dim: int = 0
    output_dim: int = 0


@tfmec_export("tfmec.graph.is_table")
def is_table(layer) -> bool:
    """True for a ``keras.layers.Embedding`` (subclasses included) or a layer declaring
    ``is_embedding_table = True`` (every tfmec table layer)."""
    return isinstance(layer, keras.layers.Embedding) or bool(getattr(layer, "is_embedding_table", False))


@tfmec_export("tfmec.graph.child_layers")
def child_layers(layer) -> list:
    """The layers directly inside ``layer`` (in tracking order, input layers excluded): ``layer.layers``
    of a model, else the layers Keras tracks as its attributes (lists and dicts included)."""
    if layer is None:
        return []
    found = []
    try:
        children = layer._flatten_layers(include_self=False, recursive=False)
    except AttributeError:
        children = getattr(layer, "layers", []) or []
    for child in children:
        if isinstance(child, keras.layers.InputLayer) or not isinstance(child, keras.layers.Layer):
            continue
        found.append(child)
    return found


@tfmec_export("tfmec.graph.iter_layers")
def iter_layers(model) -> Iterator[LayerRef]:
    """Every layer inside ``model`` (depth first, parents before children), each layer object once."""
    seen = {id(model)}

    def walk(parent, prefix, depth):
        for child in child_layers(parent):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            yield LayerRef(child, path, parent, depth)
            yield from walk(child, path, depth + 1)

    yield from walk(model, "", 1)


@tfmec_export("tfmec.graph.table_dims")
def table_dims(layer) -> tuple[int, int]:
    """``(input_dim, output_dim)`` of a table layer: rows ``V`` and width ``d``, the names of
    ``keras.layers.Embedding`` that every tfmec table layer uses too. A user's own table layer that
    names its rows ``vocab_size`` (or ``vocabulary_size``) is read under that name; 0 where a layer has
    none of them."""
    rows = getattr(layer, "input_dim", None)
    for name in ("vocab_size", "vocabulary_size"):
        if rows is None and name in getattr(layer, "__dict__", {}):  # not a deprecated tfmec alias
            rows = layer.__dict__[name]
    return int(rows or 0), int(getattr(layer, "output_dim", 0) or 0)


@tfmec_export("tfmec.graph.find_tables")
def find_tables(model) -> list[TableRef]:
    """Every embedding table of ``model`` (module docstring), each once, in walk order, with its key."""
    refs = [ref for ref in iter_layers(model) if is_table(ref.layer)]
    name_count: dict = {}
    for ref in refs:
        name_count[ref.layer.name] = name_count.get(ref.layer.name, 0) + 1
    tables, keys = [], set()
    for ref in refs:
        name = ref.layer.name
        suffix = name[len(FIELD_TABLE_PREFIX):]
        if name.startswith(FIELD_TABLE_PREFIX) and name_count[name] == 1 and suffix and not suffix.isdigit():
            key = name[len(FIELD_TABLE_PREFIX):]
        elif name_count[name] == 1:
            key = name
        else:
            key = ref.path
        if key in keys:  # a field name equal to another table's layer name: fall back to the path
            key = ref.path
        keys.add(key)
        v, d = table_dims(ref.layer)
        tables.append(TableRef(ref.layer, ref.path, ref.parent, ref.depth, key=key, input_dim=v, output_dim=d))
    return tables


@tfmec_export("tfmec.graph.table_aliases")
def table_aliases(ref: TableRef) -> tuple[str, ...]:
    """The names a table answers to: its key, its layer name and its path."""
    return tuple(dict.fromkeys((ref.key, ref.layer.name, ref.path)))


@tfmec_export("tfmec.graph.resolve_table")
def resolve_table(tables: list[TableRef], name: str, what: str = "table") -> TableRef:
    """The table that ``name`` (a key, layer name or path) names; ``KeyError``-free: raises
    ``ValueError`` listing every table's key when none or several match."""
    matches = [ref for ref in tables if name in table_aliases(ref)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{r.key!r} ({r.path}, [{r.input_dim}, {r.output_dim}])" for r in tables) or "none"
    if not matches:
        raise ValueError(f"{what} {name!r} names no embedding table of the model; its tables are: {listing}")
    raise ValueError(f"{what} {name!r} names several tables ({[r.path for r in matches]}); use a path. "
                     f"Tables: {listing}")


@tfmec_export("tfmec.graph.keyed_by_table")
def keyed_by_table(tables: list[TableRef], mapping, what: str) -> dict:
    """``{table key: value}`` from a mapping keyed by table keys, layer names or paths.

    A mapping none of whose keys names a table of the model raises ``ValueError`` listing the model's
    tables (a dict built for another model is never silently ignored); keys that name no table beside
    ones that do are reported with a warning. A first-order ``linear_<field>`` table with no entry of
    its own takes the entry of ``<field>`` (the zoo's tables of one field read the same ids).
    """
    import warnings

    out, unknown, fields = {}, [], {}
    linear = {ref.layer.name[len("linear_"):]: ref for ref in tables if ref.layer.name.startswith("linear_")}
    for name, value in (mapping or {}).items():
        try:
            ref = resolve_table(tables, str(name), what)
        except ValueError:
            if str(name) in linear:  # a field of a zoo model whose only table is its first-order weight
                fields[str(name)] = value
                continue
            unknown.append(str(name))
            continue
        out[ref.key] = value
        fields[str(name)] = value
    if unknown:
        listing = ", ".join(f"{r.key!r} ({r.path})" for r in tables) or "none"
        if not out and not fields:
            raise ValueError(f"{what}: no key names an embedding table of the model (keys {sorted(unknown)[:10]}"
                             f"{' ...' if len(unknown) > 10 else ''}); its tables are: {listing}. Key the mapping by "
                             f"these names, or count with tfmec.mec.count_ids(model, dataset)")
        warnings.warn(f"{what}: keys {sorted(unknown)} name no embedding table of the model and are ignored; "
                      f"its tables are: {listing}", stacklevel=3)
    for field, ref in linear.items():
        if ref.key not in out and field in fields:
            out[ref.key] = fields[field]
    return out


__all__ = ["LayerRef", "TableRef", "is_table", "child_layers", "iter_layers", "find_tables", "table_dims",
           "table_aliases", "resolve_table", "keyed_by_table", "FIELD_TABLE_PREFIX"]
