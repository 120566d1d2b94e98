"""KerasTuner sweeps over MEC's hyperparameters under a memory budget.

:class:`MECTuner` is a ``keras_tuner.Tuner`` whose ``run_trial`` runs the tfmec pipeline itself
(:data:`tfmec.experiment.METHODS`: stage 1 :func:`tfmec.mec.learn_codes`, stage 2 training, and for
``mec+afm`` AFM), so KerasTuner never builds or fits a model: it works in Keras 3 mode and in
tf-keras mode (where KerasTuner's own build path rejects tf-keras models, keras-tuner issue 1039).

Per trial:

1. the trial's values (alpha, beta, K, M and, for ``mec+afm``, the AFM energy) are applied to the
   base :class:`~tfmec.experiment.RunConfig`;
2. the compressed embedding bytes are computed from the table shapes
   (:func:`tfmec.tuning.budget.compressed_embedding_bytes`); above ``memory_budget_bytes`` the trial is
   *rejected*: nothing is trained and the oracle gets the objective :data:`REJECTED_SCORE` (a completed
   trial with the worst possible AUC, which every oracle handles: random search ignores it, Bayesian
   optimisation learns that the region is bad, Hyperband never promotes it; marking it failed would
   stop the search after three rejections in a row);
3. otherwise stage 1 runs, or is taken from an in-memory cache shared by the trials with the same
   stage-1 settings (the trial log says ``stage 1 cache hit``), then stage 2 fine-tunes the baseline,
   which is trained once per tuner;
4. the objective is the exact validation AUC of the final model (``val_auc``, maximised).

With the Hyperband oracle, ``tuner/epochs`` bounds the stage-2 epochs of a trial (a promoted trial
trains again from the baseline with the larger budget; its stage 1 comes from the cache).

Output in ``directory``: ``results.jsonl`` and ``results.md`` (one row per trial: id, status,
hyperparameters, validation AUC, embedding bytes, compression ratio, seconds), ``best_config.json``
(a ``RunConfig`` for ``tfmec run --config``), ``baseline/`` (the shared baseline) and
``keras_tuner/trial_<id>/`` (KerasTuner's state, the trial's ``trial.log`` and its model and codes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable

try:
    import keras_tuner
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tfmec.tuning needs KerasTuner: pip install 'tfmec[tune]' (or 'keras-tuner>=1.4.7')") from err

from tfmec.api_export import export_value, tfmec_export
from tfmec.data.vocabulary import write_bytes_atomic, write_json_atomic
from tfmec.evaluation import evaluate
from tfmec.experiment import METHODS, RunConfig, RunContext, load_for
from tfmec.settings import ORACLES, TUNABLE_METHODS
from tfmec.tuning.budget import EmbeddingTables, compressed_embedding_bytes
from tfmec.tuning.space import TUNED_FIELDS, SearchSpace

OBJECTIVE = export_value("tfmec.tuning.OBJECTIVE", "val_auc", doc="the metric every trial maximises")
"""The metric every trial reports and the oracle maximises: exact validation AUC."""
export_value("tfmec.tuning.ORACLES", ORACLES, doc="the KerasTuner oracles tfmec tune offers")
export_value("tfmec.tuning.TUNABLE_METHODS", TUNABLE_METHODS, doc="the methods tfmec tune sweeps")
REJECTED_SCORE = export_value("tfmec.tuning.REJECTED_SCORE", 0.0, doc="the score of a trial over the memory budget")
"""The objective a rejected (over-budget) trial reports: the worst AUC there is."""
ACCEPTED = export_value("tfmec.tuning.ACCEPTED", "accepted", doc="status of a trial that fit the budget and trained")
REJECTED = export_value("tfmec.tuning.REJECTED", "rejected", doc="status of a trial over the memory budget")
ERROR = export_value("tfmec.tuning.ERROR", "error", doc="status of a trial that failed")


@tfmec_export("tfmec.tuning.make_oracle")
def make_oracle(kind: str, max_trials: int, *, seed: int = 0, max_epochs: int = 10, hyperparameters=None):
    """A KerasTuner oracle maximising :data:`OBJECTIVE`: ``"random"`` (RandomSearchOracle),
    ``"bayesian"`` (BayesianOptimizationOracle) or ``"hyperband"`` (HyperbandOracle with ``max_epochs``
    of stage 2, stopped after ``max_trials`` trials like the others)."""
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=seed, hyperparameters=hyperparameters)
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    if kind == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max(1, int(max_epochs)), **common)
        oracle.max_trials = max_trials  # Hyperband itself has no trial limit; the base Oracle honours this
        return oracle
    raise ValueError(f"unknown oracle {kind!r}; choose one of {ORACLES}")


@tfmec_export("tfmec.tuning.stage1_key")
def stage1_key(settings: dict, seed: int) -> tuple:
    """The cache key of a stage-1 run: every setting passed to :func:`tfmec.mec.learn_codes`, and the seed."""
    return tuple(sorted(settings.items())) + (("seed", seed),)


class _TrialContext(RunContext):
    """A :class:`RunContext` that reuses the tuner's baseline and caches stage 1 across trials."""

    def __init__(self, cfg, data, log, baseline, cache: dict | None):
        super().__init__(cfg, data, log, baseline=baseline)
        self.cache = cache
        self.stage1_cache_hit = False

    def learn_codes(self, source, **settings):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
        key = stage1_key(settings, self.cfg.seed)
        if self.cache is not None and key in self.cache:
            self.stage1_cache_hit = True
            self.log(f"stage 1 cache hit ({shown})")
            return self.cache[key]
        self.log(f"stage 1: learning codes ({shown})")
        codes = super().learn_codes(source, **settings)
        if self.cache is not None:
            self.cache[key] = codes
        return codes


@tfmec_export("tfmec.tuning.MECTuner")
class MECTuner(keras_tuner.Tuner):
    """A KerasTuner tuner over MEC's hyperparameters (module docstring), for ``mec`` or ``mec+afm``.

    Args:
        config: the base :class:`RunConfig`: data, model, training and every setting not swept.
        method: ``"mec"`` or ``"mec+afm"``.
        oracle: ``"random"``, ``"bayesian"``, ``"hyperband"`` (see :func:`make_oracle`) or a KerasTuner
            ``Oracle`` instance whose objective is ``val_auc`` (max).
        max_trials: trials to run (for a named oracle).
        space: the :class:`SearchSpace` (default ranges when None).
        memory_budget_bytes: reject trials whose compressed embeddings would need more bytes.
        pack_codes: store each trial's codes bit-packed at ``ceil(log2 K)`` bits (instead of
            ``config.bits``).
        data: a loaded :class:`tfmec.data.CTRData` (default: loaded from ``config``); it should be the
            data ``config`` describes, since ``best_config.json`` names ``config``'s data.
        directory: output directory (default ``config.out``); KerasTuner's state goes to
            ``directory/project_name``.
        overwrite: start afresh (default); False resumes a search found in ``directory``.
        cache_stage1: share stage-1 results between trials with the same stage-1 settings.
        baseline: an already trained ``(model, metrics)`` of ``config`` to reuse (as
            :meth:`baseline` returns; e.g. from another tuner on the same data); default: trained on
            the first accepted trial.
        log: ``callable(str)`` for progress lines (default: print to stderr).
        **kwargs: passed to ``keras_tuner.Tuner``.

    ``tuner.search()`` runs the sweep (no arguments needed: the data comes from ``config``);
    :attr:`results` holds one record per trial and :meth:`best_config` the best accepted trial's
    ``RunConfig``.
    """

    def __init__(self, config: RunConfig, method: str = "mec", *, oracle="random", max_trials: int = 10,
                 space: SearchSpace | None = None, memory_budget_bytes: int | None = None, pack_codes: bool = False,
                 data=None, directory: str | None = None, project_name: str = "keras_tuner", overwrite: bool = True,
                 cache_stage1: bool = True, baseline=None, log: Callable[[str], None] | None = None, **kwargs):
        if method not in TUNABLE_METHODS:
            raise ValueError(f"cannot tune method {method!r}; choose one of {TUNABLE_METHODS}")
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        if max_trials < 1:
            raise ValueError(f"max_trials must be >= 1, got {max_trials}")
        self.method = method
        self.config = dataclasses.replace(config, methods=(method,))
        self.config.validate()
        self.space = (space or SearchSpace()).resolved(config.embedding_dim, None if pack_codes else config.bits)
        self.memory_budget_bytes = memory_budget_bytes
        self.pack_codes = bool(pack_codes)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.max_trials = int(max_trials)
        self.output_dir = str(directory or config.out)
        os.makedirs(self.output_dir, exist_ok=True)
        if isinstance(oracle, str):
            oracle = make_oracle(oracle, max_trials, seed=config.seed, max_epochs=config.epochs)
        elif oracle.objective.name != OBJECTIVE or oracle.objective.direction != "max":
            raise ValueError(f"the oracle's objective must be {OBJECTIVE!r} (max), got {oracle.objective}")
        super().__init__(oracle=oracle, directory=self.output_dir, project_name=project_name, overwrite=overwrite,
                         **kwargs)
        hp = self.oracle.get_space()
        self.space.declare(hp, method, self.config)
        self.oracle.update_space(hp)
        self.data = data if data is not None else load_for(self.config)
        self.stage1_cache = {} if cache_stage1 else None
        self._baseline = None
        if baseline is not None:
            model, run = baseline
            run.setdefault("valid_auc", evaluate(model, self.data.valid)["auc"])
            self._baseline = (model, run)
        self._tables = None
        self.results: list[dict] = []
        if not overwrite and os.path.exists(self.results_path("jsonl")):
            with open(self.results_path("jsonl"), encoding="utf-8") as fh:
                self.results = [json.loads(line) for line in fh if line.strip()]

    # -- what the trials share -------------------------------------------------------------------

    def results_path(self, ext: str) -> str:
        """``directory/results.<ext>`` (``jsonl`` or ``md``)."""
        return os.path.join(self.output_dir, f"results.{ext}")

    @property
    def tables(self) -> EmbeddingTables:
        """The model's embedding-table shapes (from an untrained model of the configured kind)."""
        if self._tables is None:
            ctx = RunContext(self.config, self.data, None)
            self._tables = EmbeddingTables.of_model(ctx.build())
        return self._tables

    def baseline(self):
        """``(trained uncompressed model, its metrics)``: trained on the first accepted trial, then
        reused by every trial (saved in ``directory/baseline``)."""
        if self._baseline is None:
            cfg = dataclasses.replace(self.config, out=self.output_dir, export=False)
            t0 = time.perf_counter()
            self.log(f"baseline: training {cfg.model} once for every trial ...")
            model, run = RunContext(cfg, self.data, self.log).baseline()
            run["valid_auc"] = evaluate(model, self.data.valid)["auc"]
            self.log(f"baseline: val_auc {run['valid_auc']:.4f}, {run['embedding_bytes']:,} embedding bytes "
                     f"({time.perf_counter() - t0:.1f}s)")
            self._baseline = (model, run)
        return self._baseline

    def trial_config(self, values: dict, out: str | None = None) -> RunConfig:
        """The base config with a trial's hyperparameter ``values`` applied (``tuner/epochs``, from
        Hyperband, bounds the stage-2 epochs); ``out`` is where the trial writes."""
        tuned = {k: v for k, v in values.items() if k in TUNED_FIELDS}
        if self.method != "mec+afm":
            tuned.pop("afm_energy", None)
        cfg = dataclasses.replace(self.config, **tuned, out=out or self.config.out)
        if self.pack_codes:
            from tfmec.layers.bitpack import bits_needed

            cfg.bits = bits_needed(cfg.codewords)
        if "tuner/epochs" in values:
            cfg.epochs = int(values["tuner/epochs"])
        return cfg

    def predicted_bytes(self, cfg: RunConfig) -> int:
        """Compressed embedding bytes of ``cfg``, computed before any training."""
        return compressed_embedding_bytes(self.tables, num_subspaces=cfg.subspaces, num_codewords=cfg.codewords,
                                          bits=cfg.bits, share_codebooks=cfg.share_codebooks,
                                          head_rows=cfg.head_rows, contrastive=cfg.beta > 0)

    # -- KerasTuner hooks ------------------------------------------------------------------------

    def run_trial(self, trial, *args, **kwargs):
        """Runs one trial (module docstring) and returns ``{"val_auc": ...}``; appends its record to
        :attr:`results` and rewrites the results files. ``args``/``kwargs`` of ``search`` are ignored."""
        values = dict(trial.hyperparameters.values)
        trial_dir = self.get_trial_dir(trial.trial_id)
        log_path = os.path.join(trial_dir, "trial.log")
        open(log_path, "w").close()

        def log(msg: str) -> None:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(msg + "\n")
            self.log(f"[trial {trial.trial_id}] {msg}")

        t0 = time.perf_counter()
        shown = {k: values[k] for k in TUNED_FIELDS if k in values}
        if "tuner/epochs" in values:
            shown["stage2_epochs"] = int(values["tuner/epochs"])
        record = {"trial": trial.trial_id, "status": None, "hyperparameters": shown, "val_auc": None,
                  "test_auc": None, "embedding_bytes": None, "compression_ratio_embeddings": None,
                  "seconds": None, "stage1_cache_hit": None, "log": log_path}
        cfg = self.trial_config(values, out=trial_dir)
        log(f"hyperparameters: {_fmt_values(shown)}")
        try:
            cfg.validate()
            predicted = self.predicted_bytes(cfg)
            record["predicted_embedding_bytes"] = predicted
            if self.memory_budget_bytes is not None and predicted > self.memory_budget_bytes:
                record.update(status=REJECTED, embedding_bytes=predicted,
                              compression_ratio_embeddings=self.tables.original_bytes / predicted,
                              message=f"compressed embeddings need {predicted:,} bytes > budget "
                                      f"{self.memory_budget_bytes:,}")
                log(f"rejected: {record['message']}; not run")
                return {OBJECTIVE: REJECTED_SCORE}
            ctx = _TrialContext(cfg, self.data, log, self.baseline(), self.stage1_cache)
            run = METHODS[self.method](ctx)
            model = ctx.models[self.method][0]
            val_auc = evaluate(model, self.data.valid)["auc"]
            record.update(status=ACCEPTED, val_auc=val_auc, test_auc=run["test_auc"],
                          embedding_bytes=run["embedding_bytes"],
                          compression_ratio_embeddings=run.get("compression_ratio_embeddings"),
                          stage1_cache_hit=ctx.stage1_cache_hit, stage1_seconds=run.get("stage1_seconds"))
            log(f"val_auc {val_auc:.4f}, {run['embedding_bytes']:,} embedding bytes")
            return {OBJECTIVE: val_auc}
        except Exception as err:
            record.update(status=ERROR, message=f"{type(err).__name__}: {err}")
            log(f"error: {record['message']}")
            raise
        finally:
            record["seconds"] = time.perf_counter() - t0
            self.results.append(record)
            self.write_results()
            self.log(self.progress_line(record))

    def on_search_end(self):
        """Writes the results and ``best_config.json`` (when a trial was accepted)."""
        super().on_search_end()
        self.write_results()
        best = self.best_record()
        if best is None:
            self.log("no trial was accepted: no best_config.json written")
            return
        write_json_atomic(os.path.join(self.output_dir, "best_config.json"), self.best_config().to_dict())
        self.log(f"best: trial {best['trial']} val_auc {best['val_auc']:.4f} ({_fmt_values(best['hyperparameters'])}); "
                 f"wrote {os.path.join(self.output_dir, 'best_config.json')}")

    # -- results ---------------------------------------------------------------------------------

    def progress_line(self, record: dict) -> str:
        """One line per finished trial: ``trial 3/12 accepted: val_auc ..., bytes (ratio), seconds``."""
        done = len(self.results)
        head = f"trial {record['trial']} ({done}/{self.max_trials}) {record['status']}"
        if record["status"] == ACCEPTED:
            ratio = record["compression_ratio_embeddings"]
            body = (f"val_auc {record['val_auc']:.4f}, {record['embedding_bytes']:,} B"
                    + (f" ({ratio:.1f}x)" if ratio else "")
                    + (", stage 1 cached" if record.get("stage1_cache_hit") else ""))
        else:
            body = record.get("message", "")
        return f"{head}: {body}; {record['seconds']:.1f}s  [{_fmt_values(record['hyperparameters'])}]"

    def best_record(self) -> dict | None:
        """The accepted trial with the highest validation AUC (None when none was accepted)."""
        accepted = [r for r in self.results if r["status"] == ACCEPTED]
        return max(accepted, key=lambda r: r["val_auc"]) if accepted else None

    def best_config(self) -> RunConfig:
        """The best accepted trial as a :class:`RunConfig` for ``tfmec run --config``: the base config
        with the trial's values, methods ``none`` and the tuned method (the baseline is trained anyway)
        and ``out`` = ``directory/best``. Raises ``ValueError`` when no trial was accepted."""
        best = self.best_record()
        if best is None:
            raise ValueError("no trial was accepted (all rejected by the memory budget, or none run)")
        values = {k: v for k, v in best["hyperparameters"].items() if k in TUNED_FIELDS}
        cfg = self.trial_config(values, out=os.path.join(self.output_dir, "best"))
        cfg.epochs = self.config.epochs
        cfg.methods = ["none", self.method]
        return cfg

    def write_results(self) -> None:
        """Rewrites ``results.jsonl`` (one JSON record per trial) and ``results.md`` (a markdown table)."""
        lines = "".join(json.dumps(r) + "\n" for r in self.results)
        write_bytes_atomic(self.results_path("jsonl"), lines.encode("utf-8"), suffix=".jsonl")
        write_bytes_atomic(self.results_path("md"), self.markdown().encode("utf-8"), suffix=".md")

    def markdown(self) -> str:
        """The results table in markdown, best accepted trial first, then by trial id."""
        names = [n for n in TUNED_FIELDS if any(n in r["hyperparameters"] for r in self.results)]
        if any("stage2_epochs" in r["hyperparameters"] for r in self.results):
            names.append("stage2_epochs")
        cols = ["trial", "status", *names, "val AUC", "embedding bytes", "ratio", "seconds", "stage 1"]
        best = self.best_record()
        order = sorted(self.results, key=lambda r: (r is not best, r["trial"]))
        title = f"# tfmec tune: {self.method} on {self.config.model}, {getattr(self.data, 'name', None) or self.config.data}"
        lines = [title, ""]
        if self.memory_budget_bytes is not None:
            lines += [f"Memory budget: {self.memory_budget_bytes:,} embedding bytes.", ""]
        if self._baseline is not None:
            b = self._baseline[1]
            lines += [f"Baseline (uncompressed): val AUC {b['valid_auc']:.4f}, {b['embedding_bytes']:,} embedding "
                      "bytes.", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in order:
            hp = r["hyperparameters"]
            ratio = r.get("compression_ratio_embeddings")
            cells = [str(r["trial"]) + (" (best)" if r is best else ""), r["status"] or "-"]
            cells += [_fmt(hp.get(n)) for n in names]
            cells += ["-" if r["val_auc"] is None else f"{r['val_auc']:.4f}",
                      "-" if r["embedding_bytes"] is None else f"{r['embedding_bytes']:,}",
                      "-" if not ratio else f"{ratio:.1f}x",
                      "-" if r["seconds"] is None else f"{r['seconds']:.1f}",
                      {True: "cached", False: "learned"}.get(r.get("stage1_cache_hit"), "-")]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt_values(values: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


@tfmec_export("tfmec.tuning.tune")
def tune(config: RunConfig, method: str = "mec", *, max_trials: int = 10, oracle="random", verbose: int = 0,
         **kwargs) -> MECTuner:
    """Builds a :class:`MECTuner` (``kwargs``: its other arguments), runs the search and returns the
    tuner (its :attr:`~MECTuner.results`, :meth:`~MECTuner.best_config`; files in ``config.out``).
    ``verbose``: KerasTuner's own per-trial display (0: only tfmec's progress lines)."""
    tuner = MECTuner(config, method, oracle=oracle, max_trials=max_trials, **kwargs)
    tuner.search(verbose=verbose)
    return tuner


__all__ = ["MECTuner", "tune", "make_oracle", "stage1_key", "OBJECTIVE", "REJECTED_SCORE", "ORACLES",
           "TUNABLE_METHODS", "ACCEPTED", "REJECTED", "ERROR"]
