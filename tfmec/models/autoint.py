"""AutoInt (and AutoInt+ with a parallel MLP)."""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.layers import FlattenFields, SelfAttentionInteraction, logit_layer
from tfmec.layers._utils import derive_seed
from tfmec.models._common import SEED_INTERACTION, SEED_LOGIT, deep_logit, finish, flatten, part_seed
from tfmec.models.embedding import embed_fields


@tfmec_export("tfmec.models.AutoInt")
def AutoInt(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    attention_layers: int = 3,
    heads: int = 2,
    head_dim: int = 16,
    use_residual: bool = True,
    use_scale: bool = False,
    hidden_units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.2,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    linear: bool = True,
    seed: int | None = None,
    name: str = "autoint",
):
    """AutoInt (Song et al. 2019): ``attention_layers`` stacked
    :class:`~tfmec.layers.SelfAttentionInteraction` layers (``attention_<i>``) over the field
    embeddings, flattened, then ``Dense(1)`` (``attention_logit``). With non-empty
    ``hidden_units`` it is AutoInt+: an MLP logit over the flat embeddings (``dnn_logit``) is added.

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        attention_layers: number of interacting layers.
        heads, head_dim: attention heads and their size (output ``heads * head_dim`` per field).
        use_residual, use_scale: see :class:`~tfmec.layers.SelfAttentionInteraction`.
        hidden_units: MLP sizes for AutoInt+ (empty: plain AutoInt).
        activation, dropout, batch_norm: MLP settings (AutoInt+ only).
        embedding_l2: L2 penalty on the looked-up embeddings.
        linear: add the first-order (wide) part, per-id weights ``linear_<field>`` plus a bias, to the logit
            (False gives the paper's exact form).
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    if int(attention_layers) < 1:
        raise ValueError(f"AutoInt: attention_layers must be >= 1, got {attention_layers}")
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=linear, embedding_l2=embedding_l2, seed=seed)
    x = fe.stacked
    base = part_seed(seed, SEED_INTERACTION)
    for i in range(int(attention_layers)):
        x = SelfAttentionInteraction(
            heads, head_dim, use_residual=use_residual, use_scale=use_scale,
            seed=derive_seed(base, i), name=f"attention_{i}",
        )(x)
    x = FlattenFields(name="flatten_attention")(x)
    logits = [logit_layer(x, name="attention_logit", seed=part_seed(seed, SEED_LOGIT))]
    if hidden_units:
        logits.append(
            deep_logit(flatten(fe.stacked), hidden_units, activation=activation, dropout=dropout,
                       batch_norm=batch_norm, seed=seed)
        )
    return finish(fe.inputs, list(logits) + ([fe.linear] if linear else []), name)
