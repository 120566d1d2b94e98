"""The tower protocol: how tfmec compresses a model that is not a functional Keras model.

``tfmec.mec.compress_embeddings``, ``tfmec.afm.compress`` and ``tfmec.mec.learn_codes`` rewrite a
model by cloning its functional graph. A subclassed model (a ``tfrs.models.Model``, or any
``keras.Model`` with a hand-written ``call``) has no graph to clone, so tfmec accepts one when it
follows this protocol:

* ``model.tower``: a functional Keras model that holds every layer tfmec should compress (the
  embedding tables and the MLP), ``{field: [batch]} -> [batch, 1]``;
* ``model.with_tower(new_tower)``: a new model of the same kind around ``new_tower`` (same task,
  same settings, no shared state with ``model``).

tfmec compresses ``model.tower`` exactly as it compresses any functional model and hands back
``model.with_tower(compressed_tower)``. :class:`tfmec.integrations.tfrs.TowerRankingModel` is a TFRS
model that follows the protocol; a user's own subclass needs only the two members.
"""
from __future__ import annotations

from tfmec.graph.swap import is_functional

PROTOCOL_HINT = (
    "tfmec rewrites models by cloning their functional graph. Build the layers to compress as a "
    "functional Keras model (the 'tower': keras.Model(inputs, outputs)) and either pass it directly, "
    "or wrap it in a model that exposes it as `model.tower` and implements `model.with_tower(new_tower)` "
    "(see tfmec.towers and tfmec.integrations.tfrs.TowerRankingModel)"
)


def is_tower_model(model) -> bool:
    """True when ``model`` follows the tower protocol: a functional ``model.tower`` and a callable
    ``model.with_tower``."""
    return (not is_functional(model) and is_functional(getattr(model, "tower", None))
            and callable(getattr(model, "with_tower", None)))


def require_functional(model, what: str) -> None:
    """Raises ``ValueError`` (naming ``what`` and the tower protocol) unless ``model`` is functional."""
    if not is_functional(model):
        raise ValueError(f"{what} needs a functional Keras model, got a {type(model).__name__}. {PROTOCOL_HINT}.")


__all__ = ["is_functional", "is_tower_model", "require_functional", "PROTOCOL_HINT"]
