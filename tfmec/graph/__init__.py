"""tfmec.graph: finding layers by structure and swapping them in a copy of any Keras model.

* :mod:`tfmec.graph.walk`: every layer of a model with its path; the embedding tables and their keys.
* :mod:`tfmec.graph.functional`: replaying a functional graph with cloned layers (both Keras modes).
* :mod:`tfmec.graph.swap`: THE clone-and-swap of tfmec (MEC, AFM, int8 and hashing all use it).
* :mod:`tfmec.graph.capture`: what given layers receive and return while a model runs on data.
* :mod:`tfmec.graph.swapped`: saving and loading a subclassed model whose sub-layers were replaced.
"""
from tfmec.api_export import public_names
from tfmec.graph import swapped  # registers tfmec>SwappedLayer for loading
from tfmec.graph import functional, walk

# every name exported as tfmec.graph.* by the modules above (@tfmec_export)
__all__ = public_names(globals(), swapped, functional, walk)
