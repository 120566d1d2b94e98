"""MEC stage 1: learn product-quantisation codes for trained embedding tables.

For one field's table ``E: float32[V, d]`` with training counts ``n: int[V]``:

* popularity weight ``w_i = max(1, floor(log2 n_i))`` (a loss weight; rows are never copied);
* ``M`` codebooks ``C_m: [K, d/M]`` initialised by k-means++ (+ Lloyd steps) on a sample of
  sub-vectors; optional learned rotation ``R: [d, d]`` before the split and decoder ``D: [d, d]``
  after the concatenation;
* loss = weighted reconstruction ``sum_i w_i ||e_i - dec(q_i)||^2 / sum_i w_i``
  + ``alpha`` * PWR + ``beta`` * contrastive, where
  - PWR = mean over sub-spaces of ``log K - H(u)``, ``u = sum_i w_i p_i / sum_i w_i`` and ``p_i`` the
    soft assignment ``softmax(-||z_i - c_k||^2 / tau)`` (``tau``: ``pwr_temperature``; differentiable,
    unlike hard usage);
  - contrastive = InfoNCE of ``cos(e_i, dec(q_i))`` (at temperature ``contrastive_temperature``)
    against ``num_negatives`` semi-synthetic negatives, each ``q_i`` with the code of ONE randomly
    chosen sub-space replaced by another codeword (per row, independently); the epoch history logs it
    unweighted (``contrastive``), as stage 2 logs ``contrastive_loss``;
* Adam on ``tf.data`` batches of (row index, weight), one ``tf.function`` step, early stopping on
  the epoch loss, a progress bar.

:func:`learn_codes` returns a :class:`~tfmec.mec.codes.CodeSet` (codes uint8/uint16, codebooks,
optional projection ``D``, statistics).

**Shared codebooks** (beyond the paper, ``share_codebooks=True``). A private codebook costs
``K * d * 4`` bytes whatever the vocabulary, so a small table pays mostly for its codebook (frappe's
``weekday`` table, 8 ids, would need 16 KiB of codebooks for 32 bytes of codes at K = 256, d = 16).
With sharing, the small tables of the same width ``d`` form one group per ``d`` and learn ONE set of
codebooks on the union of their rows: the tables are concatenated once into ``[sum V_f, d]`` (with
their popularity weights), trained with the same losses, then every field's rows get their own codes.
"Small" means at most ``share_max_vocab`` rows; by default (:func:`default_share_max_vocab`) every table
whose private codebook would exceed 10% of its code bytes (``K*d*4 > 0.1 * V*M*code_bytes``; e.g.
V <= 40959 at K = 256, d = 16, M = 4, uint8 codes, and V <= 10239 for the d = 1 first-order tables).
Sharing also admits tables too small to be worth a private codebook: a group forms when its bytes
(every member's codes + one codebook) are fewer than its members' bytes without sharing (private PQ
or float32). The first-order ``linear_<field>`` tables (d = 1, one sub-space: scalar quantisation)
form their own d = 1 group: one K-level scalar quantiser for every field's weight, which is where
most of the per-field codebook overhead of a many-field model sits. Groups are named ``shared_d<d>``.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Mapping

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.layers._utils import renamed_kwargs
from tfmec.layers.quantized_embedding import decode_codes, semi_synthetic_negative_codes
from tfmec.mec.codes import CodeSet, FieldCodes, code_dtype
from tfmec.mec.kmeans import kmeans


@tfmec_export("tfmec.mec.popularity_weights")
def popularity_weights(counts: np.ndarray | None, vocab_size: int) -> np.ndarray:
    """``w_i = max(1, floor(log2 n_i))`` as ``float32[V]`` (all ones without counts)."""
    if counts is None:
        return np.ones(vocab_size, np.float32)
    n = np.asarray(counts, dtype=np.float64)
    if n.shape != (vocab_size,):
        raise ValueError(f"counts must have one entry per id ({vocab_size}), got shape {n.shape}")
    with np.errstate(divide="ignore"):
        logs = np.floor(np.log2(np.maximum(n, 1.0)))
    return np.maximum(1.0, logs).astype(np.float32)


def code_bytes(vocab_size: int, num_subspaces: int, num_codewords: int) -> int:
    """Bytes of the codes ``[V, M]`` of a table at their stored width (uint8 / uint16)."""
    return vocab_size * num_subspaces * np.dtype(code_dtype(num_codewords)).itemsize


def pq_bytes(vocab_size: int, dim: int, num_subspaces: int, num_codewords: int, projection: bool = False) -> int:
    """Bytes of a PQ table: codes at stored width + float32 codebooks (+ projection)."""
    return (code_bytes(vocab_size, num_subspaces, num_codewords) + num_codewords * dim * 4
            + (dim * dim * 4 if projection else 0))


class PQModel(tf.Module):
    """The trainable part of stage 1 for one table: codebooks ``[M, K, d/M]``, optional rotation and
    decoder ``[d, d]`` (identity-initialised)."""

    def __init__(self, codebooks: np.ndarray, rotation: bool = False):
        super().__init__()
        m, k, dm = codebooks.shape
        self.M, self.K, self.dm, self.d = m, k, dm, m * dm
        self.codebooks = tf.Variable(codebooks, dtype=tf.float32, name="codebooks")
        self.rotation = tf.Variable(tf.eye(self.d), name="rotation") if rotation else None
        self.decoder = tf.Variable(tf.eye(self.d), name="decoder") if rotation else None

    def encode(self, e):
        """``[B, d]`` -> sub-vectors ``[B, M, d/M]`` (after the optional rotation)."""
        z = tf.matmul(e, self.rotation) if self.rotation is not None else e
        return tf.reshape(z, [-1, self.M, self.dm])

    def distances(self, zs):
        """Squared distances ``[B, M, K]`` of sub-vectors ``[B, M, d/M]`` to every codeword."""
        c = self.codebooks
        cross = tf.einsum("bmd,mkd->bmk", zs, c)
        return tf.reduce_sum(zs * zs, -1)[:, :, None] - 2.0 * cross + tf.reduce_sum(c * c, -1)[None]

    def decode(self, codes):
        """Codes ``int32[..., M]`` -> embeddings ``[..., d]`` (concatenated codewords, then ``D``)."""
        return decode_codes(codes, self.codebooks, self.decoder)

    @property
    def trainable(self):
        return [v for v in (self.codebooks, self.rotation, self.decoder) if v is not None]


def _cosine(a, b):
    return tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1)


@renamed_kwargs({"temperature": "pwr_temperature"})
def pq_losses(model: PQModel, e, w, *, pwr_temperature: float, contrastive_temperature: float,
              num_negatives: int, seed, compute_contrastive: bool = True):
    """The three stage-1 terms on a batch ``e: [B, d]`` with weights ``w: [B]``.

    ``pwr_temperature`` is the ``tau`` of PWR's soft assignment, ``contrastive_temperature`` that of
    InfoNCE (``temperature``: deprecated name of ``pwr_temperature``, one release).

    Returns ``(reconstruction, pwr, contrastive, codes int32[B, M])``: three float32 scalars (the
    contrastive term unweighted) and the hard codes.
    """
    zs = model.encode(e)
    dist = model.distances(zs)
    codes = tf.argmin(dist, axis=-1, output_type=tf.int32)
    w_sum = tf.reduce_sum(w)
    recon = model.decode(codes)
    reconstruction = tf.reduce_sum(w * tf.reduce_sum(tf.square(e - recon), -1)) / w_sum
    if model.rotation is not None:  # commitment: let the rotation learn from the hard assignment
        q = tf.reshape(decode_codes(codes, model.codebooks), tf.shape(zs))
        commit = tf.reduce_sum(tf.square(zs - tf.stop_gradient(q)), [-1, -2])
        reconstruction += 0.25 * tf.reduce_sum(w * commit) / w_sum
    p = tf.nn.softmax(-dist / pwr_temperature, axis=-1)
    usage = tf.reduce_sum(w[:, None, None] * p, 0) / w_sum  # [M, K]
    entropy = -tf.reduce_sum(usage * tf.math.log(usage + 1e-12), -1)
    pwr = tf.reduce_mean(math.log(model.K) - entropy)
    if compute_contrastive:
        neg_codes = semi_synthetic_negative_codes(codes, model.K, num_negatives, seed)  # [B, N, M]
        negatives = model.decode(neg_codes)  # [B, N, d]
        s_pos = _cosine(e, recon)[:, None]
        s_neg = _cosine(e[:, None, :], negatives)
        logits = tf.concat([s_pos, s_neg], axis=1) / contrastive_temperature
        contrastive = tf.reduce_mean(-tf.nn.log_softmax(logits, axis=1)[:, 0])
    else:
        contrastive = tf.constant(0.0)
    return reconstruction, pwr, contrastive, codes


def assign_codes(model: PQModel, table: tf.Tensor, batch_size: int = 65536) -> np.ndarray:
    """Nearest-codeword codes of every row of ``table [V, d]``: ``int32[V, M]``, batched."""

    def nearest(e):  # eager: one large batched matmul per call, nothing to trace per field
        return tf.argmin(model.distances(model.encode(e)), axis=-1, output_type=tf.int32)

    v = int(table.shape[0])
    return np.concatenate([nearest(table[s : s + batch_size]).numpy() for s in range(0, v, batch_size)])


def code_statistics(fc: FieldCodes, table: np.ndarray, counts: np.ndarray | None, weights: np.ndarray) -> dict:
    """Reconstruction error, usage entropy, dead codewords and head (top 10% ids) vs tail usage."""
    m, k = fc.num_subspaces, fc.num_codewords
    v = fc.vocab_size
    sq_err = np.empty(v, np.float64)
    sq_norm = np.empty(v, np.float64)
    for s in range(0, v, 262144):
        rows = np.arange(s, min(v, s + 262144))
        diff = table[rows] - fc.decode(rows)
        sq_err[rows] = (diff.astype(np.float64) ** 2).sum(1)
        sq_norm[rows] = (table[rows].astype(np.float64) ** 2).sum(1)
    codes = fc.codes.astype(np.int64)
    usage = np.stack([np.bincount(codes[:, j], minlength=k) for j in range(m)])  # [M, K]
    share = usage / usage.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(share > 0, share * np.log(share), 0.0), 1)
    order = np.argsort(-(counts if counts is not None else np.zeros(v)), kind="stable")
    head = np.zeros(v, bool)
    head[order[: max(1, v // 10)]] = True

    def distinct(mask):
        return float(np.mean([len(np.unique(codes[mask, j])) for j in range(m)])) if mask.any() else 0.0

    def entropy_of(mask):
        if not mask.any():
            return 0.0
        vals = []
        for j in range(m):
            c = np.bincount(codes[mask, j], minlength=k) / mask.sum()
            vals.append(-(c[c > 0] * np.log(c[c > 0])).sum())
        return float(np.mean(vals))

    head_only = sum(len(set(np.unique(codes[head, j])) - set(np.unique(codes[~head, j]))) for j in range(m))
    return {
        "vocab_size": v,
        "reconstruction_mse": float(sq_err.mean() / fc.dim),
        "weighted_reconstruction_mse": float((weights * sq_err).sum() / weights.sum() / fc.dim),
        "relative_error": float(np.sqrt(sq_err.sum() / max(sq_norm.sum(), 1e-30))),
        "usage_entropy": float(ent.mean()),
        "usage_entropy_max": math.log(k),
        "dead_codewords": int((usage == 0).sum()),
        "codewords_total": int(m * k),
        "head_distinct_codewords": distinct(head),
        "tail_distinct_codewords": distinct(~head),
        "head_usage_entropy": entropy_of(head),
        "tail_usage_entropy": entropy_of(~head),
        "head_only_codewords": int(head_only),
    }


@tfmec_export("tfmec.mec.tables_from")
def tables_from(source) -> dict:
    """``{key: float32[V, d]}`` from a dict of tables or from a Keras model's embedding tables, found by
    structure wherever they sit (:func:`tfmec.graph.find_tables`: keyed ``<field>`` for tfmec's
    ``embedding_<field>`` layers, the layer name or path otherwise; a shared table once). A model
    following the tower protocol (:mod:`tfmec.towers`) gives its tower's tables. Only float
    ``keras.layers.Embedding`` tables are taken (tables tfmec already compressed are not)."""
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in source.items()}
    from tfmec.backend import keras
    from tfmec.graph import find_tables
    from tfmec.towers import is_tower_model

    if is_tower_model(source):
        source = source.tower
    tables = {ref.key: np.asarray(ref.layer.get_weights()[0], dtype=np.float32)
              for ref in find_tables(source) if isinstance(ref.layer, keras.layers.Embedding) and ref.layer.weights}
    if not tables:
        raise ValueError(f"model {getattr(source, 'name', source)!r} has no trained keras.layers.Embedding tables "
                         f"(searched every nested model and layer); pass {{name: float32[V, d]}} instead")
    return tables


def frequencies_by_table(source, tables: Mapping, frequencies: Mapping | None) -> dict:
    """``frequencies`` keyed like ``tables``: keys may be table keys, layer names or paths of a model
    ``source``; a mapping that names none of the tables raises ``ValueError`` listing them (never
    silently all-ones weights)."""
    if not frequencies:
        return {}
    if isinstance(source, Mapping):
        unknown = [k for k in frequencies if k not in tables]
        known = {k: v for k, v in frequencies.items() if k in tables}
        for name in tables:  # first-order linear_<field> tables read <field>'s ids
            if name not in known and name.startswith("linear_") and name[len("linear_"):] in frequencies:
                known[name] = frequencies[name[len("linear_"):]]
        if unknown and not known:
            raise ValueError(f"frequencies: no key names a table (keys {sorted(unknown)[:10]}); tables: {sorted(tables)}")
        return known
    from tfmec.graph import find_tables, keyed_by_table
    from tfmec.towers import is_tower_model

    model = source.tower if is_tower_model(source) else source
    return keyed_by_table(find_tables(model), frequencies, "frequencies")


def subspaces_for(dim: int, num_subspaces: int) -> int:
    """Sub-spaces used for a table of width ``dim``: ``num_subspaces``, or 1 for a one-column table
    (first-order weights: scalar quantisation)."""
    return 1 if dim == 1 else num_subspaces


def select_fields(tables: Mapping, num_subspaces: int, num_codewords: int, rotation: bool, fields=None,
                  min_vocab: int | None = None) -> list[str]:
    """The fields worth compressing: given ``fields``, else every table whose PQ form is smaller
    (and with at least ``min_vocab`` rows when given)."""
    if fields is not None:
        unknown = [f for f in fields if f not in tables]
        if unknown:
            raise ValueError(f"no embedding table for field(s) {unknown}; tables: {sorted(tables)}")
        return list(fields)
    chosen = []
    for name, t in tables.items():
        v, d = t.shape
        if min_vocab is not None and v < min_vocab:
            continue
        if pq_bytes(v, d, subspaces_for(d, num_subspaces), num_codewords, rotation and d > 1) < v * d * 4:
            chosen.append(name)
    return chosen


SHARE_CODEBOOK_FRACTION = 0.1
"""A table joins a shared-codebook group (by default) when its private codebook would cost more than
this fraction of its code bytes."""


def default_share_max_vocab(dim: int, num_subspaces: int, num_codewords: int) -> int:
    """The largest ``V`` whose private codebook ``K*d*4`` bytes exceeds ``SHARE_CODEBOOK_FRACTION`` of
    its code bytes ``V*M*code_bytes`` (``M`` = 1 for ``d`` = 1): the default ``share_max_vocab``."""
    per_row = code_bytes(1, subspaces_for(dim, num_subspaces), num_codewords)
    limit = num_codewords * dim * 4 / SHARE_CODEBOOK_FRACTION  # V * per_row must stay below this
    return int(math.ceil(limit / per_row)) - 1


def share_groups(tables: Mapping, candidates, private, num_subspaces: int, num_codewords: int, rotation: bool,
                 share_max_vocab: int | None = None) -> dict:
    """Codebook-sharing groups ``{"shared_d<d>": [names]}`` among ``candidates``.

    A candidate joins the group of its width ``d`` when it has at most ``share_max_vocab`` rows (default
    :func:`default_share_max_vocab` of its ``d``) and its codes are smaller than its float32 table. A group
    is kept when it has two or more members and its bytes (codes of every member + one codebook, + one
    projection with ``rotation``) are fewer than the members' bytes without sharing: private PQ for the
    names in ``private``, float32 for the others. (Every member lowers that difference, so the full set
    of candidates of a width is the best group of that width.)
    """
    by_dim: dict = {}
    for name in candidates:
        v, d = tables[name].shape
        m = subspaces_for(d, num_subspaces)
        limit = share_max_vocab if share_max_vocab is not None else default_share_max_vocab(d, num_subspaces,
                                                                                            num_codewords)
        if v <= limit and code_bytes(v, m, num_codewords) < v * d * 4:
            by_dim.setdefault(int(d), []).append(name)
    groups = {}
    for d, names in by_dim.items():
        if len(names) < 2:
            continue
        m = subspaces_for(d, num_subspaces)
        proj = rotation and d > 1
        shared = (sum(code_bytes(tables[n].shape[0], m, num_codewords) for n in names) + num_codewords * d * 4
                  + (d * d * 4 if proj else 0))
        separate = sum(pq_bytes(tables[n].shape[0], d, m, num_codewords, proj) if n in private
                       else tables[n].shape[0] * d * 4 for n in names)
        if shared < separate:
            groups[f"shared_d{d}"] = names
    return groups


@tfmec_export("tfmec.mec.learn_codes")
@renamed_kwargs({"temperature": "pwr_temperature"})
def learn_codes(
    source,
    frequencies: Mapping | None = None,
    *,
    num_subspaces: int = 4,
    num_codewords: int = 256,
    alpha: float = 1e-4,
    beta: float = 2e-3,
    pwr_temperature: float = 1.0,
    contrastive_temperature: float = 0.5,
    num_negatives: int = 4,
    rotation: bool = False,
    fields=None,
    min_vocab: int | None = None,
    batch_size: int = 4096,
    epochs: int = 10,
    patience: int = 2,
    learning_rate: float = 1e-3,
    kmeans_sample: int = 50_000,
    kmeans_iterations: int = 10,
    seed: int = 0,
    progress: bool = True,
    share_codebooks: bool = False,
    share_max_vocab: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    on_step=None,
    strategy=None,
) -> CodeSet:
    """Learns PQ codes for the embedding tables of ``source`` (MEC stage 1).

    Args:
        source: a trained Keras model of any kind (its ``keras.layers.Embedding`` tables, found by
            structure: :func:`tables_from`; one-column tables are scalar-quantised with one sub-space)
            or ``{name: float32[V, d]}``.
        frequencies: ``{table: int[V]}`` training counts per row, keyed by table key, layer name or
            path (:func:`tfmec.mec.count_ids` measures them through the model's own preprocessing;
            ``CTRData.frequencies`` is keyed by field, the key of tfmec's own tables); popularity
            weights come from them (all 1 without). A mapping naming none of the tables raises
            ``ValueError``.
        num_subspaces, num_codewords: M and K; d must be divisible by M.
        alpha, beta: weights of PWR and of the contrastive term (0 disables a term).
        pwr_temperature: tau of the soft assignment in PWR (``temperature`` is its deprecated name,
            accepted for one release with a ``DeprecationWarning``).
        contrastive_temperature: tau of InfoNCE (the contrastive term).
        num_negatives: semi-synthetic negatives per row.
        rotation: learn a rotation before the split and a decoder after (stored as ``projection``).
        fields, min_vocab: which tables to compress (default: every table PQ makes smaller).
        batch_size, epochs, patience, learning_rate: the Adam loop (early stopping on epoch loss);
            ``epochs=0`` skips it and returns plain k-means PQ codes (the ablation baseline).
        kmeans_sample, kmeans_iterations: k-means++ initialisation on this many sampled rows.
        seed: fixes sampling, initialisation, shuffling and negatives.
        share_codebooks: let small tables of the same width share one set of codebooks (module
            docstring; groups from :func:`share_groups`, among ``fields`` when given, else among every
            table with at least ``min_vocab`` rows).
        share_max_vocab: tables with more rows keep private codebooks (default: per width,
            :func:`default_share_max_vocab`).
        checkpoint_dir: save the training state of each table there (one sub-folder per table or
            group: :mod:`tfmec.mec.checkpoint`) every ``checkpoint_every`` steps and after each epoch, and
            resume from it: a run killed at any point and started again with the same arguments ends
            with the same codes and codebooks, bit for bit, as an uninterrupted one. Finished tables
            are not trained again.
        on_step: optional ``on_step(table, epoch, step)`` called after every training step (with
            ``checkpoint_dir``).
        strategy: a ``tf.distribute`` strategy to train under (default: the strategy whose scope is
            open, ``tf.distribute.get_strategy()``; none outside any scope). The PQ variables are created
            in its scope (mirrored), each global batch of ``batch_size`` ids is split across the replicas
            (replica ``r`` of ``R`` takes rows ``r, r + R, ...``), each replica computes the losses on its
            rows, and the gradients are averaged weighted by rows (``strategy.run`` + ``strategy.reduce``),
            so every replica and worker applies the same update. Works with ``MirroredStrategy`` and
            ``MultiWorkerMirroredStrategy`` under both Keras versions (no Keras in this loop). Every worker
            must pass the same tables and frequencies (true when stage 0 trained under the same strategy).
            Without a strategy the single-device loop runs, with unchanged results. A multi-worker
            strategy refuses ``checkpoint_dir`` (the workers would write the same files).
    Returns:
        a :class:`CodeSet` ``{field: FieldCodes}`` with ``config`` (``config["groups"]``: the sharing
        groups) and per-field ``stats`` (a grouped field's ``stats["group"]`` names its group; epochs,
        seconds and history are the group's).
    """
    if num_subspaces < 1 or num_codewords < 2:
        raise ValueError("num_subspaces must be >= 1 and num_codewords >= 2")
    if epochs < 0 or batch_size < 1:
        raise ValueError("epochs must be >= 0 and batch_size >= 1")
    if share_max_vocab is not None and share_max_vocab < 1:
        raise ValueError("share_max_vocab must be >= 1")
    code_dtype(num_codewords)
    from tfmec.distribute import ambient_strategy, is_multi_worker

    strategy = strategy if strategy is not None else ambient_strategy()
    if checkpoint_dir is not None and is_multi_worker(strategy):
        raise ValueError("learn_codes: checkpoint_dir is not supported under a multi-worker strategy (every worker "
                         "would write the same files); run stage 1 without it, or on one worker")
    checkpointing = None
    if checkpoint_dir is not None:
        from tfmec.mec.checkpoint import Stage1Checkpointing

        checkpointing = Stage1Checkpointing(checkpoint_dir, checkpoint_every, on_step)
    tables = tables_from(source)
    frequencies = frequencies_by_table(source, tables, frequencies)
    chosen = select_fields(tables, num_subspaces, num_codewords, rotation, fields, min_vocab)
    groups = {}
    if share_codebooks:
        candidates = list(fields) if fields is not None else [
            n for n, t in tables.items() if min_vocab is None or t.shape[0] >= min_vocab]
        groups = share_groups(tables, candidates, set(chosen), num_subspaces, num_codewords, rotation,
                              share_max_vocab)
        grouped = {n for names in groups.values() for n in names}
        chosen = [n for n in tables if n in grouped or n in chosen]
    config = dict(num_subspaces=num_subspaces, num_codewords=num_codewords, alpha=alpha, beta=beta,
                  pwr_temperature=pwr_temperature, contrastive_temperature=contrastive_temperature,
                  num_negatives=num_negatives, rotation=rotation, batch_size=batch_size, epochs=epochs,
                  learning_rate=learning_rate, seed=seed, fields=chosen, share_codebooks=bool(share_codebooks),
                  share_max_vocab=share_max_vocab, groups=groups)
    result = CodeSet(config=config)
    group_of = {n: g for g, names in groups.items() for n in names}

    def counts_of(name):
        return np.asarray(frequencies[name]) if name in frequencies else None

    for i, name in enumerate(chosen):
        if name in result:
            continue
        d = tables[name].shape[1]
        members = groups[group_of[name]] if name in group_of else [name]
        fcs = _learn_tables(group_of.get(name), members, [tables[n] for n in members],
                            [counts_of(n) for n in members], subspaces_for(d, num_subspaces), num_codewords,
                            alpha, beta if d > 1 else 0.0, pwr_temperature, contrastive_temperature, num_negatives,
                            rotation and d > 1, batch_size, epochs, patience, learning_rate, kmeans_sample,
                            kmeans_iterations, seed + 1000 * i, progress, checkpointing=checkpointing,
                            strategy=strategy)
        for fc in fcs:
            result[fc.field] = fc
    return CodeSet({n: result[n] for n in chosen}, config=config)


def _learn_tables(group, names, tables, counts, M, K, alpha, beta, tau, tau_c, num_negatives, rotation, batch_size,
                  epochs, patience, learning_rate, kmeans_sample, kmeans_iterations, seed, progress,
                  checkpointing=None, strategy=None) -> list:
    """One PQ model learned on the rows of ``tables`` (one table, or a sharing group's tables, concatenated
    once); returns one :class:`FieldCodes` per table (a group's share one codebook array)."""
    label = names[0] if group is None else f"{group}: {len(names)} tables"
    d = tables[0].shape[1]
    if d % M:
        raise ValueError(f"field {names[0]!r}: embedding dim {d} is not divisible by num_subspaces {M}")
    t0 = time.perf_counter()
    weights = [popularity_weights(c, t.shape[0]) for t, c in zip(tables, counts)]
    table = tables[0] if len(tables) == 1 else np.concatenate(tables)  # a group's rows: one copy
    table_t = tf.constant(table)
    all_weights = weights[0] if len(tables) == 1 else np.concatenate(weights)
    model, history = _train_pq(label, table, table_t, all_weights, M, K, alpha, beta, tau, tau_c, num_negatives,
                               rotation, batch_size, epochs, patience, learning_rate, kmeans_sample,
                               kmeans_iterations, seed, progress, checkpointing=checkpointing,
                               strategy=strategy)
    codes = assign_codes(model, table_t).astype(code_dtype(K))
    books = model.codebooks.numpy()
    projection = model.decoder.numpy() if model.decoder is not None else None
    seconds = time.perf_counter() - t0
    out, start = [], 0
    for name, t, c, w in zip(names, tables, counts, weights):
        fc = FieldCodes(name, codes[start:start + t.shape[0]], books, projection, group=group)
        start += t.shape[0]
        fc.stats = code_statistics(fc, t, c, w)
        fc.stats.update(epochs=len(history), seconds=seconds, history=history)
        if group is not None:
            fc.stats.update(group=group, group_tables=len(names), group_rows=int(table.shape[0]))
        out.append(fc)
    return out


def _train_pq(label, table, table_t, weights, M, K, alpha, beta, tau, tau_c, num_negatives, rotation, batch_size,
              epochs, patience, learning_rate, kmeans_sample, kmeans_iterations, seed, progress, checkpointing=None,
              strategy=None):
    """k-means++ initialisation, then the Adam loop on ``table [V, d]`` (``table_t``: the same as a tensor)
    with ``weights [V]``; returns the
    :class:`PQModel` at its best epoch and the per-epoch loss history. With ``checkpointing`` (a
    :class:`~tfmec.mec.checkpoint.Stage1Checkpointing`) the loop saves its whole state every
    ``checkpointing.every`` steps and after each epoch, and resumes from the latest checkpoint. With a
    ``strategy`` the variables are mirrored and each step runs on every replica (:func:`_distributed_step`)."""
    from tfmec.mec.checkpoint import LoopState, Stage1Checkpoint, has_checkpoint, replay_order, table_fingerprint

    v, d = table.shape
    dm = d // M
    folder = checkpointing.folder(label) if checkpointing is not None else None
    if folder is not None and has_checkpoint(folder):  # the checkpoint holds the codebooks: no k-means
        init = np.zeros((M, K, dm), np.float32)
    else:
        rng = np.random.default_rng(seed)
        sample = rng.choice(v, size=min(v, kmeans_sample), replace=False)
        sub = table[sample].reshape(len(sample), M, dm)
        init = np.stack([kmeans(sub[:, m], K, seed=seed + m, iterations=kmeans_iterations, weights=weights[sample])
                         for m in range(M)])
    weights_t = tf.constant(weights)
    # under a strategy the variables are mirrored: one copy per replica, updated together
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = PQModel(init, rotation=rotation)
        optimizer = Adam(model.trainable, learning_rate)
        step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def losses_and_grads(idx, step_seed):
        """The four loss terms ``[4]`` and gradients of the rows ``idx [B]``."""
        e = tf.gather(table_t, idx)
        w = tf.gather(weights_t, idx)
        with tf.GradientTape() as tape:
            rec, pwr, con, _ = pq_losses(model, e, w, pwr_temperature=tau, contrastive_temperature=tau_c,
                                         num_negatives=num_negatives, seed=step_seed,
                                         compute_contrastive=beta > 0)
            loss = rec + alpha * pwr + beta * con
        return [loss, rec, pwr, con], tape.gradient(loss, model.trainable)

    @tf.function(reduce_retracing=True)  # the last, shorter batch must not add a trace per table
    def train_step(idx):
        values, grads = losses_and_grads(idx, tf.stack([tf.cast(seed, tf.int64), step_counter]))
        optimizer.apply(grads)
        step_counter.assign_add(1)
        return values

    if strategy is not None:
        train_step = _distributed_step(strategy, losses_and_grads, model, optimizer, step_counter, seed)

    dataset = (tf.data.Dataset.range(v).shuffle(min(v, 1_000_000), seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size).prefetch(2))
    steps = math.ceil(v / batch_size)
    state, ckpt = LoopState(), None
    if folder is not None:
        settings = dict(M=M, K=K, alpha=alpha, beta=beta, tau=tau, tau_c=tau_c, num_negatives=num_negatives,
                        rotation=rotation, batch_size=batch_size, epochs=epochs, patience=patience,
                        learning_rate=learning_rate, kmeans_sample=kmeans_sample,
                        kmeans_iterations=kmeans_iterations, seed=seed)
        ckpt = Stage1Checkpoint(folder, model, optimizer, step_counter, table_fingerprint(table, weights, settings),
                                epochs)
        state = ckpt.restore() or state
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps * epochs, desc=f"stage 1 [{label}]", unit="step", leave=False,
                   initial=state.epoch * steps + state.step)
    best, best_state, bad_epochs, history = state.best, state.best_state, state.bad_epochs, state.history
    stopped = state.done or bad_epochs >= patience
    for epoch in range(state.epoch, epochs if not stopped else state.epoch):
        resumed = epoch == state.epoch
        sums = tf.constant(state.sums if resumed else np.zeros(4), tf.float64)
        step = state.step if resumed else 0
        for idx in replay_order(dataset, epoch if resumed else 0, step) if resumed else iter(dataset):
            sums += tf.cast(tf.stack(train_step(idx)), tf.float64)  # the sums stay tensors: no sync per step
            step += 1
            if bar is not None:
                bar.update(1)
            if checkpointing is not None:
                if checkpointing.on_step is not None:
                    checkpointing.on_step(label, epoch, step)
                if step % checkpointing.every == 0 and step < steps:
                    ckpt.save(LoopState(epoch, step, sums.numpy(), best, bad_epochs, best_state, history))
        mean = sums.numpy() / steps
        if not np.all(np.isfinite(mean)):
            if bar is not None:
                bar.close()
            raise ValueError(f"MEC stage 1, table {label!r}: the loss became {mean[0]} (reconstruction {mean[1]}, PWR "
                             f"{mean[2]}, contrastive {mean[3]}) in epoch {epoch + 1}; stopped, the codebooks would be "
                             f"garbage. Lower the stage-1 learning rate, --alpha or --beta, or check the table for "
                             f"NaN or huge values")
        history.append({"loss": mean[0], "reconstruction": mean[1], "pwr": mean[2], "contrastive": mean[3]})
        if bar is not None:
            bar.set_postfix(loss=f"{mean[0]:.4g}", rec=f"{mean[1]:.4g}")
        if mean[0] < best - 1e-6 * abs(best if np.isfinite(best) else 1.0):
            best, bad_epochs = mean[0], 0
            best_state = [var.numpy() for var in model.trainable]
        else:
            bad_epochs += 1
        if ckpt is not None:
            ckpt.save(LoopState(epoch + 1, 0, np.zeros(4), best, bad_epochs, best_state, history))
        if bad_epochs >= patience:
            break
    if bar is not None:
        bar.close()
    if not state.done:
        for var, value in zip(model.trainable, best_state or []):  # epochs=0: plain k-means PQ
            var.assign(value)
        if ckpt is not None:
            ckpt.save(LoopState(len(history), 0, np.zeros(4), best, bad_epochs, best_state, history, done=True))
    return model, history


def _distributed_step(strategy, losses_and_grads, model: PQModel, optimizer, step_counter, seed):
    """The stage-1 step under ``strategy``: ``train_step(idx int64[B]) -> (loss, rec, pwr, con)``.

    Every worker passes the same global batch ``idx`` (same seeded shuffle); replica ``r`` of ``R`` takes
    rows ``idx[r::R]`` and computes ``losses_and_grads`` on them with its own negatives' seed (the step's
    ``(seed, step)`` folded with ``r``). Losses and gradients are summed over replicas weighted by their
    row counts and divided by ``B`` (``strategy.reduce``, an all-reduce across workers), so the update is
    that of a row-weighted mean; a replica without rows (a last batch smaller than ``R``) contributes
    zeros. The update is applied in cross-replica context to the mirrored variables.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(idx):
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        local = idx[rid::replicas]
        rows = tf.shape(local)[0]
        step_seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.cast(seed, tf.int64), step_counter.read_value()]), tf.cast(rid, tf.int32))

        def compute():
            values, grads = losses_and_grads(local, step_seed)
            return tf.stack(values), grads

        def empty():
            return tf.zeros([4]), [tf.zeros_like(v) for v in model.trainable]

        values, grads = tf.cond(rows > 0, compute, empty)
        share = tf.cast(rows, tf.float32)
        return values * share, [g * share for g in grads], share

    @tf.function(reduce_retracing=True)
    def train_step(idx):
        values, grads, share = strategy.run(replica_step, args=(idx,))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, share, axis=None)
        grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) / total for g in grads]
        values = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None) / total
        optimizer.apply(grads)
        step_counter.assign_add(1)
        return tf.unstack(values)

    return train_step


class Adam(tf.Module):
    """Plain Adam (Kingma & Ba) over a fixed list of ``tf.Variable``; the same in both Keras modes."""

    def __init__(self, variables, learning_rate: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__()
        self.variables_ = list(variables)
        self.lr, self.b1, self.b2, self.eps = learning_rate, beta_1, beta_2, epsilon
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables_]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables_]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, grads):
        """One update with ``grads`` aligned to the variables."""
        self.t.assign_add(1.0)
        correction = tf.sqrt(1.0 - self.b2 ** self.t) / (1.0 - self.b1 ** self.t)
        for var, g, m, v in zip(self.variables_, grads, self.m, self.v):
            m.assign(self.b1 * m + (1.0 - self.b1) * g)
            v.assign(self.b2 * v + (1.0 - self.b2) * tf.square(g))
            var.assign_sub(self.lr * correction * m / (tf.sqrt(v) + self.eps))
