"""AFM compression of a Keras model of any kind: low-rank Dense layers and embedding tables.

:func:`compress` follows DESIGN.md section 1.2 on functional models (nested ones included),
``Sequential`` models, subclassed models and custom layers alike:

1. **Finding the layers.** The Dense layers (exact type ``keras.layers.Dense``) and DCNv2 cross
   networks (:class:`~tfmec.layers.CrossNetV2`) are found by structure wherever they sit
   (:func:`tfmec.graph.walk.iter_layers`: nested functional sub-models, ``Sequential``, attributes,
   lists and dicts of subclassed models and custom layers such as DeepCTR's ``DNN``). One forward
   pass on the first calibration batch records the order in which the model calls them (the order
   they are compressed in) and how often (a layer called more than once, or never, is left and
   reported). Layers holding their own 2-D kernels instead of Dense sub-layers (a custom MLP written
   with ``add_weight``) cannot be reached: they are listed in the report, and a warning names them
   when no Dense layer could be reached at all. The Dense kernel inside a TFRS ``dcn.Cross`` layer
   is left unless named in ``layers=``.
2. **MLP step.** First to last in forward order, each selected layer is calibrated on what it really
   receives in the *partly compressed* model: the model runs over the calibration data with every
   layer already factored computing its replacement (its ``call`` temporarily routed to the
   ``AFMDense``) while the layer's inputs are captured (:func:`tfmec.graph.capture.run_capturing`);
   the pre-activations ``z = x W + b`` are accumulated in one streaming float64 pass
   (:mod:`tfmec.afm.stats`), ``k`` is chosen from the eigenvalues and the layer's
   :class:`~tfmec.layers.AFMDense` is built. Dense layers with ``n_out == 1`` (logits) and layers the
   rank rule refuses are left as they are and reported. Then ONE copy of the model is made with all
   replacements (:func:`tfmec.graph.swap.swap_layers`, the clone-and-swap every tfmec method uses).
3. Optional fine-tuning (one epoch by default).
4. **Embedding step** (``embeddings=...``). Every selected ``keras.layers.Embedding`` table (found
   by :func:`tfmec.graph.walk.find_tables`) becomes a :class:`~tfmec.layers.LowRankEmbedding`
   ``(E - mu) U_k`` plus the up-projection ``(U_k^T, mu)``, calibrated on the rows of the ids it
   really receives (all tables in one pass; a table shared by several fields over all its calls;
   ``mask_zero`` tables keep their mask and are calibrated without the padding id 0). The following
   layers still see ``[..., d]``.
5. Optional fine-tuning again.

The input model is never modified (unless ``inplace=True`` for a subclassed model); while the MLP
step calibrates, the ``call`` of its layers already factored is routed to their replacements, and
restored when each pass ends.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import sys
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfmec.afm.cross import cross_network_params, cross_refusal, factor_cross_network
from tfmec.afm.stats import (
    _no_rows,
    dense_preactivation_moments,
    embedding_output_moments,
    pca,
    select_rank,
)
from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.evaluation import array_weights, embedding_bytes, model_bytes, param_count, param_count_of
from tfmec.graph.capture import features_of, patched_calls
from tfmec.graph.swap import CopyError, new_instance, own_weights, swap_layers, transfer_state
from tfmec.graph.walk import find_tables, is_table, iter_layers, resolve_table
from tfmec.layers.afm_dense import AFMDense, LowRankEmbedding, dense_params, embedding_params
from tfmec.layers.cross import CrossNetV2
from tfmec.towers import is_tower_model
from tfmec.afm.fine_tune import FINE_TUNE_KEYS, FineTune, run_fine_tune


# --------------------------------------------------------------------------------------- report
@tfmec_export("tfmec.afm.LayerReport")
@dataclasses.dataclass
class LayerReport:
    """What AFM did with one layer.

    Attributes:
        name: the layer's path in the model (``/``-joined layer names, :func:`tfmec.graph.walk.iter_layers`;
            its name for a top-level layer), ``<path>[<index>]`` for one cross layer of a ``CrossNetV2``.
        kind: ``"dense"``, ``"cross"`` (one cross layer of a ``CrossNetV2``), ``"embedding"``, or
            ``"custom"``: a layer holding Dense-like kernels of its own that AFM cannot reach (never
            compressed; ``n_in``, ``n_out`` are its first kernel's shape).
        n_in, n_out: input and output widths (for a table: ``V`` and ``d``).
        rank: the chosen ``k``, or None when the layer was left as it is.
        kept_energy: share of the output variance held by the top ``k`` components (None when not
            computed).
        params_before, params_after: parameters of the layer before and after (equal when left).
        compressed: whether the layer was replaced.
        reason: why it was left alone (empty when compressed).
        eigenvalues: the eigenvalues of the output covariance, descending (None when not computed),
            for the report's spectrum plot.
    """

    name: str
    kind: str
    n_in: int
    n_out: int
    rank: int | None
    kept_energy: float | None
    params_before: int
    params_after: int
    compressed: bool
    reason: str = ""
    eigenvalues: list | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@tfmec_export("tfmec.afm.AFMReport")
@dataclasses.dataclass
class AFMReport:
    """The outcome of :func:`compress`.

    Attributes:
        layers: one :class:`LayerReport` per Dense / cross layer (in forward order), unreachable custom
            layer and embedding table considered.
        settings: the rank rule and options used.
        params_before, params_after: scalars in all weights of the model.
        dense_params_before, dense_params_after: scalars in the model's ``Dense`` and ``AFMDense`` layers
            wherever they sit (the MLP and logit layers).
        cross_params_before, cross_params_after: scalars in the model's ``CrossNetV2`` layers (DCNv2's
            cross network).
        embedding_bytes_before, embedding_bytes_after: bytes of the embedding tables
            (:func:`tfmec.evaluation.embedding_bytes`).
        model_bytes_before, model_bytes_after: bytes of all weights.
        fine_tune: ``[{"stage": "mlp" | "embeddings", "history": {...}}]`` for each fine-tuning run.
    """

    layers: list = dataclasses.field(default_factory=list)
    settings: dict = dataclasses.field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    dense_params_before: int = 0
    dense_params_after: int = 0
    cross_params_before: int = 0
    cross_params_after: int = 0
    embedding_bytes_before: int = 0
    embedding_bytes_after: int = 0
    model_bytes_before: int = 0
    model_bytes_after: int = 0
    fine_tune: list = dataclasses.field(default_factory=list)

    @property
    def ranks(self) -> dict:
        """``{layer path: k}`` of the replaced layers."""
        return {r.name: r.rank for r in self.layers if r.compressed}

    @property
    def compressed(self) -> list:
        return [r for r in self.layers if r.compressed]

    @property
    def skipped(self) -> list:
        return [r for r in self.layers if not r.compressed]

    def to_dict(self) -> dict:
        """A JSON-able dict (for ``metrics.json``)."""
        out = dataclasses.asdict(self)
        out["layers"] = [r.to_dict() for r in self.layers]
        out["ranks"] = self.ranks
        return out

    def summary(self) -> str:
        """A plain-text table, one line per layer."""
        lines = [f"{'layer':<28} {'kind':<9} {'n_in':>7} {'n_out':>6} {'rank':>5} {'energy':>7} "
                 f"{'params':>10} {'-> after':>10}  note"]
        for r in self.layers:
            energy = "" if r.kept_energy is None else f"{r.kept_energy:.4f}"
            rank = "" if r.rank is None else str(r.rank)
            lines.append(f"{r.name:<28} {r.kind:<9} {r.n_in:>7} {r.n_out:>6} {rank:>5} {energy:>7} "
                         f"{r.params_before:>10} {r.params_after:>10}  {r.reason}")
        lines.append(f"dense params {self.dense_params_before} -> {self.dense_params_after}; "
                     f"embedding bytes {self.embedding_bytes_before} -> {self.embedding_bytes_after}; "
                     f"model params {self.params_before} -> {self.params_after}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- swapping
def _swap(model, by_id: Mapping[int, object], inplace: bool = False):
    """:func:`tfmec.graph.swap.swap_layers` of ``model`` with ``{id(layer): replacement}``; every
    replacement must have been placed."""
    new, replaced = swap_layers(model, lambda layer: by_id.get(id(layer)), inplace=inplace)
    missing = [key for key in by_id if key not in replaced]
    if missing:
        names = [layer.name for layer in by_id.values() if id(layer) in set(missing)]
        raise CopyError(f"afm: the copy of {model.name!r} did not reach the layers to replace ({len(missing)}) "
                        f"{names}")
    if new is model:  # swapped in place: traced functions still hold the old layers
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(model, attr, None) is not None:
                setattr(model, attr, None)
    return new


@tfmec_export("tfmec.afm.replace_layers")
def replace_layers(model, replacements: Mapping[str, object], *, inplace: bool = False):
    """A copy of ``model`` (any kind) with the layers named in ``replacements`` (by name or by path,
    :func:`tfmec.graph.walk.iter_layers`) swapped for the given layers; everything else is copied with
    its weights (:func:`tfmec.graph.swap.swap_layers`). A thin wrapper kept for callers of the
    name-keyed API; ``ValueError`` for a name that matches no layer or several."""
    refs = list(iter_layers(model))
    by_id = {}
    for key, new in dict(replacements).items():
        layer = _resolve_layer(refs, key, "replace_layers")
        by_id[id(layer)] = new
    return _swap(model, by_id, inplace=inplace)


def _resolve_layer(refs, name: str, what: str):
    """The layer that ``name`` (a path, else a layer name) names among ``refs``."""
    matches = [ref for ref in refs if ref.path == name] or [ref for ref in refs if ref.layer.name == name]
    if not matches:
        raise ValueError(f"{what}: the model has no layer named {name!r} (layers: "
                         f"{[ref.path for ref in refs][:30]})")
    if len(matches) > 1:
        raise ValueError(f"{what}: {name!r} names several layers {[ref.path for ref in matches]}; use a path")
    return matches[0].layer


@contextlib.contextmanager
def _substituted(pairs):
    """Within the block, each ``old`` of ``pairs`` (layer, replacement) computes ``replacement`` when
    called: the partly compressed model, without copying it."""
    pairs = list(pairs)

    def make_call(i, original):
        replacement = pairs[i][1]
        return lambda *args, **kwargs: replacement(args[0] if args else kwargs["inputs"])

    with patched_calls([old for old, _ in pairs], make_call):
        yield


def _copy_layer(layer):
    """A fresh copy of leaf ``layer`` with its weights (config + state)."""
    new = new_instance(layer)
    transfer_state(layer, new)
    return new


# --------------------------------------------------------------------------------------- finding layers
def _forward_calls(model, layers: Sequence, calibration) -> list[int]:
    """The indices of ``layers`` in the order ``model`` calls them in one forward pass over the first
    calibration batch (a layer called ``n`` times appears ``n`` times; never called: absent)."""
    first = next(iter(calibration), None)
    if first is None:
        raise _no_rows()
    calls, graphs = [], []

    def make_call(i, original):
        def hooked(*args, **kwargs):
            calls.append((i, tf.compat.v1.get_default_graph()))
            return original(*args, **kwargs)

        return hooked

    with patched_calls(layers, make_call):
        @tf.function
        def forward(features):
            calls.clear()
            graphs.append(tf.compat.v1.get_default_graph())
            model(features, training=False)
            return tf.constant(0)

        forward(features_of(first))
    graph = graphs[-1] if graphs else None
    return [i for i, g in calls if g is graph]  # tf-keras may also call layers in scratch graphs


def _foreign_cross_refusal(ref) -> str:
    """Why the Dense of ``ref`` is left by default: the kernel of a TFRS ``dcn.Cross`` layer (a cross
    network, which AFM factors as :class:`~tfmec.layers.CrossNetV2` only); '' otherwise."""
    parent = type(ref.parent)
    if parent.__name__ == "Cross" and parent.__module__.startswith("tensorflow_recommenders"):
        return ("the kernel of a TFRS dcn.Cross layer: AFM factors cross networks as tfmec.layers.CrossNetV2; "
                "name it in layers= to factor it as a Dense layer")
    return ""


def _is_dense(layer) -> bool:
    return type(layer) is keras.layers.Dense


def _select_dense(refs, layers, cross: bool) -> list:
    """The Dense / CrossNetV2 layers to consider (``LayerRef``s, walk order)."""
    if layers is None:
        return [ref for ref in refs if _is_dense(ref.layer) or (cross and isinstance(ref.layer, CrossNetV2))]
    names = [layers] if isinstance(layers, str) else list(layers)
    chosen = {}
    for name in names:
        layer = _resolve_layer(refs, str(name), "layers")
        if isinstance(layer, (keras.layers.Dense, CrossNetV2)):
            chosen[id(layer)] = True
            continue
        inside = [ref for ref in refs if ref.path.startswith(_path_of(refs, layer) + "/")
                  and (_is_dense(ref.layer) or isinstance(ref.layer, CrossNetV2))]
        if not inside:
            raise ValueError(f"layers: {name!r} is a {type(layer).__name__}, not a Dense or CrossNetV2 layer "
                             f"(nor a model or layer holding one)")
        chosen.update((id(ref.layer), True) for ref in inside)
    return [ref for ref in refs if id(ref.layer) in chosen]


def _path_of(refs, layer) -> str:
    return next(ref.path for ref in refs if ref.layer is layer)


def _select_tables(model, embeddings) -> list:
    """The tables (``TableRef``s) ``embeddings`` names: all of them for True, none for False."""
    if not embeddings:
        return []
    tables = find_tables(model)
    if embeddings is True:
        return tables
    names = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    chosen = {}
    for name in names:
        ref = resolve_table(tables, str(name), "embeddings")
        chosen[id(ref.layer)] = ref
    return [ref for ref in tables if id(ref.layer) in chosen]


def _own_kernels(layer) -> list:
    """The shapes of the 2-D float weights (both sides >= 2) ``layer`` creates itself."""
    out = []
    for w in array_weights(own_weights(layer)):
        shape = tuple(int(x) for x in w.shape)
        if len(shape) != 2 or min(shape) < 2:
            continue
        if not np.issubdtype(np.dtype(getattr(w.dtype, "as_numpy_dtype", w.dtype)), np.floating):
            continue
        out.append(shape)
    return out


def _unreachable(refs) -> list:
    """``[(ref, kernel shapes, own parameters, reason)]`` of the layers holding Dense-like weights AFM
    cannot reach: a layer (not a Dense, table, CrossNetV2 or another tfmec layer) with its own 2-D
    kernels."""
    out = []
    for ref in refs:
        layer = ref.layer
        if _is_dense(layer) or is_table(layer) or isinstance(layer, (AFMDense, CrossNetV2)):
            continue
        if type(layer).__module__.startswith("tfmec."):
            continue  # tfmec's own layers (attention, numeric embeddings, gated cross): not an MLP to factor
        kernels = _own_kernels(layer)
        if not kernels:
            continue
        cls = type(layer).__name__
        if isinstance(layer, keras.layers.Dense):
            reason = (f"a subclass of Dense ({cls}), whose call may differ from Dense's: not factored unless "
                      f"named in layers=")
        else:
            reason = (f"unreachable: {cls} holds its own kernels {kernels} instead of keras.layers.Dense "
                      f"sub-layers; AFM factors Dense layers only")
        params = param_count_of(own_weights(layer))
        out.append((ref, kernels, params, reason))
    return out


# --------------------------------------------------------------------------------------- refusals and counts
def _call_refusal(calls: int) -> str:
    if calls == 0:
        return "not called when the model runs on the calibration data: nothing to calibrate on"
    if calls > 1:
        return f"shared layer (called {calls} times in one forward pass): no single input to calibrate on"
    return ""


def _dense_refusal(layer, calls: int) -> str:
    """Why a Dense layer cannot be factored ('' when it can)."""
    if not layer.built:
        return "layer is not built"
    if int(layer.units) == 1:
        return "output layer (n_out = 1): factoring cannot save parameters"
    if getattr(layer, "lora_enabled", False):
        return "LoRA-enabled Dense layers are not supported"
    if getattr(layer, "quantization_mode", None):
        return f"quantized Dense layer ({layer.quantization_mode}) is not supported"
    return _call_refusal(calls)


def _embedding_refusal(layer, calls: int) -> str:
    if not isinstance(layer, keras.layers.Embedding):
        return f"a {type(layer).__name__} table: AFM factors keras.layers.Embedding tables"
    if not layer.built:
        return "layer is not built"
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return "quantized or LoRA-enabled Embedding tables are not supported"
    if int(layer.output_dim) < 2:
        return "table of dim 1: nothing to reduce"
    if calls == 0:
        return "not called when the model runs on the calibration data: nothing to calibrate on"
    return ""


def _cross_layer_params(model) -> int:
    return sum(cross_network_params(ref.layer) for ref in iter_layers(model) if isinstance(ref.layer, CrossNetV2))


def _dense_layer_params(model) -> int:
    return sum(param_count(ref.layer) for ref in iter_layers(model)
               if isinstance(ref.layer, (keras.layers.Dense, AFMDense)))


def _built_by_a_call(layer, shape, dtype):
    """``layer`` built by an eager call on zeros (tf-keras then records its build shape for saving)."""
    layer(tf.zeros(shape, dtype=dtype))
    return layer


# --------------------------------------------------------------------------------------- fine-tuning
def _run_fine_tune(model, fine_tune, stage: str, report: AFMReport):
    """:func:`tfmec.afm.fine_tune.run_fine_tune`, its entry added to ``report.fine_tune``."""
    model, entry = run_fine_tune(model, fine_tune, stage)
    report.fine_tune.append(entry)
    return model


def _settings(rank, energy, param_budget, embedding_rank, embedding_energy, embeddings, allow_larger, fine_tune,
              layers, cross):
    """The options of a run, JSON-able (datasets are left out)."""
    if isinstance(embeddings, bool):
        tables = embeddings
    else:
        tables = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    if fine_tune is None or callable(fine_tune):
        tune = None if fine_tune is None else "callable"
    else:
        tune = fine_tune.settings()
    chosen = None if layers is None else ([layers] if isinstance(layers, str) else [str(x) for x in layers])
    return dict(rank=rank, energy=energy, param_budget=param_budget, embedding_rank=embedding_rank,
                embedding_energy=embedding_energy, embeddings=tables, allow_larger=bool(allow_larger), fine_tune=tune,
                layers=chosen, cross=bool(cross))


def _log(verbose: bool, entry: LayerReport):
    if not verbose:
        return
    if entry.compressed:
        print(f"[afm] {entry.name}: {entry.n_in}x{entry.n_out} -> rank {entry.rank} "
              f"(energy {entry.kept_energy:.4f}, params {entry.params_before} -> {entry.params_after})",
              file=sys.stderr, flush=True)
    else:
        print(f"[afm] {entry.name}: left as it is ({entry.reason})", file=sys.stderr, flush=True)


def _add(report: AFMReport, entry: LayerReport, verbose: bool):
    report.layers.append(entry)
    _log(verbose, entry)


def _factor_cross(model, path, layer, calls, calibration, report: AFMReport, verbose: bool, **rule):
    """:func:`tfmec.afm.cross.factor_cross_network` on ``layer``, one report line per cross layer
    (named ``<path>[<index>]``, kind ``"cross"``)."""
    refusal = cross_refusal(layer) or _call_refusal(calls)
    if refusal:
        params = cross_network_params(layer) if layer.built else 0
        _add(report, LayerReport(path, "cross", 0, 0, None, None, params, params, False, refusal), verbose)
        return None

    def add(index, dim, choice):
        name = f"{path}[{index}]"
        if choice is None:
            params = 2 * dim * int(layer.layer_ranks[index]) + dim
            entry = LayerReport(name, "cross", dim, dim, None, None, params, params, False, "already factored")
        else:
            entry = LayerReport(name, "cross", dim, dim, choice.rank, choice.kept_energy, choice.params_before,
                                choice.params_after, choice.rank is not None, choice.reason)
        _add(report, entry, verbose)

    return factor_cross_network(model, layer, calibration, report_entry=add, **rule)


def _factor_dense(model, path, layer, calls, calibration, report: AFMReport, verbose: bool, refusal: str = "",
                  **rule):
    """The :class:`AFMDense` of Dense ``layer`` (built), or None when it is left (``refusal``: why, when
    the caller already knows); one report line."""
    n_in = int(layer.kernel.shape[0]) if layer.built else 0
    n_out = int(layer.units)
    before = dense_params(n_in, n_out, use_bias=layer.bias is not None) if layer.built else 0
    refusal = refusal or _dense_refusal(layer, calls)
    if refusal:
        _add(report, LayerReport(path, "dense", n_in, n_out, None, None, before, before, False, refusal), verbose)
        return None
    moments = dense_preactivation_moments(model, layer, calibration)
    values, vectors = _pca(moments, path)
    choice = select_rank(values, before, lambda k: dense_params(n_in, n_out, k), **rule)
    _add(report, LayerReport(path, "dense", n_in, n_out, choice.rank, choice.kept_energy, choice.params_before,
                             choice.params_after, choice.rank is not None, choice.reason,
                             eigenvalues=[float(x) for x in values]), verbose)
    if choice.rank is None:
        return None
    new = AFMDense.from_dense(layer, vectors[:, : choice.rank], moments.mean)
    return _built_by_a_call(new, (1, n_in), "float32")


def _pca(moments, path: str):
    covariance = moments.covariance()
    if not (np.all(np.isfinite(covariance)) and np.all(np.isfinite(moments.mean))):
        raise ValueError(f"afm.compress: what layer {path!r} computes on the calibration data holds NaN or inf "
                         f"(the model's own outputs do too); AFM needs finite activations")
    return pca(covariance)


def _nothing_reached_warning(model, unreachable) -> None:
    if unreachable:
        listing = "; ".join(f"{ref.path} ({type(ref.layer).__name__}, kernels {kernels})"
                            for ref, kernels, _, _ in unreachable)
        warnings.warn(f"afm.compress reached no Dense layer it could factor in {model.name!r}, which holds Dense-like "
                      f"weights in layers AFM cannot reach: {listing}. AFM factors keras.layers.Dense layers (called "
                      f"once each, anywhere in the model); build the MLP from Dense sub-layers to compress it",
                      stacklevel=3)
    else:
        warnings.warn(f"afm.compress found no Dense or CrossNetV2 layer it could factor in {model.name!r}: the MLP "
                      f"step replaces nothing (see the report for the layers it left and why)", stacklevel=3)


def _relocate(model, layers: list, paths: list) -> list:
    """``layers`` as found in ``model`` (a callable ``fine_tune`` may hand back another model): the
    same objects where ``model`` holds them, else the layers at the same paths."""
    refs = list(iter_layers(model))
    present = {id(ref.layer) for ref in refs}
    out = []
    for layer, path in zip(layers, paths):
        if id(layer) in present:
            out.append(layer)
            continue
        matches = [ref.layer for ref in refs if ref.path == path]
        if len(matches) != 1:
            raise ValueError(f"afm.compress: the model fine_tune returned holds no table at {path!r}; return the "
                             f"model it was given (trained in place) or one with the same layers")
        out.append(matches[0])
    return out


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(f"afm.compress needs a Keras model (functional, Sequential or subclassed), got a "
                         f"{type(model).__name__}")
    if not model.built:
        raise ValueError(f"afm.compress: model {model.name!r} ({type(model).__name__}) is not built: call it once on a "
                         f"batch of features first (AFM factors trained weights); a model tfmec cannot copy can also "
                         f"hand its layers over through the tower protocol (tfmec.towers)")


# --------------------------------------------------------------------------------------- compress
@tfmec_export("tfmec.afm.compress")
def compress(
    model,
    calibration,
    rank: int | None = None,
    energy: float | None = None,
    param_budget: float | int | None = None,
    embeddings: bool | str | Sequence[str] = False,
    fine_tune: FineTune | Mapping | Callable | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    cross: bool = True,
    embedding_rank: int | None = None,
    embedding_energy: float | None = None,
    allow_larger: bool = False,
    inplace: bool = False,
    verbose: bool = False,
):
    """AFM-compresses a Keras model (DESIGN.md 1.2; the module docstring says how).

    Args:
        model: a built Keras model of any kind: functional (every zoo model of
            :data:`tfmec.models.MODELS`, a :class:`~tfmec.mec.MECModel`, a user model, with nested
            functional sub-models), ``Sequential``, or subclassed (its layers held as attributes, in
            lists or dicts, or inside custom layers). It is copied with
            :func:`tfmec.graph.swap.swap_layers` (a subclassed model and custom layers need a
            ``get_config`` returning their constructor arguments; see there) and not modified. A
            model following the tower protocol of :mod:`tfmec.towers` (e.g. a TFRS
            :class:`~tfmec.integrations.tfrs.TowerRankingModel`) has its tower compressed and is
            returned as ``model.with_tower(compressed tower)``; a callable ``fine_tune`` then receives
            that wrapped model (so TFRS fine-tunes with its own task), a dict ``fine_tune`` fits the
            tower with the dict's loss.
        calibration: a ``tf.data.Dataset`` (or re-iterable) of ``(features, label)`` batches (or bare
            features) fed to the model; it is iterated once per compressed Dense / cross layer plus once
            for all tables (and its first batch once more to find the layers' order), so keep it
            finite (e.g. ``train.take(200)``).
        rank: fixed ``k`` for every layer (capped at ``n_out``).
        energy: choose per layer the smallest ``k`` whose components hold this share of the
            pre-activation variance (``0 < energy <= 1``). Exclusive with ``rank``.
        param_budget: upper bound on each factored layer's parameters: ``0 < float <= 1`` is a share of
            the original layer's, an int an absolute count. Alone it picks the largest ``k`` that
            fits; with ``rank``/``energy`` it caps their ``k``.
        embeddings: False (MLP only), True (every table :func:`tfmec.graph.walk.find_tables` finds;
            those that are not ``keras.layers.Embedding``, or of dim 1, are reported and left), or
            table keys / layer names / paths (:func:`tfmec.graph.walk.resolve_table`).
        fine_tune: None; a callable ``f(model)`` called after the MLP step and after the embedding
            step (it compiles and fits the model itself; if it returns a ``keras.Model`` that model
            is used from then on); or a :class:`~tfmec.afm.FineTune` (or a dict of its field names:
            ``train`` required, ``valid``, ``epochs``, ``learning_rate``, ``optimizer`` (``"adam"`` or
            ``"lazy_adam"``), ``loss``, ``patience``, ``keep_start``, ``verbose``, ``steps_per_epoch``,
            ``checkpoint_dir``, ``checkpoint_fingerprint``): the model is compiled by
            :func:`tfmec.training.compile_ctr` and fitted by :func:`tfmec.training.fit_early_stopping`
            (with ``valid``, early stopping on validation AUC restores the best epoch, and with
            ``keep_start`` the weights before fine-tuning count as a candidate; with
            ``checkpoint_dir`` every epoch is checkpointed under ``checkpoint_dir/mlp`` and
            ``checkpoint_dir/embeddings`` and a rerun resumes). A step that replaced nothing is not
            fine-tuned.
        layers: names or paths (``"mlp/dense_1"``) of the Dense / CrossNetV2 layers to consider, or of
            models / layers holding them (all theirs are taken). Default: every layer of exact type
            ``keras.layers.Dense`` anywhere in the model, and every ``CrossNetV2`` when ``cross``.
            Layers with ``n_out == 1`` are always left alone.
        cross: factor DCNv2's cross network too (:mod:`tfmec.afm.cross`: each cross layer's
            ``x_l W_l + b_l`` by the PCA of its outputs, with the same rank rule); default True.
        embedding_rank, embedding_energy: the rank rule of the tables (default: ``rank`` / ``energy``;
            ``param_budget`` applies to the tables too).
        allow_larger: replace layers even when the factored form is not smaller (exactness checks
            at full rank); default False.
        inplace: swap the layers inside ``model`` itself when it is a subclassed model (no copy: for
            a class that cannot be rebuilt from its config; recompile it before training). Functional
            and ``Sequential`` models are always copied.
        verbose: print one line per layer to stderr.

    Returns:
        ``(new_model, report)``: a new model of the same kind (same inputs and outputs; the class of a
        functional subclass such as ``MECModel`` or of a subclassed model is kept; compiled only if a
        dict ``fine_tune`` ran last), ``model`` itself with ``inplace=True`` (subclassed), or
        ``model.with_tower(...)`` for a tower model (uncompiled); and an :class:`AFMReport`
        (``report.to_dict()`` is JSON-able; ``report.ranks`` maps layer paths to ``k``). The report
        lists every considered layer, those left with the reason: logits, refused ranks, layers called
        more than once or never, and layers holding Dense-like kernels AFM cannot reach (kind
        ``"custom"``; a warning names them when no Dense layer could be factored at all).

    Raises:
        ValueError: no rank rule, ``rank`` with ``energy``, an unknown layer or table name, an unbuilt
            model or empty calibration data; :class:`tfmec.graph.swap.CopyError` (a ``ValueError``)
            when a layer of the model cannot be copied, with the change that makes it possible.

    Notes:
        An ``AFMDense`` drops a Dense layer's kernel regulariser and constraint, a ``LowRankEmbedding``
        an Embedding's. A Dense layer called more than once (a shared MLP) is left as it is.
    """
    if is_tower_model(model):
        return _compress_tower(model, calibration, rank=rank, energy=energy, param_budget=param_budget,
                               embeddings=embeddings, fine_tune=fine_tune, layers=layers, cross=cross,
                               embedding_rank=embedding_rank, embedding_energy=embedding_energy,
                               allow_larger=allow_larger, inplace=inplace, verbose=verbose)
    _check_model(model)
    if rank is None and energy is None and param_budget is None:
        raise ValueError("afm.compress: give one of rank, energy or param_budget")
    if rank is not None and energy is not None:
        raise ValueError("afm.compress: give either rank or energy, not both")
    if embedding_rank is not None and embedding_energy is not None:
        raise ValueError("afm.compress: give either embedding_rank or embedding_energy, not both")
    fine_tune = FineTune.coerce(fine_tune)
    if embedding_rank is None and embedding_energy is None:
        embedding_rank, embedding_energy = rank, energy
    # validate the rules and the names before any (slow) calibration pass
    select_rank(np.ones(2), 10**9, lambda k: k, rank=rank, energy=energy, param_budget=param_budget, allow_larger=True)
    if embeddings:
        select_rank(np.ones(2), 10**9, lambda k: k, rank=embedding_rank, energy=embedding_energy,
                    param_budget=param_budget, allow_larger=True)
    refs = list(iter_layers(model))
    dense_refs = _select_dense(refs, layers, cross)
    table_refs = _select_tables(model, embeddings)
    unreachable = _unreachable(refs) if layers is None else []
    watched = [ref.layer for ref in dense_refs] + [ref.layer for ref in table_refs]
    order = _forward_calls(model, watched, calibration)
    calls = collections.Counter(order)
    first = {}
    for position, i in enumerate(order):
        first.setdefault(i, position)

    report = AFMReport(
        settings=_settings(rank, energy, param_budget, embedding_rank, embedding_energy, embeddings, allow_larger,
                           fine_tune, layers, cross),
        params_before=param_count(model),
        dense_params_before=_dense_layer_params(model),
        cross_params_before=_cross_layer_params(model),
        embedding_bytes_before=embedding_bytes(model),
        model_bytes_before=model_bytes(model),
    )
    rule = dict(rank=rank, energy=energy, param_budget=param_budget, allow_larger=allow_larger)

    # ---- MLP step: first to last in forward order, each calibrated on the partly compressed model
    done = []  # (original layer, its replacement), in forward order
    reachable = 0
    for i in sorted(range(len(dense_refs)), key=lambda j: (first.get(j, math.inf), j)):
        ref = dense_refs[i]
        layer = ref.layer
        if isinstance(layer, CrossNetV2):
            factor, extra = _factor_cross, {}
        else:
            factor, extra = _factor_dense, {"refusal": _foreign_cross_refusal(ref) if layers is None else ""}
        if calls[i] == 1 and (isinstance(layer, CrossNetV2) or int(layer.units) > 1) and not extra.get("refusal"):
            reachable += 1
        with _substituted(done):
            new_layer = factor(model, ref.path, layer, calls[i], calibration, report, verbose, **extra, **rule)
        if new_layer is not None:
            done.append((layer, new_layer))
    for ref, kernels, params, reason in unreachable:
        n_in, n_out = kernels[0]
        _add(report, LayerReport(ref.path, "custom", n_in, n_out, None, None, params, params, False, reason), verbose)
    if layers is None and not reachable and (unreachable or not table_refs):
        _nothing_reached_warning(model, unreachable)

    # tables to factor later: copied in the MLP step's swap, so that they are known in the new model
    tables, table_paths = [], []
    for j, ref in enumerate(table_refs):
        n = calls[len(dense_refs) + j]
        refusal = _embedding_refusal(ref.layer, n)
        if refusal:
            v, d = ref.input_dim, ref.output_dim
            size = param_count(ref.layer)
            _add(report, LayerReport(ref.path, "embedding", v, d, None, None, size, size, False, refusal), verbose)
        else:
            tables.append(ref.layer)
            table_paths.append(ref.path)

    current, swapped = model, False
    if done:
        copies = {id(t): _copy_layer(t) for t in tables}
        current, swapped = _swap(model, {**{id(old): new for old, new in done}, **copies}, inplace=inplace), True
        tables = [copies[id(t)] for t in tables]
        if fine_tune is not None:
            paths = _paths(current, tables)
            current = _run_fine_tune(current, fine_tune, "mlp", report)
            tables = _relocate(current, tables, paths)

    # ---- embedding step: every table in one calibration pass
    if tables:
        all_moments = embedding_output_moments(current, tables, calibration)
        replacements = {}
        for layer, path, moments in zip(tables, table_paths, all_moments):
            v, d = int(layer.input_dim), int(layer.output_dim)
            if moments.count == 0:
                _add(report, LayerReport(path, "embedding", v, d, None, None, v * d, v * d, False,
                                         "no calibration row reached it (only padding or out-of-range ids)"), verbose)
                continue
            values, vectors = _pca(moments, path)
            choice = select_rank(values, embedding_params(v, d), lambda k: embedding_params(v, d, k),
                                 rank=embedding_rank, energy=embedding_energy, param_budget=param_budget,
                                 allow_larger=allow_larger)
            _add(report, LayerReport(path, "embedding", v, d, choice.rank, choice.kept_energy, choice.params_before,
                                     choice.params_after, choice.rank is not None, choice.reason,
                                     eigenvalues=[float(x) for x in values]), verbose)
            if choice.rank is not None:
                new = LowRankEmbedding.from_embedding(layer, vectors[:, : choice.rank], moments.mean)
                replacements[id(layer)] = _built_by_a_call(new, (1,), "int32")
        if replacements:
            current, swapped = _swap(current, replacements, inplace=inplace), True
            if fine_tune is not None:
                current = _run_fine_tune(current, fine_tune, "embeddings", report)

    if not swapped:  # nothing replaced: still hand back a copy (inplace: a subclassed model itself)
        current = _swap(model, {}, inplace=inplace)
    report.params_after = param_count(current)
    report.dense_params_after = _dense_layer_params(current)
    report.cross_params_after = _cross_layer_params(current)
    report.embedding_bytes_after = embedding_bytes(current)
    report.model_bytes_after = model_bytes(current)
    return current, report


def _paths(model, layers: list) -> list:
    where = {}
    for ref in iter_layers(model):
        where.setdefault(id(ref.layer), ref.path)
    return [where.get(id(layer), layer.name) for layer in layers]


def _compress_tower(model, calibration, *, fine_tune, **kwargs):
    """:func:`compress` of a tower-protocol model (:mod:`tfmec.towers`): compresses ``model.tower`` and
    returns ``(model.with_tower(new tower), report)``. A callable ``fine_tune`` gets the wrapped model."""
    if callable(fine_tune):
        user_fine_tune = fine_tune

        def fine_tune(tower):  # noqa: F811 - the wrapper the tower's compression calls
            result = user_fine_tune(model.with_tower(tower))
            return result.tower if is_tower_model(result) else tower  # the wrapper trained ``tower`` in place

    tower, report = compress(model.tower, calibration, fine_tune=fine_tune, **kwargs)
    return model.with_tower(tower), report


__all__ = ["compress", "replace_layers", "AFMReport", "LayerReport", "FineTune", "FINE_TUNE_KEYS"]
