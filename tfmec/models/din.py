"""DIN: the Deep Interest Network (Zhou et al. 2018), target attention over a behaviour sequence."""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.layers import MaskedWeightedSum, TargetAttentionInputs, logit_layer, mlp_block
from tfmec.layers._utils import derive_seed
from tfmec.models._common import SEED_INTERACTION, deep_logit, finish, flatten, part_seed
from tfmec.models.embedding import embed_fields, mean_pooling


@tfmec_export("tfmec.models.target_attention_pooling")
def target_attention_pooling(attention_units: Sequence[int] = (64, 16), activation: str = "relu",
                             seed: int | None = None):
    """The :data:`~tfmec.models.embedding.SequencePooling` of DIN's activation unit.

    For a multi-valued field with a candidate (the single-valued field whose table it shares):
    ``w_i = Dense(1)(MLP([h_i, c, h_i - c, h_i * c]))`` per position, then ``sum_i mask_i w_i h_i``
    (no softmax, as in the paper, so the pooled vector keeps the intensity of interest). Layers:
    ``attention_inputs_<field>`` (:class:`~tfmec.layers.TargetAttentionInputs`), plain ``Dense``
    layers ``attention_<field>_dense_<i>`` and ``attention_<field>_score``, and ``pool_<field>``
    (:class:`~tfmec.layers.MaskedWeightedSum`). A field without a candidate is mean-pooled.

    Shapes: ids ``[batch, L]``, rows ``[batch, L, d]``, candidate ``[batch, d]`` -> ``[batch, d]``.
    """
    calls = iter(range(10**6))

    def pool(field, ids, rows, candidate=None):
        if candidate is None:
            return mean_pooling(field, ids, rows)
        s = derive_seed(seed, next(calls))
        feats = TargetAttentionInputs(name=f"attention_inputs_{field.name}")([rows, candidate])
        h = mlp_block(feats, attention_units, activation=activation, name=f"attention_{field.name}", seed=s)
        score = logit_layer(h, name=f"attention_{field.name}_score", seed=derive_seed(s, 99))
        return MaskedWeightedSum(name=f"pool_{field.name}")([ids, score, rows])

    return pool


@tfmec_export("tfmec.models.DIN")
def DIN(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    attention_units: Sequence[int] = (64, 16),
    hidden_units: Sequence[int] = (200, 80),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    seed: int | None = None,
    name: str = "din",
):
    """DIN: ``sigmoid(Dense(1)(MLP(flatten(E))))`` where a behaviour sequence's embedding in ``E`` is
    its target-attention pooling against the candidate (:func:`target_attention_pooling`).

    The candidate of a multi-valued field is the single-valued field whose table it shares
    (``Field("history", max_length=50, shares="news_id")``: the history attends to ``news_id``, through
    ONE table). Other multi-valued fields (a movie's genres) are mean-pooled; single-valued fields are
    embedded as in every zoo model.

    Args:
        schema: feature schema with at least one multi-valued field.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        attention_units: hidden sizes of the activation unit's MLP (paper and DeepCTR: small, e.g.
            (64, 16)); ``activation`` is also theirs.
        hidden_units, activation, dropout, batch_norm: the tower MLP (``dnn_dense_<i>``, ``dnn_logit``).
        embedding_l2: L2 penalty on the looked-up embeddings.
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch] or [batch, L]}`` -> probability ``[batch, 1]``.

    Raises:
        ValueError: when the schema has no multi-valued field (DIN would be a plain MLP).
    """
    if not schema.lists:
        raise ValueError("DIN needs a multi-valued field (a behaviour history: Field(max_length=N, shares=...)); "
                         "this schema has none: use another model, or read the history (e.g. --format mind)")
    pool = target_attention_pooling(attention_units, activation, seed=part_seed(seed, SEED_INTERACTION))
    fe = embed_fields(schema, embedding_dim, embedding_factory, embedding_l2=embedding_l2, seed=seed,
                      sequence_pooling=pool)
    deep = deep_logit(flatten(fe.stacked), hidden_units, activation=activation, dropout=dropout,
                      batch_norm=batch_norm, seed=seed)
    return finish(fe.inputs, [deep], name)
