"""tfmec.graph: finding layers by structure and swapping them in a copy of any Keras model.

* :mod:`tfmec.graph.walk`: every layer of a model with its path; the embedding tables and their keys.
* :mod:`tfmec.graph.functional`: replaying a functional graph with cloned layers (both Keras modes).
* :mod:`tfmec.graph.swap`: THE clone-and-swap of tfmec (MEC, AFM, int8 and hashing all use it).
* :mod:`tfmec.graph.capture`: what given layers receive and return while a model runs on data.
* :mod:`tfmec.graph.swapped`: saving and loading a subclassed model whose sub-layers were replaced.
"""
from tfmec.graph import swapped  # noqa: F401  (registers tfmec>SwappedLayer for loading)
from tfmec.graph.functional import rebuild_functional
from tfmec.graph.walk import (
    LayerRef,
    TableRef,
    child_layers,
    find_tables,
    is_table,
    iter_layers,
    keyed_by_table,
    resolve_table,
    table_aliases,
    table_dims,
)

__all__ = ["rebuild_functional", "LayerRef", "TableRef", "child_layers", "find_tables",
           "is_table", "iter_layers", "keyed_by_table", "resolve_table", "table_aliases", "table_dims"]
