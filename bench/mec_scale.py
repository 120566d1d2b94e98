"""MEC at scale: synthetic data whose largest fields have 10^7 ids, d = 40 (issue 4).

    python bench/mec_scale.py --out bench/out/scale            # every phase, each in its own process
    python bench/mec_scale.py --phase stage1 --codewords 16 ... # one phase (what the driver runs)

Tables are sized to the whole id space (``SyntheticCTR.encoded_rows``: the Zipf rank is the id), so
the largest table really holds 10^7 + 1 rows, whatever share of them the training rows touch. Phases, each a separate Python process so that its peak RSS is its own:

1. ``baseline``: DeepFM (d = 40) trained with LazyAdam (Keras's Adam would densify the 10^7-row
   gradients) for a fixed number of epochs; saves the weights, the tables and the training counts.
2. ``stage1``: loads only the embedding tables and counts, runs ``tfmec.mec.learn_codes``; records
   time and peak RSS (``ru_maxrss``) of the process.
3. ``stage2``: rebuilds the baseline, swaps in the quantised tables (``compress_embeddings``),
   fine-tunes (keeping the start when no epoch helps) and evaluates; records AUC, embedding bytes
   per table and ratios.
4. ``throughput``: prediction throughput of both models, alternated over ``--rounds`` rounds.
5. ``export``: SavedModel bytes on disk of both models and the MEC SavedModel's parity.
6. ``budget`` (issue 19): ``tfmec.mec.compress_to_budget`` at ``--target-ratio`` on the baseline's
   weights, fine-tuned, test AUC, the tiers chosen, throughput side by side and SavedModel parity::

       python bench/mec_scale.py --phase baseline --out bench/out/scale --results bench/results/mec_scale_budget.jsonl
       python bench/mec_scale.py --phase budget --target-ratio 64 --results bench/results/mec_scale_budget.jsonl

Every phase appends one JSON line to ``--results``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCK = 8192


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _vocab_sizes(largest: int) -> list[int]:
    # one field at the largest size, the rest spread geometrically below it down to 10 (one table of
    # 10^7 x 40 with LazyAdam's two moments is 4.8 GB; a second one did not fit beside the other jobs
    # of a 24 GB machine)
    sizes = [largest]
    while sizes[-1] > 10:
        sizes.append(max(10, sizes[-1] // 10))
    return sizes


def _data(args):
    from tfmec.data.synthetic import SyntheticCTR

    gen = SyntheticCTR(rows=BLOCK, seed=args.data_seed, vocab_sizes=_vocab_sizes(args.largest), num_numeric=4)
    n_train = args.train_rows // BLOCK
    n_eval = args.eval_rows // BLOCK
    train = gen.encoded_rows(0, n_train)
    valid = gen.encoded_rows(n_train, n_eval)
    test = gen.encoded_rows(n_train + n_eval, n_eval)
    return gen, train, valid, test


def _schema(gen):
    from tfmec.data.schema import Field, Schema

    fields = [Field(f"I{j + 1}", kind="numeric") for j in range(gen.num_numeric)]
    fields += [Field(f"C{f + 1}", vocab_size=v + 1) for f, v in enumerate(gen.vocab_sizes)]
    return Schema(fields)


def _dataset(gen, part, batch, shuffle=False, seed=0):
    import tensorflow as tf

    ids, nums, labels = part
    feats = {f"C{f + 1}": ids[:, f] for f in range(ids.shape[1])}
    feats.update({f"I{j + 1}": nums[:, j] for j in range(nums.shape[1])})
    ds = tf.data.Dataset.from_tensor_slices((feats, labels))
    if shuffle:
        ds = ds.shuffle(200_000, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(2)


def _build(schema, args):
    from tfmec.backend import keras
    from tfmec.models import build_model

    keras.utils.set_random_seed(args.seed)
    return build_model("deepfm", schema, embedding_dim=args.dim, seed=args.seed)


def _counts(schema, train_ids):
    """Training counts per id, ``{field: int64[V]}`` (what ``CTRData.frequencies`` holds)."""
    return {field.name: np.bincount(train_ids[:, f], minlength=field.vocab_size).astype(np.int64)
            for f, field in enumerate(schema.categorical)}


def _baseline_and_mec(args):
    """``(generator, (train, valid, test), trained baseline, codes, MEC model)`` from the files of the
    baseline and stage-1 phases (the MEC model not yet fine-tuned)."""
    from tfmec.mec import CodeSet, compress_embeddings

    gen, train, valid, test = _data(args)
    base = _build(_schema(gen), args)
    base.load_weights(os.path.join(args.out, "baseline.weights.h5"))
    codes = CodeSet.load(os.path.join(args.out, f"codes_{_tag(args)}"))
    model = compress_embeddings(base, codes, bits=args.bits, seed=args.seed, head_rows=args.head_rows)
    return gen, (train, valid, test), base, codes, model


def phase_baseline(args):
    from tfmec.evaluation import embedding_bytes, evaluate
    from tfmec.training import compile_ctr

    t0 = time.perf_counter()
    gen, train, valid, test = _data(args)
    schema = _schema(gen)
    data_s = time.perf_counter() - t0
    model = _build(schema, args)
    compile_ctr(model, args.learning_rate, optimizer="lazy_adam")
    # a fixed number of epochs: early stopping would keep a copy of every 10^7-row table in memory
    t_fit = time.perf_counter()
    history = model.fit(_dataset(gen, train, args.batch, True, args.seed), validation_data=_dataset(gen, valid, 16384),
                        epochs=args.epochs, verbose=args.verbose).history
    fit = {"epochs": len(history["loss"]), "best_epoch": int(np.argmax(history["val_auc"])) + 1,
           "train_seconds": time.perf_counter() - t_fit, "val_auc": history["val_auc"]}
    result = evaluate(model, _dataset(gen, test, 16384))
    os.makedirs(args.out, exist_ok=True)
    model.save_weights(os.path.join(args.out, "baseline.weights.h5"))
    from tfmec.mec import tables_from

    tables, counts = tables_from(model), _counts(schema, train[0])  # keyed as learn_codes keys them
    for name, table in tables.items():
        np.save(os.path.join(args.out, f"table_{name}.npy"), table)
    np.savez(os.path.join(args.out, "counts.npz"), **counts)
    return {"phase": "baseline", "test_auc": result["auc"], "test_logloss": result["logloss"],
            "embedding_bytes": embedding_bytes(model), "epochs": fit["epochs"], "best_epoch": fit["best_epoch"],
            "val_auc_per_epoch": fit["val_auc"],
            "train_seconds": fit["train_seconds"], "data_seconds": data_s,
            "seconds_per_epoch": fit["train_seconds"] / max(1, fit["epochs"]),
            "table_rows": {n: int(t.shape[0]) for n, t in tables.items()}, "peak_rss_gb": _peak_rss_gb()}


def phase_stage1(args):
    from tfmec.mec import learn_codes

    files = sorted(f for f in os.listdir(args.out) if f.startswith("table_") and f.endswith(".npy"))
    tables = {f[len("table_"):-len(".npy")]: np.load(os.path.join(args.out, f)) for f in files}
    counts = dict(np.load(os.path.join(args.out, "counts.npz")))
    rss_loaded = _peak_rss_gb()
    t0 = time.perf_counter()
    codes = learn_codes(tables, counts, num_subspaces=args.subspaces, num_codewords=args.codewords,
                        epochs=args.stage1_epochs, batch_size=args.stage1_batch, seed=args.seed,
                        progress=args.verbose > 0)
    seconds = time.perf_counter() - t0
    tag = _tag(args)
    codes.save(os.path.join(args.out, f"codes_{tag}"))
    per_field = {n: {"seconds": fc.stats["seconds"], "epochs": fc.stats["epochs"],
                     "rows": int(tables[n].shape[0])} for n, fc in codes.items()}
    return {"phase": "stage1", "config": tag, "stage1_seconds": seconds, "peak_rss_gb": _peak_rss_gb(),
            "rss_after_loading_tables_gb": rss_loaded, "tables": per_field,
            "largest_table_seconds": max(v["seconds"] for v in per_field.values())}


def _tag(args) -> str:
    """Names the stage-1 codes: M, K and the code width."""
    return f"M{args.subspaces}_K{args.codewords}_bits{args.bits or 0}"


def _config_tag(args) -> str:
    """Names a stage-2 configuration: the codes' tag plus the exact head rows, when any."""
    return _tag(args) + (f"_head{args.head_rows:g}" if args.head_rows else "")


def phase_stage2(args):
    from tfmec.evaluation import embedding_bytes, embedding_layers, evaluate, variable_bytes
    from tfmec.training import compile_ctr, fit_early_stopping

    gen, (train, valid, test), base, codes, model = _baseline_and_mec(args)
    test_ds = _dataset(gen, test, 16384)
    base_eval = evaluate(base, test_ds)
    compile_ctr(model, args.learning_rate * 0.1, optimizer="lazy_adam")
    fit = fit_early_stopping(model, _dataset(gen, train, args.batch, True, args.seed), _dataset(gen, valid, 16384),
                             epochs=args.epochs, patience=1, verbose=args.verbose, keep_start=True)
    mec_eval = evaluate(model, test_ds)

    def per_table(m):
        return {layer.name: variable_bytes(layer.weights) for layer in embedding_layers(m)}

    bt, mt = per_table(base), per_table(model)
    deep = [n for n in bt if n.startswith("embedding_") and n[len("embedding_"):] in codes]
    big = [n for n in deep if codes[n[len("embedding_"):]].vocab_size > args.largest // 2]
    return {"phase": "stage2", "config": _config_tag(args), "baseline_test_auc": base_eval["auc"],
            "mec_test_auc": mec_eval["auc"], "auc_delta": mec_eval["auc"] - base_eval["auc"],
            "best_epoch": fit["best_epoch"], "fine_tune_seconds": fit["train_seconds"],
            "embedding_bytes_baseline": embedding_bytes(base), "embedding_bytes_mec": embedding_bytes(model),
            "ratio_all_tables": embedding_bytes(base) / embedding_bytes(model),
            "ratio_d40_tables": sum(bt[n] for n in deep) / sum(mt[n] for n in deep),
            "ratio_largest_tables": sum(bt[n] for n in big) / sum(mt[n] for n in big),
            "bytes_per_table_baseline": bt, "bytes_per_table_mec": mt, "peak_rss_gb": _peak_rss_gb()}


def phase_throughput(args):
    """Prediction throughput of the baseline and of the MEC model (weights do not change the cost, so
    the stage-2 model is rebuilt from the codes without fine-tuning), called in turn within each of
    ``--rounds`` rounds at batch 1, 256 and 4096 so that both see the same machine load
    (:func:`tfmec.evaluation.throughput_side_by_side`); medians and their ratio, and the commit."""
    import subprocess

    from tfmec.evaluation import throughput_side_by_side

    gen, (_, _, test), base, _, model = _baseline_and_mec(args)
    test_ds = _dataset(gen, test, 16384)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    row = {"phase": "throughput", "config": _config_tag(args), "rounds": args.rounds, "commit": commit}
    for batch in (1, 256, 4096):
        speeds = throughput_side_by_side({"baseline": base, "mec": model}, test_ds, batch_size=batch,
                                         rounds=args.rounds)
        row[f"batch{batch}"] = {"baseline_rows_per_s": speeds["baseline"], "mec_rows_per_s": speeds["mec"],
                                "ratio": speeds["mec"] / speeds["baseline"]}
    return row


def phase_export(args):
    """SavedModel bytes on disk of the baseline and of the MEC model (ids signature; these tables are
    indexed by id, there is no vocabulary), against their in-memory embedding bytes; and parity of
    the MEC SavedModel on 4096 test rows."""
    import shutil

    from tfmec.evaluation import embedding_bytes, model_bytes
    from tfmec.export import directory_bytes, keras_probabilities, max_abs_diff, predict_saved_model, saved_model

    gen, (_, _, test), base, _, model = _baseline_and_mec(args)
    root = os.path.join(args.out, f"export_{_tag(args)}")
    shutil.rmtree(root, ignore_errors=True)
    row = {"phase": "export", "config": _config_tag(args)}
    x = {k: v[:4096] for k, v in next(iter(_dataset(gen, test, 4096)))[0].items()}
    for name, m in (("baseline", base), ("mec", model)):
        t0 = time.perf_counter()
        path = saved_model(m, os.path.join(root, name))
        row[f"{name}_saved_model_bytes"] = directory_bytes(path)
        row[f"{name}_export_seconds"] = time.perf_counter() - t0
        row[f"{name}_embedding_bytes"] = embedding_bytes(m)
        row[f"{name}_model_bytes"] = model_bytes(m)
        if name == "mec":
            row["mec_saved_model_max_abs_diff"] = max_abs_diff(predict_saved_model(path, x, signature="ids"),
                                                               keras_probabilities(m, x))
    row["in_memory_embedding_ratio"] = row["baseline_embedding_bytes"] / row["mec_embedding_bytes"]
    row["saved_model_ratio"] = row["baseline_saved_model_bytes"] / row["mec_saved_model_bytes"]
    row["saved_model_ratio_over_embedding_ratio"] = row["saved_model_ratio"] / row["in_memory_embedding_ratio"]
    shutil.rmtree(root, ignore_errors=True)
    return row


def phase_budget(args):
    """Issue 19: the budgeted MEC at ``--target-ratio`` (the uncompressed tables' bytes / ratio):
    ``tfmec.mec.compress_to_budget`` on the trained baseline (validation data picks the popularity
    exponent), fine-tuned as stage 2 (LazyAdam at 0.1x, keeping the start when no epoch helps), test
    AUC against the baseline's, the tiers of the largest table, then prediction throughput of both
    models side by side (Keras, ``--rounds`` rounds at batch 256 and 4096) and the SavedModel's parity."""
    import shutil

    from tfmec.evaluation import embedding_bytes, embedding_layers, evaluate, throughput_side_by_side, variable_bytes
    from tfmec.export import keras_probabilities, max_abs_diff, predict_saved_model, saved_model
    from tfmec.mec import compress_to_budget
    from tfmec.training import compile_ctr, fit_early_stopping

    gen, train, valid, test = _data(args)
    schema = _schema(gen)
    base = _build(schema, args)
    base.load_weights(os.path.join(args.out, "baseline.weights.h5"))
    counts = dict(np.load(os.path.join(args.out, "counts.npz")))
    test_ds, valid_ds = _dataset(gen, test, 16384), _dataset(gen, valid, 16384)
    base_eval = evaluate(base, test_ds)
    full = sum(4 * int(np.prod(layer.weights[0].shape)) for layer in embedding_layers(base))
    budget = int(full // args.target_ratio)
    t0 = time.perf_counter()
    model, plan = compress_to_budget(base, counts, budget, valid_ds, contrastive_weight=2e-3, seed=args.seed,
                                     log=print)
    choose_s = time.perf_counter() - t0
    start_eval = evaluate(model, test_ds)
    compile_ctr(model, args.learning_rate * 0.1, optimizer="lazy_adam")
    fit = fit_early_stopping(model, _dataset(gen, train, args.batch, True, args.seed), valid_ds,
                             epochs=args.epochs, patience=1, verbose=args.verbose, keep_start=True)
    mec_eval = evaluate(model, test_ds)
    largest = max(plan.tables, key=lambda k: sum(t["rows"] for t in plan.tables[k]))
    row = {"phase": "budget", "target_ratio": args.target_ratio, "budget_bytes": budget,
           "baseline_test_auc": base_eval["auc"], "mec_test_auc_before_fine_tuning": start_eval["auc"],
           "mec_test_auc": mec_eval["auc"], "auc_delta": mec_eval["auc"] - base_eval["auc"],
           "best_epoch": fit["best_epoch"], "fine_tune_seconds": fit["train_seconds"], "choose_seconds": choose_s,
           "embedding_bytes_baseline": embedding_bytes(base), "embedding_bytes_mec": embedding_bytes(model),
           "ratio_all_tables": embedding_bytes(base) / embedding_bytes(model), "alpha": plan.alpha,
           "candidates": plan.candidates, "largest_table": largest, "largest_table_tiers": plan.tables[largest],
           "tables": plan.tables, "peak_rss_gb": _peak_rss_gb()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    row["commit"] = commit
    for batch in (256, 4096):
        speeds = throughput_side_by_side({"baseline": base, "mec": model}, test_ds, batch_size=batch,
                                         rounds=args.rounds)
        row[f"batch{batch}"] = {"baseline_rows_per_s": speeds["baseline"], "mec_rows_per_s": speeds["mec"],
                                "ratio": speeds["mec"] / speeds["baseline"]}
    root = os.path.join(args.out, f"export_budget_{args.target_ratio:g}")
    shutil.rmtree(root, ignore_errors=True)
    x = {k: v[:4096] for k, v in next(iter(_dataset(gen, test, 4096)))[0].items()}
    path = saved_model(model, os.path.join(root, "mec"))
    row["mec_saved_model_max_abs_diff"] = max_abs_diff(predict_saved_model(path, x, signature="ids"),
                                                       keras_probabilities(model, x))
    shutil.rmtree(root, ignore_errors=True)
    return row


PHASES = {"baseline": phase_baseline, "stage1": phase_stage1, "stage2": phase_stage2, "throughput": phase_throughput,
          "export": phase_export, "budget": phase_budget}


def summarise(rows: list[dict]) -> str:
    """Markdown tables of a results file: the baseline, stage 1 per configuration, stage 2 per configuration."""
    out = []
    for b in (r for r in rows if r["phase"] == "baseline"):
        out.append(f"Baseline: largest table {b['largest']:,} x {b['dim']} ids, {b['train_rows']:,} training rows, "
                   f"test AUC {b['test_auc']:.4f}, embedding bytes {b['embedding_bytes']:,}, "
                   f"{b['seconds_per_epoch']:.0f} s per epoch (LazyAdam), peak RSS {b['peak_rss_gb']:.1f} GB")
    out += ["", "| config | stage-1 seconds (all tables) | largest table seconds | stage-1 peak RSS GB | "
                "baseline AUC | MEC AUC | delta | ratio, largest table | ratio, d=40 tables | ratio, all tables |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s2 in (r for r in rows if r["phase"] == "stage2"):
        # a stage-2 configuration (codes tag + optional _head<H>) reads the stage-1 codes of its tag
        s1 = next((r for r in rows if r["phase"] == "stage1" and
                   (s2["config"] == r["config"] or s2["config"].startswith(r["config"] + "_head"))), None)
        if s1 is None:
            continue
        out.append(f"| {s2['config']} | {s1['stage1_seconds']:.0f} | {s1['largest_table_seconds']:.0f} | "
                   f"{s1['peak_rss_gb']:.2f} | {s2['baseline_test_auc']:.4f} | {s2['mec_test_auc']:.4f} | "
                   f"{s2['auc_delta']:+.4f} | {s2['ratio_largest_tables']:.1f}x | {s2['ratio_d40_tables']:.1f}x | "
                   f"{s2['ratio_all_tables']:.1f}x |")
    ex = [r for r in rows if r["phase"] == "export"]
    if ex:
        out += ["", "| config | baseline SavedModel bytes | MEC SavedModel bytes | on-disk ratio | in-memory embedding "
                    "ratio | on-disk / in-memory | max abs diff (ids signature, 4096 rows) |", "|---|---|---|---|---|---|---|"]
        for r in ex:
            out.append(f"| {r['config']} | {r['baseline_saved_model_bytes']:,} | {r['mec_saved_model_bytes']:,} | "
                       f"{r['saved_model_ratio']:.1f}x | {r['in_memory_embedding_ratio']:.1f}x | "
                       f"{r['saved_model_ratio_over_embedding_ratio']:.2f} | {r['mec_saved_model_max_abs_diff']:.1e} |")
    tp = [r for r in rows if r["phase"] == "throughput"]
    if tp:
        out += ["", "| config | code | batch | baseline rows/s (median) | MEC rows/s (median) | ratio | rounds |",
                "|---|---|---|---|---|---|---|"]
        for r in tp:
            for batch in (1, 256, 4096):
                if f"batch{batch}" not in r:
                    continue
                t = r[f"batch{batch}"]
                out.append(f"| {r['config']} | {r.get('commit', 'before 1dd6e38')} | {batch} | "
                           f"{t['baseline_rows_per_s']:,.0f} | {t['mec_rows_per_s']:,.0f} | {t['ratio']:.2f} | "
                           f"{r['rounds']} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=sorted(PHASES), default=None, help="run one phase (default: the driver)")
    p.add_argument("--largest", type=int, default=10**7)
    p.add_argument("--dim", type=int, default=40)
    p.add_argument("--train-rows", type=int, default=1_000_000)
    p.add_argument("--eval-rows", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=2, help="baseline epochs (fixed); stage-2 fine-tuning at most")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--subspaces", type=int, default=4)
    p.add_argument("--codewords", type=int, default=256)
    p.add_argument("--bits", type=int, default=None)
    p.add_argument("--stage1-epochs", type=int, default=3)
    p.add_argument("--head-rows", type=float, default=0.0,
                   help="stage 2: exact head rows per table (a share below 1, else a count; beyond the paper)")
    p.add_argument("--stage1-batch", type=int, default=16384)
    p.add_argument("--target-ratio", type=float, default=64.0, help="budget phase: uncompressed bytes / ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--rounds", type=int, default=9, help="throughput phase: alternated measurement rounds")
    p.add_argument("--out", default="bench/out/scale")
    p.add_argument("--results", default="bench/out/mec_scale.jsonl")
    p.add_argument("--summarise", metavar="JSONL", help="print the tables of a results file and exit")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise([json.loads(line) for line in open(args.summarise) if line.strip()]))
        return
    if args.phase:
        t0 = time.perf_counter()
        row = PHASES[args.phase](args)
        row.update(wall_seconds=time.perf_counter() - t0, largest=args.largest, dim=args.dim,
                   train_rows=args.train_rows, seed=args.seed)
        os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
        with open(args.results, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
        print(json.dumps(row, default=float, indent=1), flush=True)
        return
    common = [f"--largest={args.largest}", f"--dim={args.dim}", f"--train-rows={args.train_rows}",
              f"--eval-rows={args.eval_rows}", f"--out={args.out}", f"--results={args.results}",
              f"--seed={args.seed}", f"--epochs={args.epochs}", f"--verbose={args.verbose}",
              f"--stage1-epochs={args.stage1_epochs}", f"--rounds={args.rounds}"]
    me = [sys.executable, os.path.abspath(__file__)]
    runs = [["--phase=baseline"]]
    for k, bits in ((256, None), (16, 4)):
        q = [f"--subspaces={args.subspaces}", f"--codewords={k}"] + ([f"--bits={bits}"] if bits else [])
        runs += [[f"--phase={phase}"] + q for phase in ("stage1", "stage2", "throughput", "export")]
    for extra in runs:
        print(">>", " ".join(extra), flush=True)
        subprocess.run(me + common + extra, check=True)


if __name__ == "__main__":
    main()
