"""AFM compression of a functional Keras model: low-rank Dense layers and embedding tables.

:func:`compress` follows DESIGN.md section 1.2:

1. **MLP step.** The selected Dense layers are replaced first to last (``model.layers`` order). For
   each one, the calibration data runs through the *current*, partly compressed model up to the
   layer's input (``keras.Model(model.input, layer.input)``), the pre-activations ``z = x W + b``
   are accumulated in one streaming float64 pass (:mod:`tfmec.afm.stats`), ``k`` is chosen from the
   eigenvalues, and the layer becomes an :class:`~tfmec.layers.AFMDense` (the model is cloned with
   the new layer before the next layer is calibrated). Dense layers with ``n_out == 1`` (logits)
   and layers the rank rule refuses are left as they are and reported.
2. Optional fine-tuning (one epoch by default).
3. **Embedding step** (``embeddings=...``). Every ``keras.layers.Embedding`` named
   ``embedding_<field>`` (or those named) becomes a :class:`~tfmec.layers.LowRankEmbedding`
   ``(E - mu) U_k`` plus the up-projection ``(U_k^T, mu)``, calibrated on the field's looked-up rows
   (all tables in one pass: they do not depend on each other). The following layers still see
   ``[batch, d]``.
4. Optional fine-tuning again.

Every swap clones the model with ``keras.models.clone_model`` and a ``clone_function`` and copies the
weights of every untouched layer, as :func:`tfmec.mec.compress_embeddings` does. The input model is
never modified.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Mapping, Sequence

import numpy as np

from tfmec.afm.cross import cross_network_params, cross_refusal, factor_cross_network
from tfmec.afm.stats import (
    dense_preactivation_moments,
    embedding_output_moments,
    pca,
    select_rank,
)
from tfmec.backend import keras
from tfmec.evaluation import embedding_bytes, model_bytes, param_count
from tfmec.layers.afm_dense import AFMDense, LowRankEmbedding, dense_params, embedding_params
from tfmec.layers.cross import CrossNetV2
from tfmec.towers import PROTOCOL_HINT, is_tower_model
from tfmec.training import check_fit_supported, fit_early_stopping

FINE_TUNE_KEYS = ("train", "valid", "epochs", "learning_rate", "loss", "verbose", "steps_per_epoch", "patience",
                  "keep_start")


# --------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class LayerReport:
    """What AFM did with one layer.

    Attributes:
        name: layer name.
        kind: ``"dense"``, ``"cross"`` (one cross layer of a ``CrossNetV2``) or ``"embedding"``.
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


@dataclasses.dataclass
class AFMReport:
    """The outcome of :func:`compress`.

    Attributes:
        layers: one :class:`LayerReport` per Dense layer and embedding table considered, in order.
        settings: the rank rule and options used.
        params_before, params_after: scalars in all weights of the model.
        dense_params_before, dense_params_after: scalars in the model's top-level ``Dense`` and
            ``AFMDense`` layers (the MLP and logit layers).
        cross_params_before, cross_params_after: scalars in the model's top-level ``CrossNetV2``
            layers (DCNv2's cross network).
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
        """``{layer name: k}`` of the replaced layers."""
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


# --------------------------------------------------------------------------------------- cloning
def replace_layers(model, replacements: Mapping[str, object]):
    """A copy of functional ``model`` with the layers named in ``replacements`` swapped for the given
    (unbuilt or built) layers; every other layer is rebuilt from its config and gets the original's
    weights. The class of a functional subclass (e.g. ``MECModel``) is kept when it can be rebuilt
    from ``inputs=``/``outputs=``."""
    replacements = dict(replacements)

    def clone(layer):
        if layer.name in replacements:
            return replacements[layer.name]
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in replacements or not layer.weights:
            continue
        new.get_layer(layer.name).set_weights(layer.get_weights())
    return _keep_class(model, new)


def _keep_class(original, new):
    cls = type(original)
    if type(new) is cls or cls.__module__.startswith(("keras.", "tf_keras.")):
        return new
    try:
        return cls(inputs=new.input, outputs=new.output, name=new.name)
    except Exception:  # noqa: BLE001 - a subclass with another constructor: a plain functional model
        return new


# --------------------------------------------------------------------------------------- helpers
def _is_functional(model) -> bool:
    try:
        return isinstance(model, keras.Model) and bool(model.inputs) and hasattr(model, "layers") and \
            model.input is not None
    except Exception:  # noqa: BLE001 - subclassed models raise on .inputs / .input
        return False


def _dense_candidates(model, layers, cross: bool = True) -> list:
    """Names of the Dense (and, with ``cross``, CrossNetV2) layers to factor, in ``model.layers`` order."""
    dense_cls = keras.layers.Dense
    if layers is None:
        return [layer.name for layer in model.layers
                if type(layer) is dense_cls or (cross and isinstance(layer, CrossNetV2))]
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        try:
            layer = model.get_layer(name)
        except ValueError as err:
            raise ValueError(f"layers: the model has no layer named {name!r}") from err
        if not isinstance(layer, (dense_cls, CrossNetV2)):
            raise ValueError(f"layers: {name!r} is a {type(layer).__name__}, not a Dense or CrossNetV2 layer")
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(dict.fromkeys(names), key=order.__getitem__)


def _embedding_candidates(model, embeddings) -> list:
    tables = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    if embeddings is True:
        return [layer.name for layer in tables if layer.name.startswith("embedding_")]
    names = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    by_name = {layer.name: layer for layer in tables}
    chosen = []
    for name in names:
        key = name if name in by_name else f"embedding_{name}"
        if key not in by_name:
            raise ValueError(f"embeddings: no keras Embedding layer named {name!r} or 'embedding_{name}'")
        chosen.append(key)
    return list(dict.fromkeys(chosen))


def _dense_refusal(layer) -> str:
    """Why a Dense layer cannot be factored ('' when it can)."""
    if not layer.built:
        return "layer is not built"
    if int(layer.units) == 1:
        return "output layer (n_out = 1): factoring cannot save parameters"
    if getattr(layer, "lora_enabled", False):
        return "LoRA-enabled Dense layers are not supported"
    if getattr(layer, "quantization_mode", None):
        return f"quantized Dense layer ({layer.quantization_mode}) is not supported"
    if len(getattr(layer, "_inbound_nodes", [])) > 1:
        return "shared layer (called more than once): no single input to calibrate on"
    return ""


def _embedding_refusal(layer) -> str:
    if not layer.built:
        return "layer is not built"
    if int(layer.output_dim) < 2:
        return "table of dim 1: nothing to reduce"
    if getattr(layer, "mask_zero", False):
        return "mask_zero tables are not supported"
    if len(getattr(layer, "_inbound_nodes", [])) > 1:
        return "shared layer (called more than once)"
    return ""


def _cross_layer_params(model) -> int:
    return sum(cross_network_params(layer) for layer in model.layers if isinstance(layer, CrossNetV2))


def _dense_layer_params(model) -> int:
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, AFMDense)):
            total += int(sum(int(np.prod(w.shape)) for w in layer.weights))
    return total


def _check_fine_tune(fine_tune):
    if fine_tune is None or callable(fine_tune):
        return
    if not isinstance(fine_tune, Mapping):
        raise TypeError(f"fine_tune must be None, a callable or a dict, got {type(fine_tune).__name__}")
    unknown = sorted(set(fine_tune) - set(FINE_TUNE_KEYS))
    if unknown:
        raise ValueError(f"fine_tune: unknown key(s) {unknown}; accepted keys are {list(FINE_TUNE_KEYS)}")
    if "train" not in fine_tune:
        raise ValueError("fine_tune: a dict needs a 'train' dataset")
    if int(fine_tune.get("epochs", 1)) < 1:
        raise ValueError(f"fine_tune: epochs must be >= 1, got {fine_tune.get('epochs')}")


def _run_fine_tune(model, fine_tune, stage: str, report: AFMReport):
    if callable(fine_tune):
        result = fine_tune(model)
        if isinstance(result, keras.Model):
            model = result
        report.fine_tune.append({"stage": stage, "history": {}})
        return model
    spec = dict(fine_tune)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(spec.get("learning_rate", 1e-3))),
        loss=spec.get("loss", "binary_crossentropy"),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    kwargs = {}
    if spec.get("steps_per_epoch") is not None:
        kwargs["steps_per_epoch"] = int(spec["steps_per_epoch"])
    epochs, verbose = int(spec.get("epochs", 1)), spec.get("verbose", 0)
    entry = {"stage": stage}
    if spec.get("valid") is not None:
        fit = fit_early_stopping(model, spec["train"], spec["valid"], epochs=epochs,
                                 patience=int(spec.get("patience", 1)), verbose=verbose,
                                 keep_start=spec.get("keep_start", True), **kwargs)
        history = fit["history"]
        entry["best_epoch"] = fit["best_epoch"]
        if fit["start_auc"] is not None:
            entry["start_valid_auc"] = fit["start_auc"]
    else:
        check_fit_supported(model)
        history = model.fit(spec["train"], epochs=epochs, verbose=verbose, **kwargs).history
    entry["history"] = {key: [float(v) for v in values] for key, values in history.items()}
    report.fine_tune.append(entry)
    return model


def _settings(rank, energy, param_budget, embedding_rank, embedding_energy, embeddings, allow_larger, fine_tune):
    """The options of a run, JSON-able (datasets are left out)."""
    if isinstance(embeddings, bool):
        tables = embeddings
    else:
        tables = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    if fine_tune is None or callable(fine_tune):
        tune = None if fine_tune is None else "callable"
    else:
        tune = {key: value for key, value in fine_tune.items() if key not in ("train", "valid")}
    return dict(rank=rank, energy=energy, param_budget=param_budget, embedding_rank=embedding_rank,
                embedding_energy=embedding_energy, embeddings=tables, allow_larger=bool(allow_larger), fine_tune=tune)


def _log(verbose: bool, entry: LayerReport):
    if not verbose:
        return
    if entry.compressed:
        print(f"[afm] {entry.name}: {entry.n_in}x{entry.n_out} -> rank {entry.rank} "
              f"(energy {entry.kept_energy:.4f}, params {entry.params_before} -> {entry.params_after})",
              file=sys.stderr, flush=True)
    else:
        print(f"[afm] {entry.name}: left as it is ({entry.reason})", file=sys.stderr, flush=True)


def _factor_cross(model, layer, calibration, report: AFMReport, verbose: bool, **rule):
    """:func:`tfmec.afm.cross.factor_cross_network` on ``layer``, one report line per cross layer
    (named ``<layer>[<index>]``, kind ``"cross"``)."""
    refusal = cross_refusal(layer)
    if refusal:
        params = cross_network_params(layer) if layer.built else 0
        entry = LayerReport(layer.name, "cross", 0, 0, None, None, params, params, False, refusal)
        report.layers.append(entry)
        _log(verbose, entry)
        return None

    def add(index, dim, choice):
        name = f"{layer.name}[{index}]"
        if choice is None:
            params = 2 * dim * int(layer.layer_ranks[index]) + dim
            entry = LayerReport(name, "cross", dim, dim, None, None, params, params, False, "already factored")
        else:
            entry = LayerReport(name, "cross", dim, dim, choice.rank, choice.kept_energy, choice.params_before,
                                choice.params_after, choice.rank is not None, choice.reason)
        report.layers.append(entry)
        _log(verbose, entry)

    return factor_cross_network(model, layer, calibration, report_entry=add, **rule)


# --------------------------------------------------------------------------------------- compress
def compress(
    model,
    calibration,
    rank: int | None = None,
    energy: float | None = None,
    param_budget: float | int | None = None,
    embeddings: bool | str | Sequence[str] = False,
    fine_tune: Mapping | Callable | None = None,
    layers: Sequence[str] | None = None,
    *,
    cross: bool = True,
    embedding_rank: int | None = None,
    embedding_energy: float | None = None,
    allow_larger: bool = False,
    verbose: bool = False,
):
    """AFM-compresses a functional Keras model (DESIGN.md 1.2).

    Args:
        model: a functional Keras model (every zoo model of :data:`tfmec.models.MODELS`, a
            :class:`~tfmec.mec.MECModel`, or a user model; a built ``Sequential`` is treated as the
            equivalent functional model) whose Dense layers / embedding tables are top-level layers;
            it is not modified. A model following the tower protocol of :mod:`tfmec.towers` (e.g. a
            TFRS :class:`~tfmec.integrations.tfrs.TowerRankingModel`) has its tower compressed and is
            returned as ``model.with_tower(compressed tower)``; a callable ``fine_tune`` then receives
            that wrapped model (so TFRS fine-tunes with its own task), a dict ``fine_tune`` fits the
            tower with the dict's loss.
        calibration: a ``tf.data.Dataset`` (or iterable) of ``(features, label)`` batches (or bare
            features) fed to the model; it is iterated once per compressed Dense layer plus once for
            all tables, so keep it finite (e.g. ``train.take(200)``).
        rank: fixed ``k`` for every layer (capped at ``n_out``).
        energy: choose per layer the smallest ``k`` whose components hold this share of the
            pre-activation variance (``0 < energy <= 1``). Exclusive with ``rank``.
        param_budget: upper bound on each factored layer's parameters: ``0 < float <= 1`` is a share of
            the original layer's, an int an absolute count. Alone it picks the largest ``k`` that
            fits; with ``rank``/``energy`` it caps their ``k``.
        embeddings: False (MLP only), True (every ``keras.layers.Embedding`` named
            ``embedding_<field>``), or a list of layer / field names.
        fine_tune: None; a callable ``f(model)`` called after the MLP step and after the embedding
            step (it compiles and fits the model itself; if it returns a ``keras.Model`` that model
            is used from then on); or a dict with keys ``train`` (dataset, required), ``valid``
            (dataset), ``epochs`` (default 1), ``learning_rate`` (Adam, default 1e-3), ``loss``
            (default ``"binary_crossentropy"``), ``verbose`` (default 0), ``steps_per_epoch``,
            ``patience`` (default 1), ``keep_start`` (default True): the model is compiled with Adam,
            that loss and an ``AUC`` metric named ``auc`` and fitted; with ``valid``, early stopping
            on validation AUC restores the best epoch, and with ``keep_start`` the weights before
            fine-tuning count as a candidate (fine-tuning never makes validation AUC worse).
            A step that replaced nothing is not fine-tuned.
        layers: names of the Dense / CrossNetV2 layers to consider (default: every top-level layer of
            exact type ``keras.layers.Dense``, and every ``CrossNetV2`` when ``cross``; layers with
            ``n_out == 1`` are always left alone).
        cross: factor DCNv2's cross network too (:mod:`tfmec.afm.cross`: each cross layer's
            ``x_l W_l + b_l`` by the PCA of its outputs, with the same rank rule); default True.
        embedding_rank, embedding_energy: the rank rule of the tables (default: ``rank`` / ``energy``;
            ``param_budget`` applies to the tables too).
        allow_larger: replace layers even when the factored form is not smaller (exactness checks
            at full rank); default False.
        verbose: print one line per layer to stderr.

    Returns:
        ``(new_model, report)``: a new functional model (same inputs and outputs; the class of a
        functional subclass such as ``MECModel`` is kept; compiled only if a dict ``fine_tune`` ran),
        or ``model.with_tower(...)`` for a tower model (uncompiled), and an :class:`AFMReport` (``report.to_dict()`` is JSON-able; ``report.ranks`` maps layer
        names to ``k``).

    Raises:
        ValueError: no rank rule, ``rank`` with ``energy``, an unknown layer name, a non-functional
            model or empty calibration data.

    Notes:
        An ``AFMDense`` drops a Dense layer's kernel regulariser and constraint. Dense layers inside
        nested models are not visited.
    """
    if is_tower_model(model):
        return _compress_tower(model, calibration, rank=rank, energy=energy, param_budget=param_budget,
                               embeddings=embeddings, fine_tune=fine_tune, layers=layers, cross=cross,
                               embedding_rank=embedding_rank, embedding_energy=embedding_energy,
                               allow_larger=allow_larger, verbose=verbose)
    if isinstance(model, keras.Sequential) and getattr(model, "inputs", None):
        model = keras.Model(model.inputs, model.outputs, name=model.name)  # a functional view of its layers
    if not _is_functional(model):
        raise ValueError(f"afm.compress needs a functional Keras model (built with keras.Model(inputs, outputs)), "
                         f"got a {type(model).__name__}. {PROTOCOL_HINT}.")
    if rank is None and energy is None and param_budget is None:
        raise ValueError("afm.compress: give one of rank, energy or param_budget")
    if rank is not None and energy is not None:
        raise ValueError("afm.compress: give either rank or energy, not both")
    if embedding_rank is not None and embedding_energy is not None:
        raise ValueError("afm.compress: give either embedding_rank or embedding_energy, not both")
    _check_fine_tune(fine_tune)
    if embedding_rank is None and embedding_energy is None:
        embedding_rank, embedding_energy = rank, energy
    # validate the rules before any (slow) calibration pass
    select_rank(np.ones(2), 10**9, lambda k: k, rank=rank, energy=energy, param_budget=param_budget, allow_larger=True)
    if embeddings:
        select_rank(np.ones(2), 10**9, lambda k: k, rank=embedding_rank, energy=embedding_energy,
                    param_budget=param_budget, allow_larger=True)

    report = AFMReport(
        settings=_settings(rank, energy, param_budget, embedding_rank, embedding_energy, embeddings, allow_larger,
                           fine_tune),
        params_before=param_count(model),
        dense_params_before=_dense_layer_params(model),
        cross_params_before=_cross_layer_params(model),
        embedding_bytes_before=embedding_bytes(model),
        model_bytes_before=model_bytes(model),
    )

    current = model
    # ---- MLP step: first to last, each layer calibrated on the partly compressed model
    replaced_dense = 0
    for name in _dense_candidates(model, layers, cross):
        layer = current.get_layer(name)
        if isinstance(layer, CrossNetV2):
            new_layer = _factor_cross(current, layer, calibration, report, verbose, rank=rank, energy=energy,
                                      param_budget=param_budget, allow_larger=allow_larger)
            if new_layer is not None:
                current = replace_layers(current, {name: new_layer})
                replaced_dense += 1
            continue
        n_in = int(layer.kernel.shape[0]) if layer.built else 0
        n_out = int(layer.units)
        before = dense_params(n_in, n_out, use_bias=layer.bias is not None) if layer.built else 0
        refusal = _dense_refusal(layer)
        if refusal:
            entry = LayerReport(name, "dense", n_in, n_out, None, None, before, before, False, refusal)
        else:
            moments = dense_preactivation_moments(current, layer, calibration)
            values, vectors = pca(moments.covariance())
            choice = select_rank(values, before, lambda k: dense_params(n_in, n_out, k), rank=rank,
                                 energy=energy, param_budget=param_budget, allow_larger=allow_larger)
            entry = LayerReport(name, "dense", n_in, n_out, choice.rank, choice.kept_energy, choice.params_before,
                                choice.params_after, choice.rank is not None, choice.reason,
                                eigenvalues=[float(x) for x in values])
            if choice.rank is not None:
                new_layer = AFMDense.from_dense(layer, vectors[:, : choice.rank], moments.mean)
                current = replace_layers(current, {name: new_layer})
                replaced_dense += 1
        report.layers.append(entry)
        _log(verbose, entry)
    if fine_tune is not None and replaced_dense:
        current = _run_fine_tune(current, fine_tune, "mlp", report)

    # ---- embedding step: every table in one calibration pass
    if embeddings:
        names = _embedding_candidates(current, embeddings)
        pending = []
        for name in names:
            layer = current.get_layer(name)
            v, d = int(layer.input_dim), int(layer.output_dim)
            refusal = _embedding_refusal(layer)
            if refusal:
                entry = LayerReport(name, "embedding", v, d, None, None, v * d, v * d, False, refusal)
                report.layers.append(entry)
                _log(verbose, entry)
            else:
                pending.append(layer)
        replacements = {}
        if pending:
            all_moments = embedding_output_moments(current, pending, calibration)
            for layer, moments in zip(pending, all_moments):
                v, d = int(layer.input_dim), int(layer.output_dim)
                values, vectors = pca(moments.covariance())
                choice = select_rank(values, embedding_params(v, d), lambda k: embedding_params(v, d, k),
                                     rank=embedding_rank, energy=embedding_energy, param_budget=param_budget,
                                     allow_larger=allow_larger)
                entry = LayerReport(layer.name, "embedding", v, d, choice.rank, choice.kept_energy,
                                    choice.params_before, choice.params_after, choice.rank is not None, choice.reason,
                                    eigenvalues=[float(x) for x in values])
                if choice.rank is not None:
                    replacements[layer.name] = LowRankEmbedding.from_embedding(
                        layer, vectors[:, : choice.rank], moments.mean)
                report.layers.append(entry)
                _log(verbose, entry)
        if replacements:
            current = replace_layers(current, replacements)
            if fine_tune is not None:
                current = _run_fine_tune(current, fine_tune, "embeddings", report)

    if current is model:  # nothing replaced: still hand back a copy, never the input itself
        current = replace_layers(model, {})
    report.params_after = param_count(current)
    report.dense_params_after = _dense_layer_params(current)
    report.cross_params_after = _cross_layer_params(current)
    report.embedding_bytes_after = embedding_bytes(current)
    report.model_bytes_after = model_bytes(current)
    return current, report


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


__all__ = ["compress", "replace_layers", "AFMReport", "LayerReport", "FINE_TUNE_KEYS"]
