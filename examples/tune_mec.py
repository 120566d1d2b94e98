"""Tune MEC's hyperparameters with KerasTuner under a memory budget, then run the best configuration.

    pip install 'tfmec[tune]'
    python examples/tune_mec.py            # a few minutes on two CPU cores

The data is a small CSV written from tfmec's synthetic generator (8 categorical fields, 40,000 rows),
so the sweep is quick and ``best_config.json`` names a file that ``tfmec run --config`` can read.
Each trial learns codes (stage 1, cached across trials with the same stage-1 settings) and fine-tunes
the baseline with the quantised tables (stage 2); the baseline is trained once. Trials whose
compressed tables would exceed the budget are rejected without training. The same sweep from the
shell:

    tfmec tune --data runs/tune_example/clicks.csv --format csv --label label --model deepfm \\
        --method mec --trials 6 --oracle bayesian --codewords 16,64,256 --subspaces 2,4 \\
        --memory-budget 60000 --embedding-dim 8 --epochs 3 --stage1-epochs 3 --out runs/tune_example
    tfmec run --config runs/tune_example/best_config.json
"""
import os

import numpy as np

from tfmec.data.synthetic import SyntheticCTR
from tfmec.experiment import RunConfig, run_experiment
from tfmec.tuning import MECTuner, SearchSpace

OUT = "runs/tune_example"


def write_csv(path: str, rows: int = 40_000) -> str:
    """Synthetic CTR rows as a CSV file: ``label,C1..C8``."""
    reader = SyntheticCTR(rows=rows, seed=0, vocab_sizes=np.geomspace(10, 20_000, 8).astype(int), num_numeric=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        names = [f"C{i + 1}" for i in range(8)]
        fh.write(",".join(["label", *names]) + "\n")
        for chunk in reader.chunks():
            columns = [chunk.labels.astype(int).astype(str)] + [chunk.features[n] for n in names]
            fh.writelines(",".join(row) + "\n" for row in zip(*columns))
    return path


def main():
    csv = write_csv(os.path.join(OUT, "clicks.csv"))
    config = RunConfig(data=csv, format="csv", label="label", model="deepfm", embedding_dim=8, epochs=3,
                       stage1_epochs=3, batch_size=1024, learning_rate=3e-3, verbose=0, out=OUT)
    space = SearchSpace(alpha=(1e-6, 1e-2), beta=(1e-4, 1e-1), codewords=(16, 64, 256), subspaces=(2, 4))
    tuner = MECTuner(config, "mec", oracle="bayesian", max_trials=6, space=space, memory_budget_bytes=60_000)
    tuner.search(verbose=0)

    print(tuner.markdown())  # also in runs/tune_example/results.md and results.jsonl
    best = tuner.best_config()  # also runs/tune_example/best_config.json, for `tfmec run --config`
    print(f"best: K={best.codewords}, M={best.subspaces}, alpha={best.alpha:.2g}, beta={best.beta:.2g}")

    best.export = False
    for run in run_experiment(best)["runs"]:
        print(f"{run['method']:9s} test AUC {run['test_auc']:.4f}  embedding bytes {run['embedding_bytes']:,}")


if __name__ == "__main__":
    main()
