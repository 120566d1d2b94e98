"""tfmec.tuning: KerasTuner sweeps over MEC's hyperparameters (alpha, beta, K, M and, for ``mec+afm``,
the AFM energy) under an optional memory budget, in Keras 3 and tf-keras mode.

Needs KerasTuner (``pip install 'tfmec[tune]'``)::

    from tfmec.experiment import RunConfig
    from tfmec.tuning import MECTuner, SearchSpace

    cfg = RunConfig(data="synthetic", rows=200_000, model="deepfm", out="runs/tune")
    tuner = MECTuner(cfg, "mec", oracle="bayesian", max_trials=12, memory_budget_bytes=2_000_000)
    tuner.search()
    best = tuner.best_config()          # a RunConfig; also written to runs/tune/best_config.json

or from the shell: ``tfmec tune --method mec --trials 12 --memory-budget 2000000 --out runs/tune``.
"""
from tfmec.tuning.budget import EmbeddingTables, compressed_embedding_bytes
from tfmec.tuning.space import TUNED_FIELDS, SearchSpace
from tfmec.tuning.tuner import (ACCEPTED, ERROR, OBJECTIVE, ORACLES, REJECTED, REJECTED_SCORE, TUNABLE_METHODS,
                                MECTuner, make_oracle, stage1_key, tune)

__all__ = ["MECTuner", "SearchSpace", "tune", "make_oracle", "stage1_key", "EmbeddingTables",
           "compressed_embedding_bytes", "TUNED_FIELDS", "OBJECTIVE", "REJECTED_SCORE", "ORACLES", "TUNABLE_METHODS",
           "ACCEPTED", "REJECTED", "ERROR"]
