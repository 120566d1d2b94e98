"""Cross-network models: DCNv2 and GDCN share one assembly, with a different cross network."""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.layers import CrossNetV2, GatedCrossNet, logit_layer, mlp_block
from tfmec.layers._utils import renamed_kwargs
from tfmec.models._common import (
    SEED_DNN,
    SEED_INTERACTION,
    SEED_LOGIT,
    check_structure,
    finish,
    flatten,
    part_seed,
)
from tfmec.models.embedding import embed_fields


def cross_model(
    schema,
    embedding_dim,
    embedding_factory,
    cross_network,
    *,
    hidden_units,
    structure,
    activation,
    dropout,
    batch_norm,
    embedding_l2,
    seed,
    name,
    linear=True,
):
    """Assembles a cross model around ``cross_network`` (a layer ``[batch, D] -> [batch, D]``).

    ``x0 = flatten(E)`` (``[batch, F d]``), then

    * ``"parallel"``: ``logit = Dense(1)(concat(cross(x0), MLP(x0)))``;
    * ``"stacked"``: ``logit = Dense(1)(MLP(cross(x0)))``;
    * ``"cross_only"`` (or empty ``hidden_units``): ``logit = Dense(1)(cross(x0))``.

    The final ``Dense(1)`` is named ``logit``; MLP layers ``dnn_dense_<i>``. With ``linear`` the
    first-order part (layer ``linear``) is added to the logit.
    """
    check_structure(structure)
    fe = embed_fields(schema, embedding_dim, embedding_factory, linear=linear, embedding_l2=embedding_l2, seed=seed)
    x0 = flatten(fe.stacked)
    crossed = cross_network(x0)

    def mlp(x):
        return mlp_block(
            x, hidden_units, activation=activation, dropout=dropout, batch_norm=batch_norm, name="dnn",
            seed=part_seed(seed, SEED_DNN),
        )

    if structure == "cross_only" or not hidden_units:
        top = crossed
    elif structure == "stacked":
        top = mlp(crossed)
    else:
        top = keras.layers.Concatenate(name="concat_cross_dnn")([crossed, mlp(x0)])
    logit = logit_layer(top, name="logit", seed=part_seed(seed, SEED_LOGIT))
    return finish(fe.inputs, [logit] + ([fe.linear] if linear else []), name)


@tfmec_export("tfmec.models.DCNv2")
@renamed_kwargs({"low_rank": "rank"})
def DCNv2(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    num_cross_layers: int = 3,
    rank: int | None = None,
    hidden_units: Sequence[int] = (400, 400, 400),
    structure: str = "parallel",
    activation: str = "relu",
    dropout: float = 0.2,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    linear: bool = True,
    seed: int | None = None,
    name: str = "dcnv2",
):
    """DCN-V2 (Wang et al. 2021): a :class:`~tfmec.layers.CrossNetV2` (layer ``cross_net``) and an
    MLP over the concatenated embeddings, combined as ``structure`` says (see :func:`cross_model`).

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        num_cross_layers: number of cross layers.
        rank: None (full-rank cross kernels) or the rank of the low-rank factorisation
            (``CrossNetV2(rank=...)``; ``low_rank`` is its deprecated name, accepted for one release with
            a ``DeprecationWarning``).
        hidden_units: MLP layer sizes.
        structure: ``"parallel"``, ``"stacked"`` or ``"cross_only"``.
        activation, dropout, batch_norm: MLP settings.
        embedding_l2: L2 penalty on the looked-up embeddings.
        linear: add the first-order (wide) part, per-id weights ``linear_<field>`` plus a bias, to the logit
            (False gives the paper's exact form).
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    cross = CrossNetV2(num_cross_layers, rank=rank, seed=part_seed(seed, SEED_INTERACTION), name="cross_net")
    return cross_model(
        schema, embedding_dim, embedding_factory, cross, hidden_units=hidden_units, structure=structure,
        activation=activation, dropout=dropout, batch_norm=batch_norm, embedding_l2=embedding_l2, seed=seed,
        name=name, linear=linear,
    )


@tfmec_export("tfmec.models.GDCN")
def GDCN(
    schema,
    embedding_dim: int = 16,
    embedding_factory=None,
    *,
    num_cross_layers: int = 3,
    hidden_units: Sequence[int] = (400, 400, 400),
    structure: str = "parallel",
    activation: str = "relu",
    dropout: float = 0.2,
    batch_norm: bool = False,
    embedding_l2: float = 0.0,
    linear: bool = True,
    seed: int | None = None,
    name: str = "gdcn",
):
    """GDCN (Wang et al. 2023): a :class:`~tfmec.layers.GatedCrossNet` (layer ``cross_net``) and an
    MLP; ``"parallel"`` is GDCN-P, ``"stacked"`` GDCN-S (see :func:`cross_model`).

    Args:
        schema: feature schema.
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer`` (None: ``keras.layers.Embedding``).
        num_cross_layers: number of gated cross layers.
        hidden_units: MLP layer sizes.
        structure: ``"parallel"``, ``"stacked"`` or ``"cross_only"``.
        activation, dropout, batch_norm: MLP settings.
        embedding_l2: L2 penalty on the looked-up embeddings.
        linear: add the first-order (wide) part, per-id weights ``linear_<field>`` plus a bias, to the logit
            (False gives the paper's exact form).
        seed: optional seed for the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.
    """
    cross = GatedCrossNet(num_cross_layers, seed=part_seed(seed, SEED_INTERACTION), name="cross_net")
    return cross_model(
        schema, embedding_dim, embedding_factory, cross, hidden_units=hidden_units, structure=structure,
        activation=activation, dropout=dropout, batch_norm=batch_norm, embedding_l2=embedding_l2, seed=seed,
        name=name, linear=linear,
    )
