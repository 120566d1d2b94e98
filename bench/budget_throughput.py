"""Prediction throughput of a budgeted (tiered) MEC model against its uncompressed baseline (issue 19).

Reads the models a ``tfmec run`` left in ``--run DIR`` (``DIR/<method>/model.keras``, e.g. ``make demo``'s
``runs/demo`` with ``--target-ratio``), exports each to a SavedModel and to ONNX, checks parity on 4096
test rows, then measures rows/s at batch 256 and 4096 in the three runtimes, every model and runtime
called in turn within each of ``--rounds`` rounds (a burst of calls each), medians of the rounds:

- Keras: a ``tf.function`` of ``model(x, training=False)`` (as ``tfmec.evaluation.throughput_side_by_side``);
- SavedModel: ``tfmec.export.saved_model``, loaded with ``tf.saved_model.load``, its ``ids`` signature;
- ONNX Runtime: ``tfmec.export.onnx`` (tf2onnx from the same ``ids`` function), CPU provider.

The test rows are the run's own: its synthetic data regenerated with ``--rows`` and ``--seed`` (the
run's settings), or with ``--sample NAME`` the test split of that real sample (``bench/real_data.py``)
at ``--seed``, e.g. a DIN run of ``bench/sequences.py``::

    python bench/budget_throughput.py --sample mind-small-5k --seed 0 \\
        --run bench/out/sequences/mind-small-5k/din/seed0 --methods baseline,mec,mec+afm \\
        --results bench/results/sequences_throughput.jsonl

    python bench/budget_throughput.py --run runs/demo --methods baseline,mec --rows 200000 --seed 0 \\
        --results bench/results/budget_throughput.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "bench"))
from scale_sweep import RUNTIMES, _burst_rate  # noqa: E402  (the same runtimes and timed bursts)

BATCHES = (256, 4096)


def test_rows(rows: int, seed: int, n: int = 4096, sample: str | None = None) -> dict:
    """``{field: array[n]}`` of the encoded test split of ``tfmec run --data synthetic --rows R --seed S``,
    or with ``sample`` of ``tfmec run <the sample's flags (bench/real_data.py)> --seed S``."""
    from tfmec.experiment import RunConfig, load_for

    if sample is None:
        cfg = RunConfig(data="synthetic", rows=rows, seed=seed, batch_size=n)
    else:
        from real_data import cli_data_args

        flags = cli_data_args(sample)
        values = {flags[i][2:].replace("-", "_"): flags[i + 1] for i in range(0, len(flags), 2)}
        cfg = RunConfig.from_dict({**values, "seed": seed, "batch_size": n, "verbose": 0})
    data = load_for(cfg)
    features, _ = next(iter(data.test))
    return {k: np.asarray(v) for k, v in features.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--methods", default="baseline,mec")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--sample", default=None, help="the run's real sample (bench/real_data.py), not synthetic data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--burst-rows", type=int, default=65536, help="rows per timed burst")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "budget_throughput"))
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "budget_throughput.jsonl"))
    args = p.parse_args(argv)

    import tensorflow as tf

    from tfmec import export
    from tfmec.evaluation import embedding_bytes
    from tfmec.export.parity import max_abs_diff
    from tfmec.io import load_model

    test = test_rows(args.rows, args.seed, sample=args.sample)
    shutil.rmtree(args.out, ignore_errors=True)
    entries = {}
    for method in args.methods.split(","):
        model = load_model(os.path.join(args.run, method, "model.keras"))
        sm_path = export.saved_model(model, os.path.join(args.out, method.replace("+", "_"), "saved_model"))
        onnx_path = export.onnx(model, os.path.join(args.out, method.replace("+", "_"), "model.onnx"))
        signature = tf.saved_model.load(sm_path).signatures["ids"]
        specs = signature.structured_input_signature[1]
        session = export.onnx_session(onnx_path)
        onnx_types = {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64 if i.type == "tensor(int64)"
                               else np.float32) for i in session.get_inputs()}
        keras_fn = tf.function(lambda inputs, m=model: m(inputs, training=False))
        x_tf = {k: tf.constant(test[k], dtype=specs[k].dtype) for k in specs}
        p_keras = np.asarray(keras_fn(x_tf)).reshape(-1)
        p_sm = signature(**x_tf)["probability"].numpy().reshape(-1)
        p_onnx = session.run(None, {k: test[k].astype(t) for k, t in onnx_types.items()})[0].reshape(-1)
        entries[method] = {"keras_fn": keras_fn, "signature": signature, "specs": specs, "session": session,
                           "onnx_types": onnx_types,
                           "row": {"method": method, "run": args.run, "embedding_bytes": int(embedding_bytes(model)),
                                   "max_abs_diff_saved_model": float(max_abs_diff(p_sm, p_keras)),
                                   "max_abs_diff_onnx": float(max_abs_diff(p_onnx, p_keras))}}
    for batch in BATCHES:
        calls = {}
        for method, e in entries.items():
            x_tf = {k: tf.constant(test[k][:batch], dtype=e["specs"][k].dtype) for k in e["specs"]}
            feeds = {k: np.ascontiguousarray(test[k][:batch], dtype=t) for k, t in e["onnx_types"].items()}
            calls[(method, "keras")] = lambda x=x_tf, f=e["keras_fn"]: np.asarray(f(x))
            calls[(method, "saved_model")] = lambda x=x_tf, s=e["signature"]: s(**x)["probability"].numpy()
            calls[(method, "onnx")] = lambda f=feeds, s=e["session"]: s.run(None, f)
        burst = max(1, args.burst_rows // batch)
        for call in calls.values():
            for _ in range(3):
                call()
        rates = {key: [] for key in calls}
        for _ in range(args.rounds):
            for key, call in calls.items():  # every model and runtime in turn: they share the machine's load
                rates[key].append(_burst_rate(call, batch, burst))
        for (method, runtime), values in rates.items():
            entries[method]["row"].setdefault(f"batch{batch}", {})[f"{runtime}_rows_per_s"] = float(np.median(values))
    base = args.methods.split(",")[0]
    with open(args.results, "a", encoding="utf-8") as fh:
        for method, e in entries.items():
            row = e["row"]
            row["rounds"] = args.rounds
            for batch in BATCHES:
                for runtime in RUNTIMES:
                    ours = row[f"batch{batch}"][f"{runtime}_rows_per_s"]
                    theirs = entries[base]["row"][f"batch{batch}"][f"{runtime}_rows_per_s"]
                    row[f"batch{batch}"][f"{runtime}_ratio_to_{base}"] = ours / theirs
            fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
