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
from tfmec.api_export import public_names
from tfmec.tuning import budget, space, tuner

# every name exported as tfmec.tuning.* by the modules above (@tfmec_export, export_value)
__all__ = public_names(globals(), budget, space, tuner)
