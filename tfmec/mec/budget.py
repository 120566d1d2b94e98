"""A byte budget instead of knobs: popularity tiers per table chosen for the best validation AUC (issue 19).

``compress_to_budget(model, counts, budget_bytes, validation_data)`` turns every float embedding table
of a trained model into a :class:`~tfmec.layers.TieredEmbedding` so that all tables together take at
most ``budget_bytes``. The allocation:

1. **Options.** For a table of width ``d``: exact float rows (``4 d`` bytes per id), PQ at every
   ``M`` of :func:`subspace_choices` with ``K`` of 4, 16 or 256 (``ceil(M log2 K / 8)`` bytes per id plus
   ``K d 4`` bytes of codebooks), and a hashed tail (0 bytes per id, ``K d 4`` of codebooks).
2. **Measured distortion.** Each option is fitted on the table's used rows (popularity-weighted
   k-means for PQ, weighted bucket means for the hashed tail: :mod:`tfmec.mec.tiers`) and its squared
   error ``D_o(i)`` measured on every used id ``i``; exact rows have none.
3. **Lagrangian allocation.** With popularity weights ``w_i = count_i ** alpha``, each table minimises
   ``sum_i w_i D(i) + lambda * bytes`` over contiguous tiers (ids are numbered by descending
   frequency; options in decreasing bytes per id, each used at most once) by dynamic programming
   over a grid of candidate boundaries (geometric, plus the cumulative-popularity quantiles and the
   last used id). One ``lambda`` for all tables, found by bisection: the smallest whose total bytes
   fit the budget. By construction the result is never over the budget (checked again on the
   built model).
4. **Checked on validation data.** Each ``alpha`` of ``alphas`` and share of the budget of
   ``fractions`` gives one allocation; with ``validation_data`` the one whose model has the best
   validation AUC (before any fine-tuning) is kept. Test data is never read.

Stage 2 is the caller's: ``model.fit`` trains the codebooks and exact rows with MEC's contrastive term
(``contrastive_weight``), as for :func:`~tfmec.mec.compress_embeddings`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.validation import BudgetTooSmallError
from tfmec.layers._utils import renamed_kwargs
from tfmec.layers.tiered_embedding import Tier, TieredEmbedding, tiers_storage_bytes
from tfmec.mec.tiers import fit_hashed, fit_pq, fit_tiers

DEFAULT_CODEWORDS = (4, 16, 256)
MAX_SUBSPACES = 16
MIN_SUBSPACE_DIM = 4
GRID_POINTS = 160
FIT_ROWS = 65536  # distortion is measured on at most this many used ids per table (the most popular)
PROFILE_SAMPLE = 4096  # k-means of the profile: rows of its weighted sample, and Lloyd iterations
PROFILE_ITERATIONS = 4


def subspace_choices(dim: int) -> list[int]:
    """The ``M`` tried for a table of width ``dim``: powers of two up to 16 that divide it into
    sub-vectors of at least ``MIN_SUBSPACE_DIM`` floats (a lookup gathers ``M`` of them per id, so
    narrow sub-vectors cost serving time for no bytes: ``M = 16, K = 4`` takes the bytes of ``M = 4,
    K = 256``), and 1 (scalar quantisation of ``d = 1`` first-order weights)."""
    return [m for m in (1, 2, 4, 8, 16) if m <= MAX_SUBSPACES and dim % m == 0
            and (m == 1 or dim // m >= MIN_SUBSPACE_DIM)]


@dataclasses.dataclass(frozen=True)
class Option:
    """A way to store a range of ids (a :class:`~tfmec.layers.Tier` without its row count)."""

    kind: str
    num_subspaces: int = 0
    num_codewords: int = 0

    def tier(self, rows: int) -> Tier:
        """This storage for ``rows`` ids."""
        return Tier(self.kind, int(rows), self.num_subspaces, self.num_codewords)

    def label(self) -> str:
        """A short name: ``exact``, ``pq M=4 K=16``, ``hashed M=4 K=16``."""
        return "exact" if self.kind == "exact" else f"{self.kind} M={self.num_subspaces} K={self.num_codewords}"


def table_options(dim: int, vocab_size: int, codewords: Sequence[int] = DEFAULT_CODEWORDS) -> list[Option]:
    """Every option for a ``[vocab_size, dim]`` table, in decreasing bytes per id (exact first, hashed
    last): exact rows, and for every ``M`` of :func:`subspace_choices` and ``K`` of ``codewords`` a pq
    and a hashed option. Options whose codebooks weigh half the float table or more are left out
    (they can never pay for themselves)."""
    full = 4 * dim * vocab_size
    opts = [Option("exact")]
    for m in subspace_choices(dim):
        for k in codewords:
            if 2 * k * dim * 4 < full:
                opts += [Option("pq", m, k), Option("hashed", m, k)]
    return sorted(opts, key=lambda o: (-o.tier(1).id_bytes(dim), o.tier(1).fixed_bytes(dim)))


@dataclasses.dataclass
class TableProfile:
    """What the allocation needs of one table: its shape, the grid of candidate boundaries, and for
    every option the weighted distortion summed up to each grid point (``cost[o][g]``)."""

    key: str
    vocab_size: int
    dim: int
    options: list
    grid: np.ndarray  # int64[G], 0 .. V
    cost: np.ndarray  # float64[O, G]: sum over ids < grid[g] of w_i D_o(i)


def _grid(vocab_size: int, weights: np.ndarray, points: int = GRID_POINTS) -> np.ndarray:
    geo = np.geomspace(1, vocab_size, num=points)
    used = np.flatnonzero(weights > 0)
    extra = [0, vocab_size]
    if used.size:
        extra.append(int(used[-1]) + 1)
        cum = np.cumsum(weights)
        for q in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
            extra.append(int(np.searchsorted(cum, q * cum[-1])) + 1)
    grid = np.unique(np.concatenate([np.round(geo).astype(np.int64), np.asarray(extra, np.int64)]))
    return grid[(grid >= 0) & (grid <= vocab_size)]


@dataclasses.dataclass
class TableErrors:
    """Each option's squared error on the used ids of one table (measured once, weighted per ``alpha``
    afterwards by :meth:`profile`)."""

    key: str
    vocab_size: int
    dim: int
    options: list
    counts: np.ndarray  # float64[V]
    used: np.ndarray  # int64[U]: the measured ids, ascending
    errors: np.ndarray  # float64[O, U]

    def profile(self, alpha: float = 1.0) -> TableProfile:
        """The :class:`TableProfile` with popularity weights ``counts ** alpha``."""
        w = np.power(np.maximum(self.counts, 0.0), alpha)
        grid = _grid(self.vocab_size, w)
        position = np.searchsorted(self.used, grid)  # measured ids below each grid point
        wu = w[self.used]
        cost = np.zeros((len(self.options), grid.size))
        for o in range(len(self.options)):
            cum = np.concatenate([[0.0], np.cumsum(wu * self.errors[o])])
            cost[o] = cum[position]
        return TableProfile(self.key, self.vocab_size, self.dim, self.options, grid, cost)


def measure_table(key: str, table: np.ndarray, counts: np.ndarray, seed: int = 0,
                  codewords: Sequence[int] = DEFAULT_CODEWORDS, fit_alpha: float = 0.75) -> TableErrors:
    """Every option of ``table [V, d]`` fitted on its (at most ``FIT_ROWS``) most used ids, weighted by
    ``counts ** fit_alpha`` (k-means from a weighted random start, a few Lloyd steps: a profile, not the
    final fit), and its squared error on each of them."""
    v, d = table.shape
    counts = np.asarray(counts, np.float64)
    options = table_options(d, v, codewords)
    used = np.flatnonzero(counts > 0)
    if used.size > FIT_ROWS:
        used = np.sort(used[np.argsort(-counts[used], kind="stable")[:FIT_ROWS]])
    rows = np.asarray(table[used], np.float32)
    wu = np.power(counts[used], fit_alpha)
    errors = np.zeros((len(options), used.size))
    for o, opt in enumerate(options):
        if opt.kind == "exact" or not used.size:
            continue
        if opt.kind == "pq":
            if opt.num_codewords >= used.size:  # as many codewords as rows: no error (and no saving)
                continue
            _, _, errors[o] = fit_pq(rows, wu, opt.num_subspaces, opt.num_codewords, seed=seed,
                                     iterations=PROFILE_ITERATIONS, sample_rows=PROFILE_SAMPLE, init="random")
        else:
            _, errors[o] = fit_hashed(rows, used, wu, opt.num_subspaces, opt.num_codewords, salt=7)
    return TableErrors(key, v, d, options, counts, used, errors)


def profile_table(key: str, table: np.ndarray, weights: np.ndarray, seed: int = 0,
                  codewords: Sequence[int] = DEFAULT_CODEWORDS) -> TableProfile:
    """The :class:`TableProfile` of ``table [V, d]`` under popularity ``weights [V]`` (used as they are:
    :func:`measure_table` with ``fit_alpha=1``, profiled at ``alpha=1``)."""
    return measure_table(key, table, weights, seed, codewords, fit_alpha=1.0).profile(1.0)


def _best_chain(profile: TableProfile, lam: float, allowed: list[int]) -> tuple[float, list]:
    """``(objective, [(option index, start grid index, stop grid index), ...])``: the least
    ``distortion + lam * bytes`` over contiguous tiers on the grid using the options ``allowed`` in
    their order, each at most once (a running minimum makes it O(grid x options))."""
    grid, cost, d = profile.grid, profile.cost, profile.dim
    n_g = grid.size
    f_prev = np.full(n_g, math.inf)
    f_prev[0] = 0.0
    back = []
    for o in allowed:
        opt = profile.options[o]
        rate = lam * opt.tier(1).id_bytes(d)
        fixed = lam * opt.tier(1).fixed_bytes(d)
        # f[j] = min(f_prev[j], min_{i<j} f_prev[i] - rate*g_i - cost_i + rate*g_j + cost_j + fixed)
        term = f_prev - rate * grid - cost[o]
        run_min = np.minimum.accumulate(term)
        arg = np.zeros(n_g, np.int64)
        best_i = 0
        for j in range(1, n_g):  # argmin of term[0..j-1]
            if term[j - 1] <= term[best_i]:
                best_i = j - 1
            arg[j] = best_i
        via = np.full(n_g, math.inf)
        via[1:] = run_min[:-1] + rate * grid[1:] + cost[o][1:] + fixed
        use = via < f_prev
        f = np.where(use, via, f_prev)
        back.append(np.where(use, arg, -1))
        f_prev = f
    chain, j, k = [], n_g - 1, len(allowed) - 1
    while j > 0:
        while back[k][j] < 0:
            k -= 1
        start = int(back[k][j])
        chain.append((allowed[k], start, j))
        j, k = start, k - 1
    chain.reverse()
    return float(f_prev[-1]), chain


def best_tiers(profile: TableProfile, lam: float, plain: bool = False) -> tuple[list[Tier], float]:
    """``(tiers, distortion)`` minimising ``distortion + lam * bytes`` for one table: contiguous tiers on
    the profile's grid, options in decreasing bytes per id, each at most once, and the coded tiers of
    one table sharing ``M`` (so that they decode with one gather: :class:`TieredEmbedding`). Every
    family of one ``M`` is solved and the best kept.

    With ``plain``: one tier for the whole table, exact or PQ (plain product quantisation sized to
    the budget: the competitor without popularity tiers)."""
    if plain:
        d, last = profile.dim, profile.grid.size - 1
        best = min((profile.cost[o][last] + lam * opt.tier(profile.vocab_size).storage_bytes(d), o)
                   for o, opt in enumerate(profile.options) if opt.kind in ("exact", "pq"))
        o = best[1]
        return [profile.options[o].tier(profile.vocab_size)], float(profile.cost[o][last])
    families = sorted({o.num_subspaces for o in profile.options if o.kind != "exact"})
    best = None
    for m in families or [0]:
        allowed = [i for i, o in enumerate(profile.options) if o.kind == "exact" or o.num_subspaces == m]
        value, chain = _best_chain(profile, lam, allowed)
        if best is None or value < best[0]:
            best = (value, chain)
    tiers, distortion = [], 0.0
    for o, a, b in best[1]:
        tiers.append(profile.options[o].tier(int(profile.grid[b] - profile.grid[a])))
        distortion += profile.cost[o][b] - profile.cost[o][a]
    return tiers, distortion


def allocate(profiles: Sequence[TableProfile], budget_bytes: int, contrastive: bool = True,
             iterations: int = 60, plain: bool = False) -> dict:
    """The allocation of every table within ``budget_bytes``: ``{"lambda", "bytes", "distortion",
    "tables": {key: [Tier, ...]}}`` (``plain``: one exact or PQ tier per table, see
    :func:`best_tiers`). ``contrastive``: coded tables of ``d > 1`` carry the 8-byte ``negatives_step``
    counter (``d = 1`` tables get no contrastive term). Raises ``ValueError`` naming the least bytes possible when the budget is below
    them."""
    def solve(lam):
        tables, total, dist = {}, 0, 0.0
        for p in profiles:
            tiers, dd = best_tiers(p, lam, plain)
            tables[p.key] = tiers
            total += tiers_storage_bytes(tiers, p.dim, contrastive and p.dim > 1)  # d = 1: no contrastive term
            dist += dd
        return tables, total, dist

    tables, total, dist = solve(0.0)
    if total <= budget_bytes:
        return {"lambda": 0.0, "bytes": total, "distortion": dist, "tables": tables}
    hi = 1e-12
    while True:  # the least lambda tried that fits, scanning down (distortions may be tiny) then up
        tables, total, dist = solve(hi)
        if total > budget_bytes:
            break
        if hi < 1e-60:
            return {"lambda": hi, "bytes": total, "distortion": dist, "tables": tables}
        hi /= 10.0
    while True:
        tables, total, dist = solve(hi)
        if total <= budget_bytes:
            break
        if hi > 1e30:
            how = "one PQ tier of the fewest codewords" if plain else "one hashed tier of the fewest codewords"
            raise BudgetTooSmallError(f"a memory budget of {budget_bytes:,} bytes is below the least the embedding tables can "
                             f"take ({total:,} bytes: every table {how}); give at least that")
        hi *= 10.0
    lo = hi / 10.0
    best = (tables, total, dist, hi)
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        tables, total, dist = solve(mid)
        if total <= budget_bytes:
            hi, best = mid, (tables, total, dist, mid)
        else:
            lo = mid
        if hi / lo < 1.0001:
            break
    tables, total, dist, lam = best
    return {"lambda": lam, "bytes": total, "distortion": dist, "tables": tables}


@tfmec_export("tfmec.mec.BudgetPlan")
@dataclasses.dataclass
class BudgetPlan:
    """What :func:`compress_to_budget` chose: per table its tiers, the bytes, the popularity exponent
    ``alpha`` kept and the validation AUC of every candidate (``alpha``, ``fraction`` of the budget)."""

    budget_bytes: int
    bytes: int
    alpha: float
    tables: dict  # key -> list of tier dicts
    candidates: list  # [{"alpha", "bytes", "validation_auc"}]
    untouched_bytes: int = 0

    def to_dict(self) -> dict:
        """The JSON-serialisable plan (``metrics.json``'s ``budget``)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line per table: its tiers as ``rows x kind``."""
        lines = [f"memory budget {self.budget_bytes:,} bytes: {self.bytes:,} used (alpha {self.alpha})"]
        for key, tiers in self.tables.items():
            parts = [f"{t['rows']:,} {t['kind']}" + (f" M={t['num_subspaces']} K={t['num_codewords']}"
                                                     if t["kind"] != "exact" else "") for t in tiers]
            lines.append(f"  {key}: " + ", ".join(parts))
        return "\n".join(lines)


@tfmec_export("tfmec.mec.compress_to_budget")
@renamed_kwargs({"temperature": "contrastive_temperature"})
def compress_to_budget(model, counts: Mapping, budget_bytes: int, validation_data=None, *,
                       alphas: Sequence[float] = (1.0, 0.5), contrastive_weight: float | None = None,
                       num_negatives: int | None = None, contrastive_temperature: float | None = None, seed: int = 0,
                       fractions: Sequence[float] = (1.0, 0.25), codewords: Sequence[int] = DEFAULT_CODEWORDS,
                       plain: bool = False, inplace: bool = False, log=None):
    """A copy of ``model`` whose float embedding tables are popularity-tiered to fit ``budget_bytes``.

    Args:
        model: a trained Keras model with ``keras.layers.Embedding`` tables anywhere
            (:func:`tfmec.graph.find_tables`).
        counts: ``{table key, layer name or path: int[V]}`` training counts of each table's ids (from
            :func:`tfmec.mec.count_ids`, or a tfmec vocabulary's counts); a table without counts gets
            all-ones weights. Ids are assumed numbered by descending frequency (tfmec's vocabularies
            and ``count_ids`` of a ``StringLookup`` are); tiers are id ranges either way.
        budget_bytes: bytes of all embedding tables together (tables that are not float
            ``Embedding`` layers count as they are).
        validation_data: a ``tf.data.Dataset`` of ``(features, labels)``; with it each ``alpha`` is
            tried and the best validation AUC kept.
        alphas: popularity exponents tried (``w = count ** alpha``).
        fractions: shares of the budget tried with each alpha (with ``validation_data``): the budget is
            a ceiling, and a smaller allocation that validates better is kept (an overfit baseline's
            exact rows can be worth less than hashed ones). Without ``validation_data`` only the first
            alpha at the whole budget is built.
        contrastive_weight, num_negatives, contrastive_temperature: MEC's contrastive term in stage 2
            (default: :func:`~tfmec.mec.learn_codes`'s ``beta``, ``num_negatives`` and
            ``contrastive_temperature``; ``temperature`` is the deprecated name of
            ``contrastive_temperature``, one release).
        seed: seed of the k-means fits and the negatives.
        codewords: the ``K`` values tried for PQ and hashed tiers.
        plain: one exact or PQ tier per table (plain PQ sized to the budget, no popularity tiers: the
            competitor ``tfmec run --method pq`` uses at a budget).
        inplace: swap inside ``model`` itself (subclassed models that cannot be copied).
        log: optional ``print``-like callable for progress lines.

    Returns:
        ``(compressed model, BudgetPlan)``; the compressed model's embedding bytes are at most
        ``budget_bytes``.

    Raises:
        ValueError: a budget below the least the tables can take (the message gives it), a model
            without float tables, or ``counts`` naming no table.
    """
    from tfmec.backend import keras
    from tfmec.evaluation import embedding_layers, evaluate, variable_bytes
    from tfmec.graph import find_tables, keyed_by_table

    from tfmec.mec.codes import stage1_default

    log = log or (lambda *_: None)
    contrastive_weight = float(stage1_default("beta") if contrastive_weight is None else contrastive_weight)
    num_negatives = int(stage1_default("num_negatives") if num_negatives is None else num_negatives)
    contrastive_temperature = float(stage1_default("contrastive_temperature") if contrastive_temperature is None
                                    else contrastive_temperature)
    refs = find_tables(model)
    float_refs = [r for r in refs if isinstance(r.layer, keras.layers.Embedding) and r.layer.weights]
    if not float_refs:
        raise ValueError(f"compress_to_budget: model {getattr(model, 'name', model)!r} has no float "
                         "keras.layers.Embedding tables (searched every nested model and layer)")
    others = sum(variable_bytes(layer.weights) for layer in embedding_layers(model)
                 if not any(layer is r.layer for r in float_refs))
    budget = int(budget_bytes) - int(others)
    counted = keyed_by_table(refs, counts, "counts") if counts else {}
    tables = {r.key: np.asarray(r.layer.get_weights()[0], np.float32) for r in float_refs}
    measured = []
    for key, table in tables.items():
        c = np.asarray(counted.get(key, np.ones(table.shape[0])), np.float64)
        if c.shape != (table.shape[0],):
            raise ValueError(f"counts of table {key!r} have shape {c.shape}, the table has {table.shape[0]} rows")
        measured.append(measure_table(key, table, c, seed=seed, codewords=codewords))
    candidates, best = [], None
    settings = [(a, f) for a in alphas for f in fractions] if validation_data is not None else [(alphas[0], 1.0)]
    for alpha, fraction in settings:
        profiles = [m.profile(alpha) for m in measured]
        try:
            plan = allocate(profiles, int(budget * fraction), contrastive=contrastive_weight > 0, plain=plain)
        except BudgetTooSmallError:
            if fraction == 1.0:
                raise
            continue  # a smaller budget than the tables can take: not a candidate
        candidate = _build(model, float_refs, tables, counted, plan["tables"], alpha, seed, contrastive_weight,
                           num_negatives, contrastive_temperature, inplace=inplace and len(settings) == 1)
        auc = None
        if validation_data is not None:
            auc = float(evaluate(candidate, validation_data)["auc"])
        candidates.append({"alpha": float(alpha), "fraction": float(fraction), "bytes": int(plan["bytes"] + others),
                           "validation_auc": auc})
        log(f"budget alpha={alpha}, {fraction:g} of the budget: {plan['bytes'] + others:,} bytes"
            + ("" if auc is None else f", validation AUC {auc:.4f} before fine-tuning"))
        if best is None or (auc is not None and auc > best[0]):
            best = (auc if auc is not None else -math.inf, candidate, plan, alpha)
    _, model_out, plan, alpha = best
    used = sum(variable_bytes(layer.weights) for layer in embedding_layers(model_out))
    if used > int(budget_bytes):
        raise AssertionError(f"compress_to_budget built {used:,} bytes of tables for a budget of {budget_bytes:,}")
    return model_out, BudgetPlan(int(budget_bytes), int(used), float(alpha),
                                 {k: [t.to_config() for t in v] for k, v in plan["tables"].items()},
                                 candidates, int(others))


def _build(model, refs, tables, counted, allocation, alpha, seed, beta, negatives, tau, inplace=False):
    from tfmec.distribute import local_integer_variables
    from tfmec.graph.swap import is_functional, swap_layers
    from tfmec.mec.model import MECModel

    by_layer = {id(r.layer): r.key for r in refs}

    def replace(layer):
        key = by_layer.get(id(layer))
        if key is None:
            return None
        tiers = allocation[key]
        if len(tiers) == 1 and tiers[0].kind == "exact":
            return None  # the whole table stays float: keep the layer
        table = tables[key]
        c = np.asarray(counted.get(key, np.ones(table.shape[0])), np.float64)
        arrays = fit_tiers(table, tiers, np.power(np.maximum(c, 0.0), alpha), seed=seed)
        has_codes = any(t.kind != "exact" for t in tiers) and table.shape[1] > 1
        return TieredEmbedding(table.shape[0], table.shape[1], tiers, arrays=arrays, name=layer.name,
                               contrastive_weight=beta if has_codes else 0.0, num_negatives=negatives,
                               contrastive_temperature=tau, seed=seed,
                               mask_zero=bool(getattr(layer, "mask_zero", False)))

    with local_integer_variables():
        new, _ = swap_layers(model, replace, inplace=inplace)
    if is_functional(new) and not isinstance(new, MECModel):
        new = MECModel(inputs=new.input, outputs=new.output, name=new.name)
    return new


__all__ = ["compress_to_budget", "allocate", "profile_table", "measure_table", "TableErrors", "best_tiers", "table_options", "subspace_choices",
           "BudgetPlan", "Option", "TableProfile"]
