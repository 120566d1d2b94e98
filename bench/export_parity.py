"""Export parity, size and serving speed on real Criteo rows (issue 6).

    python bench/export_parity.py --epochs 3

Trains baseline, mec (K=16, 4-bit codes), afm and mec+afm through ``tfmec.experiment`` (the code
path of ``tfmec run``) on the 10,000-row Criteo sample, exports each model with
``tfmec.export.saved_model`` and ``tfmec.export.onnx``, then on ALL rows of the sample (train, valid
and test):

* parity: max |p - p_keras| of the SavedModel's ``serving_default`` on the RAW rows (strings and raw
  counts, preprocessing in-graph) against Keras on the NumPy encoding of the same rows, of the
  ``ids`` signature and of ONNX Runtime on the encoded rows;
* size: SavedModel bytes (total, variables, graph, vocabulary assets), the embedding tables' bytes
  as stored in the SavedModel's checkpoint, ONNX bytes, against the in-memory byte counts;
* speed, side by side in one process: median latency of one row (batch 1) and median throughput at
  batch 1024 of ``serving_default`` (raw), ``ids`` and ONNX Runtime (CPU, default threads).

Writes one JSON line per method to ``--results`` and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from real_data import open_dataset  # noqa: E402

from tfmec import export  # noqa: E402
from tfmec.backend import KERAS_MODE  # noqa: E402
from tfmec.data import load  # noqa: E402
from tfmec.evaluation import embedding_layers  # noqa: E402
from tfmec.experiment import METHODS, RunConfig, RunContext  # noqa: E402
from tfmec.export.parity import keras_probabilities, max_abs_diff  # noqa: E402
from tfmec.export.versions import directory_bytes  # noqa: E402

METHOD_NAMES = {"none": "baseline", "mec": "mec", "afm": "afm", "mec+afm": "mec+afm"}


def raw_rows(reader, schema, max_rows):
    """All raw rows as serving inputs ``{field: array}`` and as reader columns ``{column: array}``."""
    parts = []
    n = 0
    for chunk in reader.chunks(8192):
        parts.append(chunk.features)
        n += len(chunk.labels)
        if n >= max_rows:
            break
    columns = {k: np.concatenate([p[k] for p in parts])[:max_rows] for k in parts[0]}
    raw = {f.name: (columns[f.source].astype(np.float32) if f.kind == "numeric"
                    else columns[f.source].astype(str).astype(object)) for f in schema}
    return raw, columns


def stored_embedding_bytes(sm_path, model) -> int:
    """Bytes of the embedding tables' variables as stored in the SavedModel's checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(sm_path, "variables", "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    names = [layer.name for layer in embedding_layers(model)]
    total = 0
    for key, shape in shapes.items():
        parts = key.split("/")
        if len(parts) > 1 and any(parts[1].startswith(n + ".") for n in names):
            total += int(np.prod(shape)) * dtypes[key].size
    return total


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tensors(inputs, specs, start, size):
    return {k: tf.constant(inputs[k][start:start + size], dtype=specs[k].dtype) for k in specs}


def speed(signatures, session, raw, ids, repeats_1, repeats_1024):
    """Median latency (ms) at batch 1 and throughput (rows/s) at batch 1024 of each way to serve."""
    out = {}
    for name, fn, inputs in (("saved_model_raw", signatures["serving_default"], raw),
                             ("saved_model_ids", signatures["ids"], ids)):
        specs = fn.structured_input_signature[1]
        one, big = tensors(inputs, specs, 0, 1), tensors(inputs, specs, 0, 1024)
        out[f"{name}_latency_ms_b1"] = 1e3 * median_seconds(lambda: fn(**one)["probability"].numpy(), repeats_1)
        out[f"{name}_rows_per_s_b1024"] = 1024 / median_seconds(lambda: fn(**big)["probability"].numpy(), repeats_1024)
    feeds = {}
    for size in (1, 1024):
        feeds[size] = {i.name: np.ascontiguousarray(ids[i.name][:size],
                                                    dtype=np.int32 if i.type == "tensor(int32)" else np.float32)
                       for i in session.get_inputs()}
    out["onnx_latency_ms_b1"] = 1e3 * median_seconds(lambda: session.run(None, feeds[1]), repeats_1)
    out["onnx_rows_per_s_b1024"] = 1024 / median_seconds(lambda: session.run(None, feeds[1024]), repeats_1024)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="none,mec,afm,mec+afm")
    p.add_argument("--rows", type=int, default=10_000, help="rows of the Criteo sample to read and check")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats-b1", type=int, default=300)
    p.add_argument("--repeats-b1024", type=int, default=30)
    p.add_argument("--out", default=os.path.join("bench", "out", "export_parity"))
    p.add_argument("--results", default=os.path.join("bench", "results", "export_parity.jsonl"))
    args = p.parse_args(argv)

    reader, schema = open_dataset("criteo")
    data = load(reader, schema, seed=args.seed, batch_size=256, rows=args.rows, progress=False)
    cfg = RunConfig(model="deepfm", seed=args.seed, batch_size=256, epochs=args.epochs, patience=3, out=args.out,
                    verbose=0, codewords=16, bits=4, export=False)
    ctx = RunContext(cfg, data, log=lambda msg: print("   ", msg, flush=True))
    raw, columns = raw_rows(reader, data.schema, args.rows)
    ids = data.encoder.encode(columns)
    n = len(raw[data.schema.names[0]])
    print(f"criteo: {n} raw rows, {len(data.schema)} fields; keras {KERAS_MODE}", flush=True)

    runs = []
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        run = METHODS[method](ctx)
        name = METHOD_NAMES.get(method, method)
        model = ctx.models[name][0]
        method_dir = os.path.join(args.out, name)
        t1 = time.perf_counter()
        sm = export.saved_model(model, os.path.join(method_dir, "saved_model"), data.encoder)
        sm_seconds = time.perf_counter() - t1
        t1 = time.perf_counter()
        onnx_path = export.onnx(model, os.path.join(method_dir, "model.onnx"), data.encoder)
        onnx_seconds = time.perf_counter() - t1
        signatures = tf.saved_model.load(sm).signatures
        session = export.onnx_session(onnx_path)
        p_keras = keras_probabilities(model, ids)
        result = {
            "dataset": "criteo", "rows": n, "method": name, "model": cfg.model, "keras": KERAS_MODE,
            "seed": args.seed, "epochs": args.epochs, "test_auc": run["test_auc"],
            "saved_model_max_abs_diff": max_abs_diff(export.predict_saved_model(signatures["serving_default"], raw),
                                                     p_keras),
            "saved_model_ids_max_abs_diff": max_abs_diff(export.predict_saved_model(signatures["ids"], ids), p_keras),
            "onnx_max_abs_diff": max_abs_diff(export.predict_onnx(session, ids), p_keras),
            "embedding_bytes": run["embedding_bytes"], "model_bytes": run["model_bytes"],
            "saved_model_bytes": directory_bytes(sm),
            "saved_model_variables_bytes": directory_bytes(os.path.join(sm, "variables")),
            "saved_model_graph_bytes": os.path.getsize(os.path.join(sm, "saved_model.pb")),
            "saved_model_assets_bytes": directory_bytes(os.path.join(sm, "assets")),
            "saved_model_embedding_bytes": stored_embedding_bytes(sm, model),
            "onnx_bytes": os.path.getsize(onnx_path),
            "saved_model_seconds": sm_seconds, "onnx_seconds": onnx_seconds,
        }
        result.update(speed(signatures, session, raw, ids, args.repeats_b1, args.repeats_b1024))
        if runs:
            base = runs[0]
            for key in ("embedding_bytes", "model_bytes", "saved_model_bytes", "saved_model_embedding_bytes",
                        "saved_model_variables_bytes", "onnx_bytes"):
                result[f"ratio_{key}"] = base[key] / result[key]
        runs.append(result)
        with open(args.results, "a") as fh:
            fh.write(json.dumps(result) + "\n")
        print(f"{name}: sm diff {result['saved_model_max_abs_diff']:.2e}, ids diff "
              f"{result['saved_model_ids_max_abs_diff']:.2e}, onnx diff {result['onnx_max_abs_diff']:.2e} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    print(tables(runs))


def tables(runs) -> str:
    """Markdown tables: parity, bytes, speed."""
    lines = ["| method | test AUC | max abs diff SavedModel raw (serving_default) | SavedModel ids | ONNX Runtime |",
             "|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['method']} | {r['test_auc']:.4f} | {r['saved_model_max_abs_diff']:.2e} | "
                     f"{r['saved_model_ids_max_abs_diff']:.2e} | {r['onnx_max_abs_diff']:.2e} |")
    lines += ["", "| method | embeddings in memory | embeddings in the SavedModel | model in memory | SavedModel total "
              "(variables / graph / vocab assets) | ONNX |", "|---|---|---|---|---|---|"]

    def ratio(r, key):
        return f" ({r[f'ratio_{key}']:.1f}x)" if f"ratio_{key}" in r else ""

    for r in runs:
        lines.append(
            f"| {r['method']} | {r['embedding_bytes']:,}{ratio(r, 'embedding_bytes')} | "
            f"{r['saved_model_embedding_bytes']:,}{ratio(r, 'saved_model_embedding_bytes')} | "
            f"{r['model_bytes']:,}{ratio(r, 'model_bytes')} | {r['saved_model_bytes']:,}{ratio(r, 'saved_model_bytes')} "
            f"({r['saved_model_variables_bytes']:,} / {r['saved_model_graph_bytes']:,} / {r['saved_model_assets_bytes']:,}) | "
            f"{r['onnx_bytes']:,}{ratio(r, 'onnx_bytes')} |")
    lines += ["", "| method | latency b=1, SavedModel raw | SavedModel ids | ONNX Runtime | rows/s b=1024, SavedModel raw "
              "| SavedModel ids | ONNX Runtime |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['method']} | {r['saved_model_raw_latency_ms_b1']:.2f} ms | {r['saved_model_ids_latency_ms_b1']:.2f} ms | "
            f"{r['onnx_latency_ms_b1']:.2f} ms | {r['saved_model_raw_rows_per_s_b1024']:,.0f} | "
            f"{r['saved_model_ids_rows_per_s_b1024']:,.0f} | {r['onnx_rows_per_s_b1024']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
