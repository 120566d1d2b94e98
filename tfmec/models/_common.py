"""Building blocks shared by the model builders (not public API)."""
from __future__ import annotations

from typing import Sequence

from tfmec.backend import keras
from tfmec.layers import FlattenFields, logit_layer, mlp_block
from tfmec.layers._utils import derive_seed

# Seed slots of the parts of a model (each part derives its own seeds from one model seed).
SEED_EMBEDDINGS, SEED_DNN, SEED_LOGIT, SEED_INTERACTION = 0, 1, 2, 3


def part_seed(seed: int | None, part: int) -> int | None:
    """The seed of one part of a model, derived from the model seed (None stays None)."""
    return derive_seed(seed, 100 + part)


def flatten(stacked):
    """``[batch, F, d]`` -> ``[batch, F * d]`` (layer ``flatten_embeddings``)."""
    return FlattenFields(name="flatten_embeddings")(stacked)


def deep_logit(x, hidden_units: Sequence[int], *, activation, dropout, batch_norm, seed, name="dnn"):
    """MLP over ``x [batch, n]`` followed by ``Dense(1)`` named ``{name}_logit``; ``[batch, 1]``."""
    h = mlp_block(
        x, hidden_units, activation=activation, dropout=dropout, batch_norm=batch_norm, name=name,
        seed=part_seed(seed, SEED_DNN),
    )
    return logit_layer(h, name=f"{name}_logit", seed=part_seed(seed, SEED_LOGIT))


def finish(inputs: dict, logits: list, name: str):
    """Sums the ``[batch, 1]`` logits (layer ``add_logits``), applies a float32 sigmoid (layer
    ``prediction``) and returns ``keras.Model(inputs, [batch, 1], name=name)``."""
    logit = logits[0] if len(logits) == 1 else keras.layers.Add(name="add_logits")(list(logits))
    prob = keras.layers.Activation("sigmoid", dtype="float32", name="prediction")(logit)
    return keras.Model(inputs=inputs, outputs=prob, name=name)


def check_structure(structure: str, allowed=("parallel", "stacked", "cross_only")) -> str:
    if structure not in allowed:
        raise ValueError(f"structure must be one of {list(allowed)}, got {structure!r}")
    return structure
