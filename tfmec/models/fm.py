"""Factorization machine."""
from __future__ import annotations

from tfmec.api_export import tfmec_export
from tfmec.layers import FMInteraction
from tfmec.models._common import finish
from tfmec.models.embedding import embed_fields


@tfmec_export("tfmec.models.FM")
def FM(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    embedding_l2: float = 0.0,
    seed: int | None = None,
    name: str = "fm",
):
    """Factorization machine: ``sigmoid(linear + sum_{i<j} <e_i, e_j>)``.

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        embedding_l2: L2 penalty on the looked-up embeddings.
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=True, embedding_l2=embedding_l2, seed=seed)
    return finish(fe.inputs, [fe.linear, FMInteraction(name="fm")(fe.stacked)], name)
