"""DeepFM."""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.layers import FMInteraction
from tfmec.models._common import deep_logit, finish, flatten
from tfmec.models.embedding import embed_fields


@tfmec_export("tfmec.models.DeepFM")
def DeepFM(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    hidden_units: Sequence[int] = (400, 400, 400),
    activation: str = "relu",
    dropout: float = 0.2,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    seed: int | None = None,
    name: str = "deepfm",
):
    """DeepFM (Guo et al. 2017): ``sigmoid(linear + FM(E) + Dense(1)(MLP(flatten(E))))``.

    The MLP is made of plain ``Dense`` layers ``dnn_dense_<i>`` and the deep logit is
    ``dnn_logit``, all visible in ``model.layers``.

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        hidden_units: MLP layer sizes (defaults follow the BARS/FuxiCTR Criteo setting).
        activation, dropout, batch_norm: MLP settings.
        embedding_l2: L2 penalty on the looked-up embeddings.
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=True, embedding_l2=embedding_l2, seed=seed)
    fm = FMInteraction(name="fm")(fe.stacked)
    deep = deep_logit(
        flatten(fe.stacked), hidden_units, activation=activation, dropout=dropout, batch_norm=batch_norm, seed=seed
    )
    return finish(fe.inputs, [fe.linear, fm, deep], name)
