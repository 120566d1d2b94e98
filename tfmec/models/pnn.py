"""Product-based neural network (inner product, IPNN)."""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.layers import InnerProduct
from tfmec.models._common import deep_logit, finish, flatten
from tfmec.models.embedding import embed_fields


@tfmec_export("tfmec.models.PNN")
def PNN(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    hidden_units: Sequence[int] = (400, 400, 400),
    activation: str = "relu",
    dropout: float = 0.2,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    linear: bool = True,
    seed: int | None = None,
    name: str = "pnn",
):
    """IPNN (Qu et al. 2016): ``sigmoid(Dense(1)(MLP(concat(flatten(E), InnerProduct(E)))))``.

    The product layer's output (``[batch, F d + F(F-1)/2]``) feeds plain ``Dense`` layers
    ``dnn_dense_<i>``; the logit is ``dnn_logit``.

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        hidden_units: MLP layer sizes.
        activation, dropout, batch_norm: MLP settings.
        embedding_l2: L2 penalty on the looked-up embeddings.
        linear: add the first-order (wide) part, per-id weights ``linear_<field>`` plus a bias, to the logit
            (False gives the paper's exact form).
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=linear, embedding_l2=embedding_l2, seed=seed)
    products = InnerProduct(name="inner_product")(fe.stacked)
    x = keras.layers.Concatenate(name="concat_product")([flatten(fe.stacked), products])
    logit = deep_logit(x, hidden_units, activation=activation, dropout=dropout, batch_norm=batch_norm, seed=seed)
    return finish(fe.inputs, [logit] + ([fe.linear] if linear else []), name)
