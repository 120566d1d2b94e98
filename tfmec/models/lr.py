"""Logistic regression."""
from __future__ import annotations

from tfmec.api_export import tfmec_export
from tfmec.models._common import finish
from tfmec.models.embedding import embed_fields


@tfmec_export("tfmec.models.LR")
def LR(schema, embedding_dim: int = 16, embedding_factory=None, *, seed: int | None = None, name: str = "lr"):
    """Logistic regression: ``sigmoid(b + sum_f w_f[id_f] + sum_numeric w_n x_n)``.

    Args:
        schema: feature schema (categorical fields need ``vocab_size``).
        embedding_dim: unused (kept so every builder has the same signature).
        embedding_factory: ``(field, dim, name) -> layer``; called with ``dim = 1`` for the
            per-field weights ``linear_<field>``.
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=True, embeddings=False, seed=seed)
    return finish(fe.inputs, [fe.linear], name)
