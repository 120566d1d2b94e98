"""TensorFlow Recommenders (TFRS) models that tfmec can compress.

TFRS builds ranking models as subclasses of ``tfrs.models.Model`` with a ``compute_loss`` and a
``tfrs.tasks.Ranking`` task. A subclassed model has no functional graph for tfmec to clone, so the
pattern here (the *tower protocol* of :mod:`tfmec.towers`) keeps every layer worth compressing in a
functional Keras model, the **tower**, ``{field: int32|float32[batch]} -> probability [batch, 1]``,
and the TFRS model around it holds only the task::

    tower = dcn_tower(data.schema, embedding_dim=16)                 # embeddings + tfrs Cross + MLP
    model = TowerRankingModel(tower)                                  # tfrs.models.Model + Ranking task
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    model.fit(data.train, validation_data=data.valid)
    codes = tfmec.mec.learn_codes(model, data.frequencies)            # reads model.tower's tables
    small = tfmec.mec.compress_embeddings(model, codes)              # a TowerRankingModel again
    small, report = tfmec.afm.compress(small, data.train.take(20), energy=0.95)
    tfmec.export.saved_model(small.tower, "saved_models/tfrs")       # serve the tower

``QuantizedEmbedding`` adds its contrastive term with ``add_loss``; ``tfrs.models.Model.train_step``
adds ``self.losses`` to the task loss (logged as ``regularization_loss``), so stage 2 trains with it
unchanged. ``tfrs.layers.dcn.Cross`` layers in the tower are cloned with their weights; AFM factors the
tower's ``Dense`` layers (not the Cross kernels: use ``dcn_tower(rank=...)``, TFRS's
``Cross(projection_dim=...)``, for low-rank crosses).

Needs tensorflow-recommenders, which runs on tf-keras only: set ``TF_USE_LEGACY_KERAS=1`` before
importing TensorFlow. Importing this module under Keras 3 raises :class:`TFRSUnavailableError`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras


class TFRSUnavailableError(ImportError):
    """tensorflow-recommenders cannot be used: it is missing, or Keras 3 is selected."""


if not IS_LEGACY_KERAS:
    raise TFRSUnavailableError(
        "tfmec.integrations.tfrs needs tensorflow-recommenders, which runs only on tf-keras: set "
        "TF_USE_LEGACY_KERAS=1 in the environment before importing TensorFlow (and pip install tf-keras)."
    )
try:
    import tensorflow_recommenders as tfrs
except ImportError as err:  # pragma: no cover - depends on the environment
    raise TFRSUnavailableError(
        "tfmec.integrations.tfrs needs tensorflow-recommenders: pip install 'tensorflow-recommenders==0.7.7'"
    ) from err

from tfmec.layers import logit_layer, mlp_block  # noqa: E402
from tfmec.layers._utils import renamed_kwargs  # noqa: E402
from tfmec.models._common import flatten  # noqa: E402
from tfmec.models.embedding import embed_fields  # noqa: E402
from tfmec.towers import require_functional  # noqa: E402


def default_ranking_task() -> "tfrs.tasks.Ranking":
    """A ``tfrs.tasks.Ranking`` for CTR: binary cross-entropy on probabilities and an AUC metric named
    ``auc`` (so ``val_auc`` is logged, which :func:`tfmec.training.fit_early_stopping` monitors)."""
    return tfrs.tasks.Ranking(loss=keras.losses.BinaryCrossentropy(),
                              metrics=[keras.metrics.AUC(name="auc")])


class TowerRankingModel(tfrs.models.Model):
    """A TFRS ranking model around a functional tower (the tower protocol of :mod:`tfmec.towers`).

    Args:
        tower: a functional Keras model ``{field: [batch]} -> probability [batch, 1]`` (its embedding
            tables named ``embedding_<field>`` for tfmec's stage 1 to find them).
        task_factory: ``() -> tfrs.tasks.Task`` building the task (called once per model, so a copy
            made by :meth:`with_tower` gets fresh metrics); default :func:`default_ranking_task`.
        name: model name.

    Data: ``fit``/``evaluate`` take ``(features, labels)`` batches, ``features = {field: [batch]}``,
    ``labels: float32[batch]`` (or ``[batch, 1]``), as ``tfmec.data.load`` yields them.
    ``model(features)`` returns the tower's probabilities ``[batch, 1]``.
    """

    def __init__(self, tower, task_factory: Callable[[], object] | None = None, name: str | None = None):
        require_functional(tower, "TowerRankingModel(tower=...)")
        super().__init__(name=name or f"{tower.name}_ranking")
        self.tower = tower
        self.task_factory = task_factory or default_ranking_task
        self.task = self.task_factory()

    def call(self, features, training=False):
        """Probabilities ``[batch, 1]`` of ``features`` ``{field: [batch]}``."""
        return self.tower(features, training=training)

    def compute_loss(self, inputs, training: bool = False):
        """The task loss of one ``(features, labels)`` batch (updates the task's metrics)."""
        features, labels = inputs
        predictions = self.tower(features, training=training)
        labels = tf.reshape(tf.cast(labels, predictions.dtype), [-1, 1])
        return self.task(labels=labels, predictions=predictions)

    def with_tower(self, tower) -> "TowerRankingModel":
        """A new (uncompiled) model of this class around ``tower``, with a fresh task."""
        return type(self)(tower, task_factory=self.task_factory, name=self.name)


@renamed_kwargs({"projection_dim": "rank"})
def dcn_tower(
    schema,
    embedding_dim: int = 16,
    *,
    num_cross_layers: int = 2,
    rank: int | None = None,
    hidden_units: Sequence[int] = (64, 32),
    activation: str = "relu",
    seed: int | None = None,
    name: str = "dcn_tower",
):
    """A DCN tower built from TFRS's cross layer: ``x0 = flatten(E)`` (``[batch, F d]``),
    ``x_{l+1} = tfrs.layers.dcn.Cross()(x0, x_l)``, then an MLP and a sigmoid logit (stacked DCN).

    Args:
        schema: the feature schema (categorical fields need ``vocab_size``; ``CTRData.schema``).
        embedding_dim: d of every field embedding (tables ``embedding_<field>``, ``keras.layers.Embedding``).
        num_cross_layers: number of ``tfrs.layers.dcn.Cross`` layers (named ``cross_<i>``).
        rank: the rank of the cross kernels' low-rank factorisation, TFRS's ``Cross(projection_dim=...)``
            (None: full rank; ``projection_dim`` is its deprecated name here, accepted for one release
            with a ``DeprecationWarning``).
        hidden_units, activation: the MLP after the cross layers (``dnn_dense_<i>``).
        seed: optional seed of the initial weights.
        name: model name.

    Returns:
        a functional ``keras.Model`` ``{field: [batch]} -> probability float32[batch, 1]``.
    """
    fe = embed_fields(schema, embedding_dim, seed=seed)
    x0 = flatten(fe.stacked)
    x = x0
    init = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed)
    for i in range(int(num_cross_layers)):
        x = tfrs.layers.dcn.Cross(projection_dim=rank, kernel_initializer=init, name=f"cross_{i}")(x0, x)
    h = mlp_block(x, hidden_units, activation=activation, dropout=0.0, batch_norm=False, name="dnn", seed=seed)
    logit = logit_layer(h, name="logit", seed=seed)
    prob = keras.layers.Activation("sigmoid", dtype="float32", name="prediction")(logit)
    return keras.Model(inputs=fe.inputs, outputs=prob, name=name)


__all__ = ["TowerRankingModel", "dcn_tower", "default_ranking_task", "TFRSUnavailableError"]
