"""The main job: load data, train each requested method on the same split and seed, evaluate,
write ``metrics.json`` and print a table. ``tfmec run`` is a thin layer over :func:`run_experiment`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Sequence

from tfmec.backend import KERAS_MODE, keras
from tfmec.data import load
from tfmec.data.readers import FORMATS as READER_FORMATS
from tfmec.data.vocabulary import write_json_atomic
from tfmec.evaluation import embedding_bytes, evaluate, model_bytes, param_count, prediction_throughput
from tfmec.io import save_model
from tfmec.models import build_model
from tfmec.outlock import holds_output_lock
from tfmec.settings import STAGE2_MODES, Settings
from tfmec.training import compile_ctr, fit_early_stopping, known_batches
from tfmec.validation import BUDGET_METHODS, check_run_settings

FORMATS = tuple(READER_FORMATS)  # criteo, avazu, csv, libsvm (libfm), mind, parquet, tfrecord
PLANNED_METHODS: dict[str, int] = {}  # method -> the issue that tracks it (none pending)


class RunConfig(Settings):
    """Everything ``tfmec run`` needs: the sections of :mod:`tfmec.settings` (``cfg.mec``,
    ``cfg.training``, ...), each setting also an attribute named like its flag (``cfg.alpha``)."""

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad setting: each field by its own declaration
        (:meth:`~tfmec.settings.Settings.check_fields`: type, choices, range), then the methods (of
        :data:`METHODS`) and the settings that must agree with each other
        (:func:`tfmec.validation.check_run_settings`)."""
        self.check_fields()
        check_run_settings(self, methods=METHODS, formats=FORMATS, planned=PLANNED_METHODS)


class RunContext:
    """What the methods of one run share: the config, the data and the trained baseline (stage 0)."""

    def __init__(self, cfg: RunConfig, data, log, baseline=None):
        """``baseline``: an already trained ``(model, metrics)`` to reuse instead of training one (a
        tuner shares one baseline across its trials)."""
        self.cfg, self.data, self.log = cfg, data, log or (lambda msg: None)
        # every fit of data.train (baseline, stage 2, hash, AFM fine-tuning, ...) shows N steps, not Unknown
        known_batches(getattr(data, "train", None), _train_batches(data))
        self._baseline = baseline
        self.models = {}  # method -> (trained model, its metrics entry), filled by finish()
        self.warnings = []  # degenerate data or runs that still exit 0 (metrics.json "warnings")

    def warn(self, message: str) -> None:
        """Records and prints a warning about a run that works but may not mean what its numbers say."""
        self.warnings.append(message)
        self.log(f"warning: {message}")

    def build(self, embedding_factory=None):
        """A fresh, seeded model of the configured kind."""
        keras.utils.set_random_seed(self.cfg.seed)
        return build_model(self.cfg.model, self.data.schema, embedding_dim=self.cfg.embedding_dim,
                           embedding_factory=embedding_factory, seed=self.cfg.seed)

    def train_and_evaluate(self, model, method: str, *, fine_tune: bool = False) -> dict:
        """Compiles and fits with early stopping, then :meth:`finish`. ``fine_tune``: the model starts
        from trained weights; it trains at ``learning_rate * stage2_lr_scale`` with patience
        ``stage2_patience`` and keeps its starting weights when no epoch improves validation AUC."""
        cfg = self.cfg
        compile_ctr(model, cfg.learning_rate * (cfg.stage2_lr_scale if fine_tune else 1.0), cfg.optimizer)
        checkpoint = self.checkpoint_path("fit", method)
        fit = fit_early_stopping(model, self.data.train_stream if checkpoint else self.data.train, self.data.valid,
                                 epochs=cfg.epochs, patience=cfg.stage2_patience if fine_tune else cfg.patience,
                                 verbose=cfg.verbose, keep_start=fine_tune, checkpoint_dir=checkpoint,
                                 checkpoint_fingerprint=self.checkpoint_fingerprint() if checkpoint else None)
        run = self.finish(model, method, fit["train_seconds"], fit["epochs"])
        run["best_epoch"] = fit["best_epoch"]
        run["history"] = {k: [float(v) for v in values] for k, values in fit["history"].items()}
        if fine_tune:
            run["start_valid_auc"] = fit["start_auc"]
        return run

    def finish(self, model, method: str, train_seconds: float, epochs: int | None = None) -> dict:
        """Evaluates a trained model on test, saves ``out/<method>/model.keras`` (and, with ``cfg.export``,
        the SavedModel and ONNX exports, see :mod:`tfmec.export.run`) and returns its ``metrics.json``
        entry (also kept with the model in ``self.models[method]``); compressed methods get their byte
        ratios against the baseline."""
        cfg = self.cfg
        test = evaluate(model, self.data.test)
        os.makedirs(os.path.join(cfg.out, method), exist_ok=True)
        save_model(model, os.path.join(cfg.out, method, "model.keras"))  # atomic: never a partial file
        run = {
            "method": method,
            "model": cfg.model,
            "test_auc": test["auc"],
            "test_logloss": test["logloss"],
            "embedding_bytes": embedding_bytes(model),
            "model_bytes": model_bytes(model),
            "params": param_count(model),
            "train_seconds": train_seconds,
            "epochs": epochs,
            "infer_samples_per_s": prediction_throughput(model, self.data.test),
        }
        if cfg.export:
            from tfmec.export.run import export_run

            run.update(export_run(model, os.path.join(cfg.out, method), self.data.encoder, self.data.test,
                                  max_rows=cfg.export_rows))
        if self._baseline is not None:
            base = self._baseline[1]
            run["compression_ratio_embeddings"] = base["embedding_bytes"] / run["embedding_bytes"]
            run["compression_ratio_model"] = base["model_bytes"] / run["model_bytes"]
        self.models[method] = (model, run)
        return run

    def learn_codes(self, source, **settings):
        """MEC stage 1 on ``source``'s tables with this run's frequencies, seed and progress setting;
        ``settings`` go to :func:`tfmec.mec.learn_codes`. A subclass may cache it (see
        :mod:`tfmec.tuning`)."""
        from tfmec.mec import learn_codes

        checkpoint = self.checkpoint_path("stage1", _settings_key(settings))
        if checkpoint is not None:
            settings = {"checkpoint_dir": checkpoint, **settings}
        return learn_codes(source, self.data.frequencies, seed=self.cfg.seed, progress=self.cfg.verbose > 0,
                           **settings)

    def checkpoint_path(self, *parts: str) -> str | None:
        """``cfg.checkpoint_dir/<parts>`` (None without ``checkpoint_dir``): where a resumable step of
        this run keeps its checkpoints."""
        return None if self.cfg.checkpoint_dir is None else os.path.join(self.cfg.checkpoint_dir, *parts)

    data_content = None  # the data files' content fingerprint, taken by run_experiment before reading them

    def checkpoint_fingerprint(self) -> dict:
        """The run settings a fit checkpoint must match besides the model and fit settings (the data's
        content, not its path: :mod:`tfmec.data.fingerprint`; its seed and split, the model kind)."""
        from tfmec.data.fingerprint import comparable

        cfg = self.cfg
        if self.data_content is None:
            self.data_content = data_content(cfg)
        content = self.data_content
        return {"data": "synthetic" if content is None else "files", "format": cfg.format, "rows": cfg.rows,
                "data_content": None if content is None else comparable(content),
                "_data_files": [] if content is None else [f["path"] for f in content],
                "split_rows": self.data.rows, "seed": cfg.seed, "model": cfg.model, "batch_size": cfg.batch_size,
                "fractions": list(cfg.fractions)}

    def baseline(self):
        """``(trained uncompressed model, its metrics)``, trained once per run."""
        if self._baseline is None:
            model = self.build()
            self._baseline = (model, self.train_and_evaluate(model, "baseline"))
        return self._baseline


def run_baseline(ctx: RunContext) -> dict:
    """Method ``none``: the uncompressed model, trained with early stopping on validation AUC."""
    return ctx.baseline()[1]


def _settings_key(settings: dict) -> str:
    """A short stable name for a set of stage-1 settings (their checkpoint folder)."""
    import hashlib
    import json

    text = json.dumps(settings, sort_keys=True, default=str)
    return "settings-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def run_mec(ctx: RunContext, method: str = "mec", stage2: str | None = None, **overrides) -> dict:
    """Method ``mec``: stage 1 on the trained baseline's tables, then stage 2 with the contrastive term.

    Stage 2 (``cfg.stage2``): ``"finetune"`` (default, beyond the paper) swaps the quantised tables
    into the trained baseline and fine-tunes at ``learning_rate * stage2_lr_scale``, keeping the
    starting weights when no epoch improves validation AUC; ``"retrain"`` (the paper) trains a fresh
    model of the same kind whose large tables are quantised; ``"none"`` evaluates the baseline with
    its tables quantised, without training. ``overrides`` change stage-1 settings
    (the ablations: ``alpha=0``, ``beta=0``, ``epochs=0`` for plain k-means PQ)."""
    from tfmec.mec import compress_embeddings

    cfg = ctx.cfg
    base, _ = ctx.baseline()
    if method in ("mec", "pq") and (cfg.memory_budget is not None or cfg.target_ratio is not None):
        return run_mec_budget(ctx, method)
    settings = dict(num_subspaces=cfg.subspaces, num_codewords=cfg.codewords, alpha=cfg.alpha, beta=cfg.beta,
                    epochs=cfg.stage1_epochs, share_codebooks=cfg.share_codebooks)
    settings.update(overrides)
    t0 = time.perf_counter()
    codes = ctx.learn_codes(base, **settings)
    stage1_seconds = time.perf_counter() - t0
    ctx.log(f"{method} stage 1: {len(codes)} tables quantised in {stage1_seconds:.1f}s")
    if not codes:
        ctx.warn(f"{method} quantised no table: at M={settings['num_subspaces']}, K={settings['num_codewords']} no "
                 f"table is large enough for PQ to save bytes, so the '{method}' model is the baseline's copy (lower "
                 f"--codewords, or use --share-codebooks)")
    os.makedirs(os.path.join(cfg.out, method), exist_ok=True)
    codes.save(os.path.join(cfg.out, method, "codes"))
    stage2 = stage2 or cfg.stage2
    fine_tune = stage2 == "finetune"
    model = compress_embeddings(ctx.build() if stage2 == "retrain" else base, codes,
                                contrastive_weight=settings["beta"], bits=cfg.bits, seed=cfg.seed,
                                head_rows=cfg.head_rows)
    if stage2 == "none":  # evaluated as it is: prediction needs no compile
        run = ctx.finish(model, method, 0.0, 0)
    else:
        run = ctx.train_and_evaluate(model, method, fine_tune=fine_tune)
    run.update(
        stage1_seconds=stage1_seconds,
        stage1={name: {k: v for k, v in fc.stats.items() if k != "history"} for name, fc in codes.items()},
        mec={"subspaces": settings["num_subspaces"], "codewords": settings["num_codewords"],
             "alpha": settings["alpha"], "beta": settings["beta"], "stage1_epochs": settings["epochs"],
             "bits": cfg.bits, "stage2": stage2, "stage2_lr_scale": cfg.stage2_lr_scale,
             "share_codebooks": bool(settings["share_codebooks"]), "groups": codes.groups,
             "head_rows": cfg.head_rows},
    )
    return run


def run_mec_budget(ctx: RunContext, method: str = "mec") -> dict:
    """Method ``mec`` with ``--memory-budget`` / ``--target-ratio``: popularity tiers per table chosen
    by :func:`tfmec.mec.compress_to_budget` on the trained baseline (validation data picks the
    popularity exponent; test data is never read), then stage 2 fine-tunes with the contrastive term
    as ``mec`` does. The allocation is logged and kept in the run's ``budget`` entry.

    Method ``pq`` at a budget: the same with one PQ (or exact) tier per table and no contrastive term
    (``compress_to_budget(plain=True)``): plain product quantisation sized to the same bytes."""
    from tfmec.mec import compress_to_budget
    from tfmec.mec.memory import memory_report

    cfg = ctx.cfg
    base, _ = ctx.baseline()
    full = memory_report(base)["original_embedding_bytes"]
    budget = budget_bytes(cfg, full)
    t0 = time.perf_counter()
    plain = method == "pq"
    model, plan = compress_to_budget(base, ctx.data.frequencies, budget, ctx.data.valid,
                                     contrastive_weight=0.0 if plain else cfg.beta, seed=cfg.seed, plain=plain,
                                     alphas=(1.0,) if plain else (1.0, 0.5), fractions=(1.0,) if plain else (1.0, 0.25),
                                     log=ctx.log if cfg.verbose > 0 else None)
    seconds = time.perf_counter() - t0
    ctx.log(f"{method} {plan.describe()}\n  (chosen in {seconds:.1f}s)")
    if cfg.stage2 == "none":
        run = ctx.finish(model, method, 0.0, 0)
    else:
        run = ctx.train_and_evaluate(model, method, fine_tune=True)
    run.update(stage1_seconds=seconds, budget=plan.to_dict(),
               mec={"memory_budget": budget, "target_ratio": cfg.target_ratio, "beta": 0.0 if plain else cfg.beta,
                    "stage2": cfg.stage2, "stage2_lr_scale": cfg.stage2_lr_scale})
    return run


def run_pq(ctx: RunContext) -> dict:
    """Method ``pq``: plain product quantisation (k-means codes, no PWR, no contrastive term), then the
    same stage-2 training as MEC."""
    return run_mec(ctx, "pq", alpha=0.0, beta=0.0, epochs=0)


def run_pq_no_retrain(ctx: RunContext) -> dict:
    """Method ``pq-no-retrain``: k-means PQ codes swapped into the trained baseline, no training at all
    (the reference point MEC must beat)."""
    return run_mec(ctx, "pq-no-retrain", stage2="none", alpha=0.0, beta=0.0, epochs=0)


def run_mec_no_pwr(ctx: RunContext) -> dict:
    """Ablation ``mec-no-pwr``: MEC with alpha = 0."""
    return run_mec(ctx, "mec-no-pwr", alpha=0.0)


def run_mec_no_contrastive(ctx: RunContext) -> dict:
    """Ablation ``mec-no-contrastive``: MEC with beta = 0 (stage 1 and stage 2)."""
    return run_mec(ctx, "mec-no-contrastive", beta=0.0)


def _afm_on(ctx: RunContext, source, method: str) -> dict:
    """AFM on the MLP of a trained model: PCA of each Dense layer's outputs on ``afm_calibration_batches``
    training batches, rank by ``afm_energy`` (capped by ``afm_param_budget``, a share of each layer's
    parameters, when set), then up to ``afm_fine_tune_epochs`` of fine-tuning at
    ``learning_rate * stage2_lr_scale`` with early stopping that keeps the un-tuned weights when no epoch
    improves validation AUC, with ``--optimizer`` and, with ``--checkpoint-dir``, checkpoints under
    ``fit/<method>/`` (a rerun resumes inside the fine-tuning); then evaluated like the others."""
    from tfmec import afm

    cfg = ctx.cfg
    t0 = time.perf_counter()
    checkpoint = ctx.checkpoint_path("fit", method)  # fit/<method>/mlp and fit/<method>/embeddings
    fine_tune = afm.FineTune(ctx.data.train_stream if checkpoint else ctx.data.train, ctx.data.valid,
                             epochs=cfg.afm_fine_tune_epochs, learning_rate=cfg.learning_rate * cfg.stage2_lr_scale,
                             optimizer=cfg.optimizer, patience=cfg.stage2_patience, keep_start=True,
                             verbose=cfg.verbose, checkpoint_dir=checkpoint,
                             checkpoint_fingerprint=ctx.checkpoint_fingerprint() if checkpoint else None
                             ) if cfg.afm_fine_tune_epochs > 0 else None  # --afm-fine-tune-epochs 0: none
    model, report = afm.compress(source, ctx.data.train.take(cfg.afm_calibration_batches), energy=cfg.afm_energy,
                                 param_budget=cfg.afm_param_budget, fine_tune=fine_tune)
    afm_seconds = time.perf_counter() - t0
    ctx.log(f"{method}: AFM ranks {report.ranks} ({afm_seconds:.1f}s)")
    run = ctx.finish(model, method, afm_seconds)
    run["afm"] = report.to_dict()
    return run


def run_afm(ctx: RunContext) -> dict:
    """Method ``afm``: AFM on the trained baseline's MLP layers."""
    return _afm_on(ctx, ctx.baseline()[0], "afm")


def run_mec_afm(ctx: RunContext) -> dict:
    """Method ``mec+afm``: MEC on the embedding tables first, then AFM on the MLP of the trained MEC model.

    MEC goes first because its stage 1 needs the full-width tables of the baseline, and AFM's
    calibration should see the quantised embeddings the MLP will really receive."""
    if "mec" not in ctx.models:
        run_mec(ctx)
    mec_model, mec_run = ctx.models["mec"]
    run = _afm_on(ctx, mec_model, "mec+afm")
    run["stage1"] = mec_run.get("stage1")
    run["mec"] = mec_run.get("mec")
    if mec_run.get("budget") is not None:
        run["budget"] = mec_run["budget"]
    return run


def _train_batches(data) -> int | None:
    """Batches per pass over ``data.train``: ``tf.data`` cannot count a generator-fed split, but its rows
    were counted while the vocabularies were built (``data.train_stream``)."""
    stream = getattr(data, "train_stream", None)
    return stream.steps_per_epoch if stream is not None else None


def _fit_only(ctx: RunContext, model, name: str) -> dict:
    """Compiles and fits ``model`` from scratch with the baseline's settings (early stopping on validation
    AUC, checkpoints under ``fit/<name>``), without evaluating it: ``fit_early_stopping``'s result."""
    cfg = ctx.cfg
    compile_ctr(model, cfg.learning_rate, cfg.optimizer)
    checkpoint = ctx.checkpoint_path("fit", name)
    return fit_early_stopping(model, ctx.data.train_stream if checkpoint else ctx.data.train, ctx.data.valid,
                              epochs=cfg.epochs, patience=cfg.patience, verbose=cfg.verbose, keep_start=False,
                              checkpoint_dir=checkpoint,
                              checkpoint_fingerprint=ctx.checkpoint_fingerprint() if checkpoint else None
                             ) if cfg.afm_fine_tune_epochs > 0 else None  # --afm-fine-tune-epochs 0: none


def _run_quantized(ctx: RunContext, bits: int) -> dict:
    """Methods ``int8`` / ``int4`` (:func:`run_int8`, :func:`run_int4`)."""
    from tfmec.baselines import (ROW_SCALE_MIN_DIM, allocate_quantized, hashed_embedding_factory, probe_tables,
                                 quantize_embeddings, table_bytes)

    method, cfg = f"int{bits}", ctx.cfg
    base, _ = ctx.baseline()
    info = {"bits": bits, "row_scale_min_dim": ROW_SCALE_MIN_DIM, "budget_bytes": None, "hashed_tables": []}
    source, train_seconds, epochs = base, 0.0, 0
    tables = probe_tables(lambda factory: ctx.build(embedding_factory=factory))
    budget = budget_bytes(cfg, table_bytes(tables))
    if budget is not None:
        plan = allocate_quantized(tables, budget, bits)
        info.update(budget_bytes=budget, bucket_cap=plan["cap"], hashed_tables=plan["hashed"],
                    table_bytes=plan["bytes"], buckets={n: plan["buckets"][n] for n in plan["hashed"]})
        ctx.log(f"{method}: budget {budget:,} bytes; " + (
            f"cap {plan['cap']:,} rows, {len(plan['hashed'])} of {len(tables)} tables hashed into int{bits} rows "
            f"(the hashing trick trained first), {plan['bytes']:,} bytes" if plan["hashed"]
            else f"int{bits} tables fit whole ({plan['bytes']:,} bytes)"))
        if plan["hashed"]:
            source = ctx.build(embedding_factory=hashed_embedding_factory(plan["buckets"], seed=cfg.seed))
            fit = _fit_only(ctx, source, f"{method}-hashed")
            train_seconds, epochs = fit["train_seconds"], fit["epochs"]
            info["best_epoch"] = fit["best_epoch"]
    t0 = time.perf_counter()
    model, report = quantize_embeddings(source, bits=bits)
    seconds = time.perf_counter() - t0
    ctx.log(f"{method}: {len(report)} tables quantised in {seconds:.1f}s")
    run = ctx.finish(model, method, train_seconds + seconds, epochs)
    if budget is not None and run["embedding_bytes"] > budget:  # the allocation guarantees it; never report over
        raise RuntimeError(f"{method}: {run['embedding_bytes']:,} embedding bytes exceed the budget of {budget:,}")
    info.update(tables=len(report), per_row_tables=sum(t["per_row_scale"] for t in report.values()),
                max_abs_error=max((t["max_abs_error"] for t in report.values()), default=0.0))
    run[method] = info
    return run


def run_int8(ctx: RunContext) -> dict:
    """Method ``int8``: post-training int8 quantisation of the trained baseline's embedding tables
    (:func:`tfmec.baselines.quantize_embeddings`: a float32 step per row for tables of ``d >= 8``, one
    per table for narrower ones); the MLP stays float32 and nothing is trained afterwards, so
    ``train_seconds`` is the quantisation time.

    With a byte budget (``--memory-budget`` / ``--target-ratio``, :func:`budget_bytes`) that the int8
    tables do not fit, ids are hashed into fewer int8 rows (one row cap for every table,
    :func:`tfmec.baselines.allocate_quantized`): the hashing trick at those buckets is trained from scratch
    with the baseline's settings, then quantised (``train_seconds`` includes that training). ``run["int8"]``
    records the budget, the cap and the hashed tables."""
    return _run_quantized(ctx, 8)


def run_int4(ctx: RunContext) -> dict:
    """Method ``int4``: as :func:`run_int8` with int4 values (two per byte, a float32 step per row for
    tables of ``d >= 8``), sized to the budget the same way; ``run["int4"]`` records the plan."""
    return _run_quantized(ctx, 4)


def budget_bytes(cfg: RunConfig, full_bytes: int) -> int | None:
    """The embedding byte budget of ``--memory-budget`` / ``--target-ratio`` (``full_bytes``, the
    uncompressed float32 tables' bytes, divided by the ratio, rounded down), or None when neither is given."""
    if cfg.memory_budget is not None:
        return int(cfg.memory_budget)
    if cfg.target_ratio is not None:
        return int(int(full_bytes) // float(cfg.target_ratio))
    return None


def hash_budget(ctx: RunContext, full_bytes: int) -> tuple[int, str]:
    """``(bytes, source)`` of the hashing trick's tables: ``cfg.hash_bytes`` when given, else the
    budget of ``--memory-budget`` / ``--target-ratio`` (:func:`budget_bytes`), else the embedding bytes of
    this run's MEC model when one was trained, else 1/8 of ``full_bytes`` (the
    uncompressed tables)."""
    if ctx.cfg.hash_bytes is not None:
        return int(ctx.cfg.hash_bytes), "hash_bytes"
    return method_budget(ctx, full_bytes)


def method_budget(ctx: RunContext, full_bytes: int) -> tuple[int, str]:
    """``(bytes, source)`` of a method trained at a byte budget (``hash`` after ``--hash-bytes``, ``qr``):
    the budget of ``--memory-budget`` / ``--target-ratio`` (:func:`budget_bytes`), else the embedding bytes
    of this run's MEC model when one was trained, else 1/8 of ``full_bytes`` (the uncompressed tables)."""
    budget = budget_bytes(ctx.cfg, full_bytes)
    if budget is not None:
        return budget, "memory_budget"
    if "mec" in ctx.models:
        return int(ctx.models["mec"][1]["embedding_bytes"]), "mec"
    return int(full_bytes) // 8, "baseline/8"


def run_hash(ctx: RunContext) -> dict:
    """Method ``hash``: the hashing trick at a bytes budget (:func:`hash_budget`), trained from scratch
    with the baseline's settings. Every table larger than the common bucket cap is hashed into that
    many rows (:func:`tfmec.baselines.allocate_buckets`); smaller tables stay ordinary Embeddings."""
    from tfmec.baselines import allocate_buckets, hashed_embedding_factory, probe_tables, table_bytes

    cfg = ctx.cfg
    tables = probe_tables(lambda factory: ctx.build(embedding_factory=factory))
    full = table_bytes(tables)
    budget, source = hash_budget(ctx, full)
    plan = allocate_buckets(tables, budget)
    ctx.log(f"hash: budget {budget:,} bytes ({source}); cap {plan['cap']:,} rows, {len(plan['hashed'])} of "
            f"{len(tables)} tables hashed, {plan['bytes']:,} bytes")
    model = ctx.build(embedding_factory=hashed_embedding_factory(plan["buckets"], seed=cfg.seed))
    run = ctx.train_and_evaluate(model, "hash")
    run["hash"] = {"budget_bytes": budget, "budget_source": source, "bucket_cap": plan["cap"],
                   "hashed_tables": plan["hashed"], "table_bytes_full": full, "table_bytes": plan["bytes"],
                   "buckets": {name: b for name, b in plan["buckets"].items() if name in plan["hashed"]}}
    return run


def run_qr(ctx: RunContext) -> dict:
    """Method ``qr``: quotient-remainder embeddings at a bytes budget (:func:`method_budget`: the
    ``--memory-budget`` / ``--target-ratio`` budget, else the MEC model's bytes when mec ran, else 1/8 of the
    baseline's), trained from scratch with the baseline's settings. Every table larger than the common row
    cap becomes a :class:`~tfmec.layers.qr_embedding.QREmbedding` (:func:`tfmec.baselines.allocate_qr`);
    smaller tables stay ordinary Embeddings."""
    from tfmec.baselines import allocate_qr, probe_tables, qr_embedding_factory, table_bytes

    cfg = ctx.cfg
    tables = probe_tables(lambda factory: ctx.build(embedding_factory=factory))
    full = table_bytes(tables)
    budget, source = method_budget(ctx, full)
    plan = allocate_qr(tables, budget)
    ctx.log(f"qr: budget {budget:,} bytes ({source}); cap {plan['cap']:,} rows, {len(plan['qr'])} of "
            f"{len(tables)} tables quotient-remainder, {plan['bytes']:,} bytes")
    model = ctx.build(embedding_factory=qr_embedding_factory(plan["buckets"], seed=cfg.seed))
    run = ctx.train_and_evaluate(model, "qr")
    run["qr"] = {"budget_bytes": budget, "budget_source": source, "row_cap": plan["cap"], "qr_tables": plan["qr"],
                 "buckets": plan["buckets"], "table_bytes_full": full, "table_bytes": plan["bytes"]}
    return run


METHODS: dict[str, Callable] = {
    "none": run_baseline, "mec": run_mec, "pq": run_pq, "pq-no-retrain": run_pq_no_retrain,
    "mec-no-pwr": run_mec_no_pwr, "mec-no-contrastive": run_mec_no_contrastive, "afm": run_afm, "mec+afm": run_mec_afm,
    "int8": run_int8, "hash": run_hash, "qr": run_qr, "int4": run_int4,
}


def execution_order(methods: Sequence[str]) -> list[str]:
    """The order methods run in: as given, except that ``mec`` runs before ``mec+afm`` (which reuses
    its model instead of training MEC a second time) and ``hash`` and ``qr`` after ``mec`` and ``mec+afm``
    (their default budget is the MEC model's bytes). Results are reported in the given order."""
    methods = list(methods)
    if "mec" in methods and "mec+afm" in methods and methods.index("mec") > methods.index("mec+afm"):
        methods.remove("mec")
        methods.insert(methods.index("mec+afm"), "mec")
    deps = [i for i, m in enumerate(methods) if m in ("mec", "mec+afm")]
    moving = [m for m in methods[: max(deps)] if m in ("hash", "qr")] if deps else []
    if not moving:
        return methods
    rest = [m for m in methods if m not in moving]
    at = max(i for i, m in enumerate(rest) if m in ("mec", "mec+afm")) + 1
    return rest[:at] + moving + rest[at:]


def run_frontier(ctx: RunContext) -> list:
    """The AUC-vs-bytes frontier: each budgeted method of ``cfg.methods`` (:data:`BUDGET_METHODS`)
    trained again at every ratio of ``cfg.frontier`` (budget = uncompressed embedding bytes / ratio)
    on the same data, split, seed and trained baseline. Models go to ``out/frontier/<ratio>x/<method>/``
    (no export). Returns one point per (method, ratio): ``{"method", "ratio", "embedding_bytes",
    "test_auc", "test_logloss"}``, plus the baseline at ratio 1 and, with ``--memory-budget`` /
    ``--target-ratio``, the main runs at that ratio (not trained again)."""
    from tfmec.validation import BudgetTooSmallError

    cfg = ctx.cfg
    base_model, base_run = ctx.baseline()
    points = [{"method": "baseline", "ratio": 1.0, "embedding_bytes": base_run["embedding_bytes"],
               "test_auc": base_run["test_auc"], "test_logloss": base_run["test_logloss"]}]
    methods = [m for m in cfg.methods if m in BUDGET_METHODS]
    full = base_run["embedding_bytes"]
    budget = budget_bytes(cfg, full)
    if budget is not None:  # the main runs were trained at this budget: they are points of the frontier too
        for method in methods:
            if method in ctx.models:
                run = ctx.models[method][1]
                points.append({"method": method, "ratio": float(cfg.target_ratio or full / budget),
                               "embedding_bytes": run["embedding_bytes"], "test_auc": run["test_auc"],
                               "test_logloss": run["test_logloss"],
                               "compression_ratio_embeddings": run.get("compression_ratio_embeddings")})
    for ratio in cfg.frontier:
        tag = f"{float(ratio):g}x"
        sub = dataclasses.replace(
            cfg, target_ratio=float(ratio), memory_budget=None, hash_bytes=None, frontier=(), export=False,
            out=os.path.join(cfg.out, "frontier", tag),
            checkpoint_dir=None if cfg.checkpoint_dir is None else os.path.join(cfg.checkpoint_dir, "frontier", tag))
        sub_ctx = RunContext(sub, ctx.data, ctx.log, baseline=(base_model, base_run))
        sub_ctx.data_content = ctx.data_content
        for method in methods:
            ctx.log(f"frontier {tag}: {method} ...")
            try:
                run = METHODS[method](sub_ctx)
            except BudgetTooSmallError as err:  # the method cannot reach this ratio (its least bytes are above it)
                ctx.warn(f"frontier {tag}: {method} cannot reach this ratio: {err}")
                points.append({"method": method, "ratio": float(ratio), "embedding_bytes": None, "test_auc": None,
                               "test_logloss": None, "error": str(err)})
                continue
            points.append({"method": method, "ratio": float(ratio), "embedding_bytes": run["embedding_bytes"],
                           "test_auc": run["test_auc"], "test_logloss": run["test_logloss"],
                           "compression_ratio_embeddings": run.get("compression_ratio_embeddings")})
    return points


def data_content(cfg: RunConfig):
    """The content fingerprint of every file ``cfg`` reads (None for synthetic data): what training
    checkpoints are bound to (:mod:`tfmec.data.fingerprint`)."""
    if cfg.data == "synthetic":
        return None
    from tfmec.data.fingerprint import content_fingerprint, input_files

    return content_fingerprint(input_files(cfg.data_paths, cfg.format, cfg.field_map))


def load_for(cfg: RunConfig):
    """Loads the data a config names (one vocabulary pass; splits by ``cfg.seed``)."""
    reader_kwargs = {}
    if cfg.format == "csv":
        reader_kwargs.update(numeric=list(cfg.numeric), drop=list(cfg.drop), sep=cfg.sep, label_threshold=cfg.label_threshold,
                             names=list(cfg.names) or None, lists=cfg.list_columns)
    elif cfg.drop:
        reader_kwargs.update(drop=tuple(cfg.drop))
    if cfg.format == "movielens" and cfg.label_threshold is not None:
        reader_kwargs.update(threshold=cfg.label_threshold)
    data_arg = "synthetic" if cfg.data == "synthetic" else (cfg.data_paths if len(cfg.data_paths) > 1 else cfg.data_paths[0])
    return load(
        data_arg,
        format=cfg.format,
        label=cfg.label,
        field_map=cfg.field_map,
        engine=cfg.engine,
        rows=cfg.rows or (200_000 if cfg.data == "synthetic" else None),
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        min_count=cfg.min_count,
        fractions=cfg.fractions,
        progress=cfg.verbose > 0,
        max_length=cfg.max_length,
        shares=cfg.shared_tables,
        **reader_kwargs,  # csv drops columns while reading, other formats from the default schema
    )


def format_table(runs: Sequence[dict]) -> str:
    """A fixed-width text table of the runs' main numbers."""
    cols = [("method", "{}"), ("model", "{}"), ("test_auc", "{:.4f}"), ("test_logloss", "{:.4f}"),
            ("embedding_bytes", "{:,}"), ("model_bytes", "{:,}"), ("compression_ratio_embeddings", "{:.1f}x"),
            ("train_seconds", "{:.1f}"), ("infer_samples_per_s", "{:,.0f}")]
    rows = [[fmt.format(r[c]) if c in r else "-" for c, fmt in cols] for r in runs]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, (c, _) in enumerate(cols)]
    line = "  ".join(c.ljust(w) for (c, _), w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


@holds_output_lock
def run_experiment(cfg: RunConfig, log=None) -> dict:
    """Runs every method of ``cfg`` on one data load; writes ``cfg.out/metrics.json`` and returns it.
    Holds the lock of ``cfg.out`` throughout (:mod:`tfmec.outlock`): a second run into the same folder
    raises :class:`~tfmec.outlock.OutputInUseError` before writing anything."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))  # cfg validated by holds_output_lock
    t0 = time.perf_counter()
    content = data_content(cfg) if cfg.checkpoint_dir else None  # hashed before reading (checkpoints bind to it)
    data = load_for(cfg)
    if content is not None:
        from tfmec.data.fingerprint import check_unchanged

        check_unchanged(content)
    log(f"data: {data.name}: rows {data.rows}, positive rate {data.positive_rate:.4f}, "
        f"{len(data.schema)} fields ({time.perf_counter() - t0:.1f}s)")
    os.makedirs(cfg.out, exist_ok=True)
    data.encoder.save(os.path.join(cfg.out, "vocabulary.json"))
    results = {}
    ctx = RunContext(cfg, data, log)
    ctx.data_content = content
    from tfmec.data.diagnostics import degenerate_data_warnings

    for message in degenerate_data_warnings(data, cfg.data_paths if cfg.data != "synthetic" else ()):
        ctx.warn(message)
    for method in execution_order(cfg.methods):
        log(f"method {method}: {cfg.model} ...")
        results[method] = METHODS[method](ctx)
    runs = [results[m] for m in cfg.methods]
    frontier = run_frontier(ctx) if cfg.frontier else None
    metrics = {
        "dataset": cfg.data if cfg.data == "synthetic" else ",".join(cfg.data_paths),
        "rows": data.rows,
        "keras": KERAS_MODE,
        "seed": cfg.seed,
        "runs": runs,
        "warnings": ctx.warnings,
    }
    if frontier is not None:
        metrics["frontier"] = frontier
    if content is not None:
        check_unchanged(content)  # the splits are read again while training: the same bytes throughout
    from tfmec.report import write_report

    metrics["report"] = write_report(metrics, cfg.out)
    write_json_atomic(os.path.join(cfg.out, "metrics.json"), metrics)
    return metrics


__all__ = ["RunConfig", "RunContext", "run_experiment", "run_frontier", "BUDGET_METHODS", "budget_bytes",
           "method_budget", "format_table", "execution_order", "hash_budget", "METHODS",
           "FORMATS", "STAGE2_MODES", "PLANNED_METHODS"]
