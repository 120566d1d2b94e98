"""Model inputs and field embeddings, built from a :class:`~tfmec.data.schema.Schema` and an
embedding factory.

**Embedding factory.** A callable ``factory(field, dim, name) -> layer`` where ``field`` is a
:class:`~tfmec.data.schema.Field` (categorical, ``field.vocab_size`` ids including the OOV id 0),
``dim`` an int and ``name`` the layer name to use; the layer maps int ids ``[batch]`` to
``[batch, dim]``. :func:`default_embedding_factory` returns a ``keras.layers.Embedding`` (tfmec's
:class:`~tfmec.layers.SparseReadEmbedding` subclass, whose lookup reads only the batch's rows); a later
stage (MEC) can pass a factory that returns a quantised embedding, or swap the layers by cloning.

**Layer names** (a contract other stages rely on):

* ``embedding_<field>``: the embedding table of categorical field ``<field>`` (made by the factory;
  a field that ``shares`` another's table calls that field's layer, so a shared table is one layer);
* ``linear_<field>``: its first-order weight, a ``dim = 1`` table made by the same factory;
* ``numeric_embedding_<field>``: the :class:`~tfmec.layers.NumericEmbedding` of a numeric field;
* ``linear_numeric``: a ``Dense(1)`` (no bias) over the stacked numeric fields;
* ``linear``: :class:`~tfmec.layers.LinearTerms`, the sum of first-order terms plus the bias;
* ``pool_<field>``: the pooling of multi-valued field ``<field>`` (its ``[batch, L, d]`` rows to
  ``[batch, d]``: :class:`~tfmec.layers.MaskedMeanPooling` unless the model gives its own);
* ``stack_embeddings``: the ``[batch, F, d]`` stack, fields in schema order.

**Multi-valued fields** (``Field(max_length=L)``) are inputs ``int32[batch, L]`` padded with 0; the
table maps them to ``[batch, L, d]`` and a pooling to ``[batch, d]``, so every model sees one vector
per field. The pooling's mask is ``ids != 0``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.layers import L2Penalty, LinearTerms, MaskedMeanPooling, NumericEmbedding, SparseReadEmbedding, StackFields
from tfmec.layers._utils import derive_seed

EmbeddingFactory = Callable[..., "keras.layers.Layer"]
"""``(field: Field, dim: int, name: str) -> layer`` mapping int ids ``[batch]`` to ``[batch, dim]``
(and ``[batch, L]`` to ``[batch, L, dim]`` when a multi-valued field uses the table)."""

SequencePooling = Callable[..., object]
"""``(field, ids [batch, L], rows [batch, L, d], candidate [batch, d] or None) -> [batch, d]``: how a
model pools a multi-valued field; ``candidate`` is the embedding of the single-valued field whose
table the list shares (DIN's target), None when there is none."""


@tfmec_export("tfmec.models.default_embedding_factory")
def default_embedding_factory(field, dim: int, name: str, *, seed: int | None = None, embeddings_initializer=None):
    """The default embedding factory: a ``keras.layers.Embedding(field.vocab_size, dim, name=name)``
    (:class:`~tfmec.layers.SparseReadEmbedding`: the same layer with a lookup that reads only the
    looked-up rows, so a training step costs what the batch touches, not the table size).

    Args:
        field: a categorical field with ``vocab_size`` set.
        dim: output dimension.
        name: the layer name.
        seed: optional seed of the default initializer (uniform in [-0.05, 0.05], Keras's default).
        embeddings_initializer: overrides the initializer.

    Returns:
        a layer mapping ids ``[batch]`` (int) to ``[batch, dim]``.
    """
    if embeddings_initializer is None:
        embeddings_initializer = (
            "uniform" if seed is None else keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)
        )
    return SparseReadEmbedding(
        int(field.vocab_size), int(dim), embeddings_initializer=embeddings_initializer, name=name
    )


@tfmec_export("tfmec.models.check_schema")
def check_schema(schema) -> None:
    """Raises ``ValueError`` when a model cannot be built from ``schema`` (a categorical field
    without a vocabulary size, or a bad one)."""
    if schema is None or not getattr(schema, "fields", None):
        raise ValueError("a model needs a Schema with at least one field")
    missing = [f.name for f in schema.categorical if f.vocab_size is None]
    if missing:
        raise ValueError(
            f"categorical field(s) {missing} have no vocab_size: build vocabularies first "
            "(load the data through tfmec.data, which sets field.vocab_size, or set it by hand)"
        )
    bad = [(f.name, f.vocab_size) for f in schema.categorical if int(f.vocab_size) < 1]
    if bad:
        raise ValueError(f"categorical field(s) have vocab_size < 1: {bad}")


@tfmec_export("tfmec.models.build_inputs")
def build_inputs(schema) -> dict:
    """One ``keras.Input(shape=(), name=field.name)`` per field, in schema order
    (``shape=(max_length,)`` for a multi-valued field).

    Returns:
        ``{field.name: KerasTensor[batch]}`` (``[batch, L]`` for a multi-valued field), int32 for
        categorical fields, float32 for numeric.
    """
    check_schema(schema)
    return {
        f.name: keras.Input(shape=(f.max_length,) if f.is_list else (), name=f.name,
                            dtype="int32" if f.is_categorical else "float32")
        for f in schema.fields
    }


@tfmec_export("tfmec.models.FieldEmbeddings")
@dataclasses.dataclass
class FieldEmbeddings:
    """What :func:`embed_fields` builds.

    Attributes:
        inputs: ``{field.name: [batch]}`` model inputs.
        embeddings: per-field ``[batch, d]`` tensors, schema order.
        stacked: ``[batch, F, d]`` (after the optional L2 penalty).
        linear: first-order term ``[batch, 1]`` (with bias), or None when not requested.
    """

    inputs: dict
    embeddings: list
    stacked: object
    linear: object = None

    @property
    def num_fields(self) -> int:
        return len(self.embeddings)


def _check_factory_output(tensor, field, dim, what):
    shape = tuple(tensor.shape)
    rank = 3 if field.is_list else 2
    if len(shape) != rank or (shape[-1] is not None and int(shape[-1]) != int(dim)):
        want = f"[batch, {field.max_length}] to [batch, {field.max_length}, {dim}]" if field.is_list else \
            f"[batch] to [batch, {dim}]"
        raise ValueError(
            f"the embedding factory's layer for {what} of field {field.name!r} returned shape {shape}; "
            f"an embedding layer must map ids {want}"
        )


@tfmec_export("tfmec.models.mean_pooling")
def mean_pooling(field, ids, rows, candidate=None):
    """The default :data:`SequencePooling`: :class:`~tfmec.layers.MaskedMeanPooling` named
    ``pool_<field>`` (``[batch, L]`` ids and ``[batch, L, d]`` rows -> ``[batch, d]``)."""
    return MaskedMeanPooling(name=f"pool_{field.name}")([ids, rows])


@tfmec_export("tfmec.models.embed_fields")
def embed_fields(
    schema,
    embedding_dim: int = 16,
    embedding_factory: EmbeddingFactory | None = None,
    *,
    linear: bool = False,
    embeddings: bool = True,
    embedding_l2: float = 0.0,
    seed: int | None = None,
    sequence_pooling: SequencePooling | None = None,
) -> FieldEmbeddings:
    """Builds inputs, per-field embeddings, their stack and (optionally) the linear term.

    Args:
        schema: the feature schema (categorical fields need ``vocab_size``).
        embedding_dim: d.
        embedding_factory: ``(field, dim, name) -> layer``; None for
            :func:`default_embedding_factory`. Used for every categorical table, including the
            ``dim = 1`` first-order tables.
        linear: also build the first-order term.
        embeddings: build the ``dim``-sized embeddings and their stack (False for a purely linear
            model: ``embeddings`` is then empty and ``stacked`` None).
        embedding_l2: coefficient of an :class:`~tfmec.layers.L2Penalty` on the stacked embeddings
            (the rows a batch looks up); 0 disables it.
        seed: optional seed for the default factory and the numeric/linear weights.
        sequence_pooling: how multi-valued fields pool (:data:`SequencePooling`); None for
            :func:`mean_pooling`. Their first-order terms are always mean-pooled
            (``pool_linear_<field>``).

    Returns:
        a :class:`FieldEmbeddings` with tensors ``inputs[f]: [batch]``, ``embeddings[i]: [batch, d]``,
        ``stacked: [batch, F, d]``, ``linear: [batch, 1]`` (or None).
    """
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    dim = int(embedding_dim)
    inputs = build_inputs(schema)
    counter = iter(range(10**6))

    if embedding_factory is None:

        def factory(field, d, name):
            return default_embedding_factory(field, d, name, seed=derive_seed(seed, next(counter)))

    else:
        if not callable(embedding_factory):
            raise TypeError(f"embedding_factory must be callable (field, dim, name) -> layer, got {embedding_factory!r}")
        factory = embedding_factory

    pool = sequence_pooling or mean_pooling
    layers = {}  # (prefix, table field) -> the one layer of that table

    def table(field, d, prefix):
        key = (prefix, field.table)
        if key not in layers:
            layers[key] = factory(schema[field.table], d, f"{prefix}_{field.table}")
        return layers[key]

    field_embeddings, stacked = [], None
    if embeddings:
        by_name = {}
        for i, field in enumerate(schema.fields):  # single-valued first: a list may attend to one of them
            if field.is_list:
                continue
            x = inputs[field.name]
            if field.is_categorical:
                e = table(field, dim, "embedding")(x)
                _check_factory_output(e, field, dim, "the embedding")
            else:
                e = NumericEmbedding(dim, seed=derive_seed(seed, 10_000 + i), name=f"numeric_embedding_{field.name}")(x)
            by_name[field.name] = e
        for field in schema.lists:
            x = inputs[field.name]
            rows = table(field, dim, "embedding")(x)
            _check_factory_output(rows, field, dim, "the embedding")
            candidate = by_name.get(field.shares) if field.shares else None
            by_name[field.name] = pool(field, x, rows, candidate)
        field_embeddings = [by_name[f.name] for f in schema.fields]
        stacked = StackFields(name="stack_embeddings")(field_embeddings)
        if embedding_l2:
            stacked = L2Penalty(embedding_l2, name="embedding_l2")(stacked)

    linear_term = None
    if linear:
        terms = []
        for field in schema.categorical:
            w = table(field, 1, "linear")(inputs[field.name])
            _check_factory_output(w, field, 1, "the linear weight")
            if field.is_list:
                w = MaskedMeanPooling(name=f"pool_linear_{field.name}")([inputs[field.name], w])
            terms.append(w)
        if schema.numeric:
            numeric = StackFields(name="stack_numeric")([inputs[f.name] for f in schema.numeric])
            init = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=derive_seed(seed, 20_000))
            terms.append(keras.layers.Dense(1, use_bias=False, kernel_initializer=init, name="linear_numeric")(numeric))
        linear_term = LinearTerms(name="linear")(terms)
    return FieldEmbeddings(inputs=inputs, embeddings=field_embeddings, stacked=stacked, linear=linear_term)
