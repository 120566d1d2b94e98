"""Scale sweeps (issue 8, deliverable 3): training step time, stage 1 and serving throughput.

    python bench/scale_sweep.py                                   # every sweep, one process per measurement
    python bench/scale_sweep.py --sweeps train --sizes 1e3,1e4 --steps 5 --out bench/out/scale_sweep_tiny
    python bench/scale_sweep.py --summarise bench/results/scale_sweep.jsonl   # Markdown tables
    python bench/scale_sweep.py --plot bench/results/scale_sweep.jsonl        # the three PNGs

Three sweeps; every measurement runs in its own Python process (``--phase ...``, started by the
driver), so its peak RSS (``ru_maxrss``) is its own, and appends one JSON line to ``--results``:

1. ``train``: training step time and peak RSS of DeepFM (d = 40) as the LARGEST vocabulary grows
   (``--sizes``, default 10^4 .. 10^7 rows); the other fields stay fixed (10^4, 10^3, 100 and 10 ids,
   plus 4 numeric fields), so only the largest table changes. Two models: ``baseline`` (Keras
   ``Embedding`` tables) and ``mec`` (every categorical table a ``QuantizedEmbedding`` with RANDOM codes,
   M = 4, K = 256, the first-order tables M = 1, contrastive term on with stage 1's default beta 2e-3:
   the cost of a step does not depend on what the codes are), built directly with the quantised
   tables so that no float table is ever allocated. Two optimizers: Keras's ``Adam`` and tfmec's
   ``LazyAdam``. Input: ``--input-batches`` distinct batches of ``--batch`` rows (Zipf ids from
   ``SyntheticCTR.encoded_rows``) made once as in-memory tensors and cycled through
   ``model.train_on_batch`` (which returns NumPy values, so each timed call includes the whole step
   and no input pipeline); ``--warmup`` steps, then the median of ``--steps`` timed steps (Adam at
   10^7 rows is capped at ``--adam-cap-steps``: each of its steps rewrites the whole table and both
   moments).
2. ``stage1``: ``tfmec.mec.learn_codes`` on one ``rows x 40`` random table (normal rows, Zipf(1.2)
   training counts) for each of ``--stage1-sizes`` and K = 256 / K = 16 (M = 4), ``--stage1-epochs``
   epochs; time and peak RSS.
3. ``throughput``: rows/s at batch 1, 256 and 4096 of ``baseline``, ``mec``, ``afm`` and ``mec+afm``
   (largest vocabulary ``--throughput-largest``) as a Keras model (a ``tf.function`` of
   ``model(x, training=False)``, as ``tfmec.evaluation.throughput_side_by_side`` calls it), as a
   SavedModel (``tfmec.export.saved_model``, loaded with ``tf.saved_model.load``, its ``ids``
   signature) and in ONNX Runtime (``tfmec.export.onnx``: tf2onnx from the concrete function of the
   same ``ids`` function). The three runtimes of one model are called in turn within each of
   ``--rounds`` rounds (each round times a burst of calls), medians of the rounds.

The driver also writes a ``machine`` line first (nproc, ``free -g``, load average, versions, commit).

Diagnostic variants of the train sweep (defined here, not in tfmec; ``--models`` / ``--optimizers``):
``baseline_sparse_read`` (a Keras ``Embedding`` whose lookup is ``tf.gather`` on the backing
``tf.Variable``) and ``lazy_adam_sparse_read`` (LazyAdam's update with the moment rows gathered the same
way). They show where the baseline's LazyAdam step still grows with the table: TensorFlow keeps a
variable that had a sparse update in copy-on-read mode, so every dense read of it copies it whole.

    python bench/scale_sweep.py --sweeps train --sizes 1e4,1e7 --models baseline,baseline_sparse_read \
        --optimizers lazy_adam,lazy_adam_sparse_read --results bench/results/scale_sweep_sparse_read.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BLOCK = 8192  # SyntheticCTR's block size: encoded_rows hands out whole blocks
OTHER_FIELDS = (10_000, 1_000, 100, 10)  # the fixed fields beside the largest one
NUM_NUMERIC = 4
DIM = 40
MEC_M, MEC_K = 4, 256
CONTRASTIVE_BETA = 2e-3  # learn_codes' default beta, which stage 2 inherits
MODEL_NAMES = ("baseline", "mec", "afm", "mec+afm")
TRAIN_MODELS = ("baseline", "mec", "baseline_sparse_read")
TRAIN_OPTIMIZERS = ("lazy_adam", "adam", "lazy_adam_sparse_read")
OPTIMIZER_LABELS = {"lazy_adam": "LazyAdam", "adam": "Adam", "lazy_adam_sparse_read": "LazyAdam, sparse reads"}
RUNTIMES = ("keras", "saved_model", "onnx")
THROUGHPUT_BATCHES = (1, 256, 4096)


# ----------------------------------------------------------------------------------------------- helpers
def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (``ru_maxrss`` is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip()


def vocab_sizes(largest: int) -> list[int]:
    """Ids per categorical field: the largest first, then the fixed ones."""
    return [int(largest), *OTHER_FIELDS]


def schema_for(sizes):
    """The schema of the synthetic data: numeric I1..I4, categorical C1.. with ``size + 1`` rows (id 0 = OOV)."""
    from tfmec.data.schema import Field, Schema

    fields = [Field(f"I{j + 1}", kind="numeric") for j in range(NUM_NUMERIC)]
    fields += [Field(f"C{f + 1}", vocab_size=v + 1) for f, v in enumerate(sizes)]
    return Schema(fields)


def synthetic_rows(sizes, rows: int, seed: int = 0, start_block: int = 0):
    """``(features {name: array[rows]}, labels float32[rows])`` of Zipf-distributed encoded rows."""
    from tfmec.data.synthetic import SyntheticCTR

    gen = SyntheticCTR(rows=BLOCK, seed=seed, vocab_sizes=list(sizes), num_numeric=NUM_NUMERIC)
    blocks = -(-rows // BLOCK)
    ids, nums, labels = gen.encoded_rows(start_block, blocks)
    feats = {f"C{f + 1}": ids[:rows, f] for f in range(ids.shape[1])}
    feats.update({f"I{j + 1}": nums[:rows, j] for j in range(nums.shape[1])})
    return feats, labels[:rows]


def random_codes_factory(rng, num_codewords: int, bits: int | None, contrastive_weight: float, seed: int):
    """An embedding factory ``(field, dim, name) -> QuantizedEmbedding`` with random codes and codebooks
    (M = 4 for the d = 40 tables, M = 1 for the first-order d = 1 tables, as stage 1 quantises them)."""
    from tfmec.layers import QuantizedEmbedding

    def factory(field, dim, name):
        m = MEC_M if dim % MEC_M == 0 and dim > 1 else 1
        v = int(field.vocab_size)
        codes = rng.integers(0, num_codewords, size=(v, m), dtype=np.int64).astype(
            np.uint8 if num_codewords <= 256 else np.uint16)
        codebooks = rng.normal(0.0, 0.05, size=(m, num_codewords, dim // m)).astype(np.float32)
        return QuantizedEmbedding(v, m, num_codewords, dim // m, codes=codes, codebooks=codebooks, bits=bits,
                                  contrastive_weight=contrastive_weight if dim > 1 else 0.0, seed=seed, name=name)

    return factory


def sparse_read_factory(seed: int):
    """The diagnostic embedding factory of the sweep recorded in BENCHMARKS.md: tables whose lookup is a
    ``ResourceGather`` on the variable, where Keras 3's own ``Embedding`` reads the whole table first.
    That layer is ``tfmec.layers.SparseReadEmbedding`` and the zoo's default since commit 2120278, so
    the variant now builds the same tables as ``baseline``."""
    from tfmec.models.embedding import default_embedding_factory

    def factory(field, dim, name):
        return default_embedding_factory(field, dim, name, seed=seed)

    return factory


def sparse_read_lazy_adam(learning_rate: float):
    """The diagnostic optimizer of the sweep recorded in BENCHMARKS.md: LazyAdam with the moments' rows
    gathered through the moments' ``tf.Variable`` (``ResourceGather``) instead of a full read of each
    ``[V, d]`` moment. tfmec's ``LazyAdam`` has gathered that way since commit 50e24e0, so the variant is
    now ``LazyAdam`` itself (the recorded diagnostic ran an equivalent copy of the fixed update)."""
    from tfmec.optimizers import LazyAdam

    return LazyAdam(learning_rate=learning_rate)


def compile_for(model, optimizer: str, learning_rate: float):
    """``tfmec.training.compile_ctr`` for ``adam`` / ``lazy_adam``; the same loss and metric with the
    diagnostic :func:`sparse_read_lazy_adam` for ``lazy_adam_sparse_read``."""
    from tfmec.backend import keras
    from tfmec.training import compile_ctr

    if optimizer != "lazy_adam_sparse_read":
        return compile_ctr(model, learning_rate, optimizer=optimizer)
    model.compile(optimizer=sparse_read_lazy_adam(learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


def build(kind: str, schema, seed: int = 0, num_codewords: int = MEC_K, bits: int | None = None,
          contrastive_weight: float = CONTRASTIVE_BETA):
    """DeepFM (d = 40): ``kind`` ``baseline`` (Keras Embedding tables), ``mec`` (QuantizedEmbedding
    tables with random codes, wrapped as the ``MECModel`` stage 2 returns) or ``baseline_sparse_read``
    (diagnostic: the baseline with :func:`sparse_read_factory` tables)."""
    from tfmec.backend import keras
    from tfmec.models import build_model

    keras.utils.set_random_seed(seed)
    if kind == "baseline":
        return build_model("deepfm", schema, embedding_dim=DIM, seed=seed)
    if kind == "baseline_sparse_read":
        return build_model("deepfm", schema, embedding_dim=DIM, seed=seed, embedding_factory=sparse_read_factory(seed))
    if kind == "mec":
        from tfmec.mec.model import MECModel

        factory = random_codes_factory(np.random.default_rng(seed), num_codewords, bits, contrastive_weight, seed)
        plain = build_model("deepfm", schema, embedding_dim=DIM, seed=seed, embedding_factory=factory)
        return MECModel(inputs=plain.inputs, outputs=plain.outputs, name="mec_deepfm")
    raise ValueError(f"unknown model kind {kind!r}; expected 'baseline', 'mec' or 'baseline_sparse_read'")


def trainable_bytes(model) -> int:
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.trainable_weights))


# ------------------------------------------------------------------------------------------- phase: train
def phase_train(args) -> dict:
    """Median training step time of one (model, optimizer, largest) configuration, and peak RSS."""
    import tensorflow as tf

    from tfmec.evaluation import embedding_bytes

    sizes = vocab_sizes(args.largest)
    schema = schema_for(sizes)
    feats, labels = synthetic_rows(sizes, args.batch * args.input_batches, seed=args.seed)
    batches = []
    for b in range(args.input_batches):
        sl = slice(b * args.batch, (b + 1) * args.batch)
        batches.append(({k: tf.constant(v[sl]) for k, v in feats.items()}, tf.constant(labels[sl].reshape(-1, 1))))
    rss_data = peak_rss_gb()
    t0 = time.perf_counter()
    model = build(args.model, schema, seed=args.seed)
    build_s = time.perf_counter() - t0
    compile_for(model, args.optimizer, args.learning_rate)
    rss_built = peak_rss_gb()
    steps = args.steps
    capped = args.optimizer == "adam" and args.largest >= args.adam_cap_from and args.adam_cap_steps < steps
    if capped:
        steps = args.adam_cap_steps
    warmup = max(1, args.warmup)
    t_first = time.perf_counter()
    model.train_on_batch(*batches[0])  # traces the train function
    first_s = time.perf_counter() - t_first
    for i in range(1, warmup):
        model.train_on_batch(*batches[i % len(batches)])
    times = []
    for i in range(steps):
        x, y = batches[(warmup + i) % len(batches)]
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return {"phase": "train", "pass": args.pass_index, "model": args.model, "optimizer": args.optimizer,
            "largest": args.largest,
            "vocab_sizes": sizes, "dim": DIM, "batch": args.batch, "input_batches": args.input_batches,
            "warmup_steps": warmup, "timed_steps": steps, "steps_capped": capped,
            "median_step_s": median, "min_step_s": float(np.min(times)), "max_step_s": float(np.max(times)),
            "step_seconds": [round(t, 5) for t in times], "rows_per_s": args.batch / median,
            "first_step_s": first_s, "build_s": build_s,
            "embedding_bytes": int(embedding_bytes(model)), "trainable_bytes": trainable_bytes(model),
            "peak_rss_gb": peak_rss_gb(), "rss_after_data_gb": rss_data, "rss_after_build_gb": rss_built,
            "mec_codes": f"random M={MEC_M} K={MEC_K} (linear tables M=1), beta={CONTRASTIVE_BETA}"
            if args.model == "mec" else None}


# ------------------------------------------------------------------------------------------ phase: stage1
def zipf_counts(rows: int, total: float = 1e8, exponent: float = 1.2) -> np.ndarray:
    """Expected training counts of ``total`` Zipf(``exponent``) draws over ``rows`` ids (rank = id)."""
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -exponent
    return np.round(total * weights / weights.sum()).astype(np.int64)


def phase_stage1(args) -> dict:
    """``learn_codes`` on one random ``rows x 40`` table with Zipf counts: time and peak RSS."""
    from tfmec.mec import learn_codes

    rng = np.random.default_rng(args.seed)
    table = rng.standard_normal((args.rows, DIM), dtype=np.float32)
    table *= 0.05
    counts = zipf_counts(args.rows)
    rss_table = peak_rss_gb()
    t0 = time.perf_counter()
    codes = learn_codes({"C1": table}, {"C1": counts}, num_subspaces=MEC_M, num_codewords=args.codewords,
                        epochs=args.stage1_epochs, batch_size=args.stage1_batch, seed=args.seed, progress=False)
    seconds = time.perf_counter() - t0
    fc = codes["C1"]
    return {"phase": "stage1", "rows": args.rows, "dim": DIM, "num_subspaces": MEC_M, "num_codewords": args.codewords,
            "epochs": args.stage1_epochs, "epochs_run": fc.stats.get("epochs"), "batch_size": args.stage1_batch,
            "stage1_seconds": seconds, "seconds_per_epoch": seconds / max(1, args.stage1_epochs),
            "table_bytes": int(table.nbytes), "peak_rss_gb": peak_rss_gb(), "rss_after_table_gb": rss_table,
            "codes_dtype": str(fc.codes.dtype)}


# -------------------------------------------------------------------------------------- phase: throughput
def _afm(model, calibration, energy):
    from tfmec import afm

    compressed, report = afm.compress(model, calibration, energy=energy)
    return compressed, report.ranks


def _burst_rate(call, batch: int, calls: int) -> float:
    """Rows per second of ``calls`` back-to-back calls."""
    t = time.perf_counter()
    for _ in range(calls):
        call()
    return batch * calls / (time.perf_counter() - t)


def phase_throughput(args) -> dict:
    """Builds the four models at ``--throughput-largest``, exports each to a SavedModel and to ONNX, and
    measures rows/s of the three runtimes side by side (alternating within each round); one JSON line
    per model (returned as a list)."""
    import shutil

    import tensorflow as tf

    from tfmec import export
    from tfmec.evaluation import embedding_bytes, model_bytes
    from tfmec.export.parity import max_abs_diff
    from tfmec.training import compile_ctr

    sizes = vocab_sizes(args.throughput_largest)
    schema = schema_for(sizes)
    train_rows = args.throughput_train_rows
    feats, labels = synthetic_rows(sizes, train_rows + 4096, seed=args.seed)
    train = tf.data.Dataset.from_tensor_slices(({k: v[:train_rows] for k, v in feats.items()},
                                                labels[:train_rows].reshape(-1, 1))).batch(4096)
    test = {k: v[train_rows:] for k, v in feats.items()}

    t0 = time.perf_counter()
    base = build("baseline", schema, seed=args.seed)
    compile_ctr(base, args.learning_rate, optimizer="lazy_adam")
    base.fit(train, epochs=1, verbose=0)
    train_s = time.perf_counter() - t0
    mec = build("mec", schema, seed=args.seed, num_codewords=16, bits=4)
    # the MEC model shares the trained baseline's MLP and numeric weights (its tables are random codes)
    # (same architecture, so the layers line up by position; auto-generated names may differ)
    copied = 0
    for mine, theirs in zip(mec.layers, base.layers):
        if not mine.weights or getattr(mine, "num_subspaces", None) is not None:
            continue
        src = theirs.get_weights()
        if [w.shape for w in src] == [tuple(w.shape) for w in mine.weights]:
            mine.set_weights(src)
            copied += 1
    calibration = train.take(args.afm_calibration_batches)
    afm_model, afm_ranks = _afm(base, calibration, args.afm_energy)
    mec_afm, mec_afm_ranks = _afm(mec, calibration, args.afm_energy)
    models = {"baseline": base, "mec": mec, "afm": afm_model, "mec+afm": mec_afm}
    ranks = {"afm": afm_ranks, "mec+afm": mec_afm_ranks}

    out_dir = os.path.join(args.out, "throughput")
    shutil.rmtree(out_dir, ignore_errors=True)
    commit = git_commit()
    rows = []
    for name, model in models.items():
        safe = name.replace("+", "_")
        sm_path = export.saved_model(model, os.path.join(out_dir, safe, "saved_model"))
        onnx_path = export.onnx(model, os.path.join(out_dir, safe, "model.onnx"))
        signature = tf.saved_model.load(sm_path).signatures["ids"]
        specs = signature.structured_input_signature[1]
        session = export.onnx_session(onnx_path)
        onnx_types = {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64 if i.type == "tensor(int64)"
                               else np.float32) for i in session.get_inputs()}
        keras_fn = tf.function(lambda inputs, m=model: m(inputs, training=False))
        # parity on 4096 rows: the three runtimes compute the same function
        x_tf = {k: tf.constant(test[k], dtype=specs[k].dtype) for k in specs}
        p_keras = np.asarray(keras_fn(x_tf)).reshape(-1)
        p_sm = signature(**x_tf)["probability"].numpy().reshape(-1)
        p_onnx = session.run(None, {k: test[k].astype(t) for k, t in onnx_types.items()})[0].reshape(-1)
        row = {"phase": "throughput", "model": name, "largest": args.throughput_largest, "vocab_sizes": sizes,
               "rounds": args.rounds, "commit": commit, "trained": "baseline 1 epoch LazyAdam on "
               f"{train_rows:,} rows; mec = random codes (M=4, K=16, 4-bit packed) + the baseline's MLP; "
               f"afm = energy {args.afm_energy} on {args.afm_calibration_batches} batches, no fine-tuning",
               "afm_ranks": ranks.get(name), "embedding_bytes": int(embedding_bytes(model)),
               "model_bytes": int(model_bytes(model)),
               "saved_model_bytes": int(export.directory_bytes(sm_path)), "onnx_bytes": os.path.getsize(onnx_path),
               "max_abs_diff_saved_model": float(max_abs_diff(p_sm, p_keras)),
               "max_abs_diff_onnx": float(max_abs_diff(p_onnx, p_keras))}
        for batch in THROUGHPUT_BATCHES:
            x_tf = {k: tf.constant(test[k][:batch], dtype=specs[k].dtype) for k in specs}
            feeds = {k: np.ascontiguousarray(test[k][:batch], dtype=t) for k, t in onnx_types.items()}
            calls = {"keras": lambda x=x_tf: np.asarray(keras_fn(x)),
                     "saved_model": lambda x=x_tf: signature(**x)["probability"].numpy(),
                     "onnx": lambda f=feeds: session.run(None, f)}
            burst = min(args.max_calls, max(1, args.burst_rows // batch))
            for call in calls.values():  # warm-up (traces the Keras function at this shape)
                for _ in range(min(burst, 3)):
                    call()
            rates = {r: [] for r in RUNTIMES}
            for _ in range(args.rounds):
                for runtime in RUNTIMES:
                    rates[runtime].append(_burst_rate(calls[runtime], batch, burst))
            row[f"batch{batch}"] = {f"{r}_rows_per_s": float(np.median(v)) for r, v in rates.items()}
            row[f"batch{batch}"]["calls_per_round"] = burst
            row[f"batch{batch}"]["spread"] = {r: [float(np.min(v)), float(np.max(v))] for r, v in rates.items()}
        row["baseline_train_seconds"] = train_s
        row["mec_layers_copied_from_baseline"] = copied
        row["peak_rss_gb"] = peak_rss_gb()
        rows.append(row)
        print(f"   {name}: " + ", ".join(f"b{b} " + "/".join(f"{row[f'batch{b}'][f'{r}_rows_per_s']:,.0f}"
                                                            for r in RUNTIMES) for b in THROUGHPUT_BATCHES),
              flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return rows


PHASES = {"train": phase_train, "stage1": phase_stage1, "throughput": phase_throughput}


# ------------------------------------------------------------------------------------------------ driver
def machine_row() -> dict:
    """Machine facts at the start of the sweep."""
    import importlib.metadata as md

    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout
    versions = {}
    for pkg in ("tensorflow", "keras", "numpy", "onnxruntime", "tf2onnx"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfmec"], capture_output=True, text=True,
                           cwd=ROOT).stdout.splitlines()
    return {"phase": "machine", "nproc": os.cpu_count(), "free_g": free, "loadavg": os.getloadavg(),
            "python": platform.python_version(), "versions": versions, "commit": git_commit(),
            "tfmec_uncommitted": dirty, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def append(path: str, row: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=float) + "\n")


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise SystemExit(f"sizes must be comma-separated numbers like 1e4,1e5: {text!r}") from err


def driver(args) -> None:
    """Runs the selected sweeps, one subprocess per measurement, each appending to ``--results``."""
    sweeps = [s for s in args.sweeps.split(",") if s]
    unknown = set(sweeps) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown sweep(s) {sorted(unknown)}; choose from {sorted(PHASES)}")
    append(args.results, machine_row())
    common = [f"--results={args.results}", f"--out={args.out}", f"--seed={args.seed}", f"--batch={args.batch}",
              f"--learning-rate={args.learning_rate}"]
    runs = []
    if "train" in sweeps:
        order = [(i, size) for i in range(1, args.passes + 1)
                 for size in sorted(parse_sizes(args.sizes), reverse=(i % 2 == 0))]
        for pass_index, size in order:
            for model in args.models.split(","):
                for optimizer in args.optimizers.split(","):
                    runs.append(["--phase=train", f"--pass-index={pass_index}", f"--largest={size}",
                                 f"--model={model}", f"--optimizer={optimizer}",
                                 f"--steps={args.steps}", f"--warmup={args.warmup}",
                                 f"--input-batches={args.input_batches}", f"--adam-cap-steps={args.adam_cap_steps}",
                                 f"--adam-cap-from={args.adam_cap_from}"])
    if "stage1" in sweeps:
        for size in parse_sizes(args.stage1_sizes):
            for k in (256, 16):
                runs.append(["--phase=stage1", f"--rows={size}", f"--codewords={k}",
                             f"--stage1-epochs={args.stage1_epochs}", f"--stage1-batch={args.stage1_batch}"])
    if "throughput" in sweeps:
        runs.append(["--phase=throughput", f"--throughput-largest={args.throughput_largest}",
                     f"--throughput-train-rows={args.throughput_train_rows}", f"--rounds={args.rounds}",
                     f"--burst-rows={args.burst_rows}", f"--max-calls={args.max_calls}",
                     f"--afm-energy={args.afm_energy}",
                     f"--afm-calibration-batches={args.afm_calibration_batches}"])
    me = [sys.executable, os.path.abspath(__file__)]
    failed = []
    for extra in runs:
        print(">>", " ".join(extra), f"(load {os.getloadavg()[0]:.2f})", flush=True)
        done = subprocess.run(me + common + extra)
        if done.returncode != 0:
            failed.append(" ".join(extra))
            append(args.results, {"phase": "failed", "args": extra, "returncode": done.returncode})
    if failed:
        raise SystemExit("failed runs:\n  " + "\n  ".join(failed))


# ----------------------------------------------------------------------------------------- tables, plots
def load_rows(paths: str) -> list[dict]:
    """The rows of one results file, or of several (comma-separated): a later file adds only the train
    configurations ``(model, optimizer)`` that no earlier file has (e.g. the diagnostic run beside the
    main sweep), and any stage-1 / throughput rows."""
    rows: list[dict] = []
    for path in paths.split(","):
        with open(path) as fh:
            new = [json.loads(line) for line in fh if line.strip()]
        seen = {(r["model"], r["optimizer"]) for r in rows if r["phase"] == "train"}
        rows += [r for r in new if r["phase"] != "train" or (r["model"], r["optimizer"]) not in seen]
    return rows


def _fmt_rows(n: int) -> str:
    exp = int(round(np.log10(n)))
    return f"10^{exp}" if 10**exp == n else f"{n:,}"


def train_cells(rows: list[dict]) -> dict:
    """``{(model, optimizer, largest): cell}`` of the train rows, the passes pooled: ``median_step_s``
    (median of every timed step of every pass), ``pass_medians`` ``{pass: median}``, ``peak_rss_gb``
    (the largest of the passes), ``timed_steps`` (total), ``warmup_steps``, ``steps_capped``, ``batch``."""
    groups: dict = {}
    for r in rows:
        if r["phase"] == "train":
            groups.setdefault((r["model"], r["optimizer"], r["largest"]), []).append(r)
    cells = {}
    for key, rs in groups.items():
        steps = [t for r in rs for t in r["step_seconds"]]
        cells[key] = {"median_step_s": float(np.median(steps)),
                      "pass_medians": {r.get("pass", 1): r["median_step_s"] for r in rs},
                      "peak_rss_gb": max(r["peak_rss_gb"] for r in rs), "timed_steps": len(steps),
                      "warmup_steps": rs[0]["warmup_steps"], "steps_capped": any(r["steps_capped"] for r in rs),
                      "batch": rs[0]["batch"], "trainable_bytes": rs[0]["trainable_bytes"]}
    return cells


def summarise(rows: list[dict]) -> str:
    """Markdown tables of a results file (training: the passes pooled; stage 1 and throughput: the last
    line of each configuration)."""
    out = []
    train = train_cells(rows)
    if train:
        sizes = sorted({k[2] for k in train})
        first, last = _fmt_rows(sizes[0]), _fmt_rows(sizes[-1])
        out += ["Training step time (median of the timed steps of all passes, ms; batch "
                f"{next(iter(train.values()))['batch']}) and peak RSS (GB) of the process:", "",
                "| model | optimizer | " + " | ".join(f"{_fmt_rows(s)} ms" for s in sizes) + " | "
                + " | ".join(f"{_fmt_rows(s)} RSS" for s in sizes) + f" | {last} / {first} | same, per pass |",
                "|---|---|" + "---|" * (2 * len(sizes) + 2)]
        for model in TRAIN_MODELS:
            for opt in TRAIN_OPTIMIZERS:
                cells = [train.get((model, opt, s)) for s in sizes]
                if not any(cells):
                    continue
                ms = [f"{c['median_step_s'] * 1e3:,.0f}" + ("*" if c["steps_capped"] else "") if c else "-"
                      for c in cells]
                rss = [f"{c['peak_rss_gb']:.2f}" if c else "-" for c in cells]
                ratio, per_pass = "-", "-"
                if cells[0] and cells[-1]:
                    ratio = f"{cells[-1]['median_step_s'] / cells[0]['median_step_s']:.2f}x"
                    passes = sorted(set(cells[0]["pass_medians"]) & set(cells[-1]["pass_medians"]))
                    per_pass = ", ".join(f"{cells[-1]['pass_medians'][i] / cells[0]['pass_medians'][i]:.2f}x"
                                         for i in passes)
                name = OPTIMIZER_LABELS[opt]
                out.append(f"| {model} | {name} | " + " | ".join(ms) + " | " + " | ".join(rss)
                           + f" | {ratio} | {per_pass} |")
        counts = sorted({(c["warmup_steps"], c["timed_steps"], c["steps_capped"]) for c in train.values()})
        out += ["", "Warm-up steps per process / timed steps per configuration (all passes): "
                + ", ".join(f"{w}/{n}" + (" (Adam, capped, *)" if cap else "") for w, n, cap in counts) + "."]
    stage1 = {(r["rows"], r["num_codewords"]): r for r in rows if r["phase"] == "stage1"}
    if stage1:
        out += ["", "| rows x 40 | K | epochs | stage-1 seconds | seconds per 10^6 rows | peak RSS GB | "
                    "RSS with the table loaded GB |", "|---|---|---|---|---|---|---|"]
        for (n, k), r in sorted(stage1.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
            out.append(f"| {_fmt_rows(n)} | {k} | {r['epochs']} | {r['stage1_seconds']:,.1f} | "
                       f"{r['stage1_seconds'] / (n / 1e6) / max(1, r['epochs']):,.1f} | {r['peak_rss_gb']:.2f} | "
                       f"{r['rss_after_table_gb']:.2f} |")
    tp = {r["model"]: r for r in rows if r["phase"] == "throughput"}
    if tp:
        out += ["", "| model | batch | Keras rows/s | SavedModel `ids` rows/s | ONNX Runtime rows/s | "
                    "SavedModel / Keras | ONNX / Keras | calls per round |", "|---|---|---|---|---|---|---|---|"]
        measured = [(name, tp[name]) for name in MODEL_NAMES if name in tp]
        for name, r in measured:
            for b in THROUGHPUT_BATCHES:
                t = r[f"batch{b}"]
                k, s, o = (t[f"{x}_rows_per_s"] for x in RUNTIMES)
                out.append(f"| {name} | {b} | {k:,.0f} | {s:,.0f} | {o:,.0f} | {s / k:.2f} | {o / k:.2f} | "
                           f"{t['calls_per_round']} |")
        out += ["", "| model | embedding bytes | model bytes | SavedModel bytes | ONNX bytes | max abs diff SavedModel "
                    "/ ONNX vs Keras | AFM ranks |", "|---|---|---|---|---|---|---|"]
        for name, r in measured:
            out.append(f"| {name} | {r['embedding_bytes']:,} | {r['model_bytes']:,} | {r['saved_model_bytes']:,} | "
                       f"{r['onnx_bytes']:,} | {r['max_abs_diff_saved_model']:.1e} / {r['max_abs_diff_onnx']:.1e} | "
                       f"{r['afm_ranks'] or '-'} |")
    return "\n".join(out)


def _save_pair(plt, fig, axes, path: str) -> str:
    """Grid and legend on each of ``axes``, then ``fig`` saved to ``path`` (PNG) and closed."""
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(rows: list[dict], out_dir: str) -> list[str]:
    """``scale_step_time.png``, ``scale_stage1.png`` and ``scale_throughput.png`` in ``out_dir`` (those
    whose sweep has rows); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = train_cells(rows)
    if train:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        styles = {("baseline", "adam"): ("tab:red", "-", "o"), ("baseline", "lazy_adam"): ("tab:blue", "-", "o"),
                  ("mec", "adam"): ("tab:orange", "--", "s"), ("mec", "lazy_adam"): ("tab:green", "--", "s"),
                  ("baseline_sparse_read", "lazy_adam"): ("tab:gray", ":", "^"),
                  ("baseline", "lazy_adam_sparse_read"): ("tab:brown", ":", "v"),
                  ("baseline_sparse_read", "lazy_adam_sparse_read"): ("black", ":", "D")}
        for (model, opt), (color, ls, marker) in styles.items():
            pts = sorted((k[2], r) for k, r in train.items() if k[:2] == (model, opt))
            if not pts:
                continue
            label = f"{model}, {OPTIMIZER_LABELS[opt]}" + (" (diagnostic)" if "sparse_read" in model + opt else "")
            xs = [p[0] for p in pts]
            ax1.plot(xs, [p[1]["median_step_s"] * 1e3 for p in pts], color=color, ls=ls, marker=marker, label=label)
            ax2.plot(xs, [p[1]["peak_rss_gb"] for p in pts], color=color, ls=ls, marker=marker, label=label)
        batch = next(iter(train.values()))["batch"]
        ax1.set(xscale="log", yscale="log", xlabel="rows of the largest table (d = 40)",
                ylabel="median training step time, ms", title=f"DeepFM training step time, batch {batch}")
        ax2.set(xscale="log", yscale="log", xlabel="rows of the largest table (d = 40)", ylabel="peak RSS, GB",
                title="Peak RSS of the training process")
        written.append(_save_pair(plt, fig, (ax1, ax2), os.path.join(out_dir, "scale_step_time.png")))
    stage1 = [r for r in rows if r["phase"] == "stage1"]
    if stage1:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for k, color in ((256, "tab:purple"), (16, "tab:cyan")):
            pts = sorted({r["rows"]: r for r in stage1 if r["num_codewords"] == k}.items())
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ax1.plot(xs, [p[1]["stage1_seconds"] for p in pts], marker="o", color=color, label=f"M=4, K={k}")
            ax2.plot(xs, [p[1]["peak_rss_gb"] for p in pts], marker="o", color=color, label=f"M=4, K={k}")
        epochs = stage1[-1]["epochs"]
        ax1.set(xscale="log", yscale="log", xlabel="table rows (d = 40)", ylabel="seconds",
                title=f"MEC stage 1 (learn_codes, {epochs} epoch{'s' if epochs > 1 else ''}) time")
        ax2.set(xscale="log", yscale="log", xlabel="table rows (d = 40)", ylabel="peak RSS, GB",
                title="Peak RSS of the stage-1 process")
        written.append(_save_pair(plt, fig, (ax1, ax2), os.path.join(out_dir, "scale_stage1.png")))
    tp = {r["model"]: r for r in rows if r["phase"] == "throughput"}
    if tp:
        names = [n for n in MODEL_NAMES if n in tp]
        fig, axes = plt.subplots(1, len(THROUGHPUT_BATCHES), figsize=(13, 4.2))
        width = 0.8 / len(RUNTIMES)
        colors = {"keras": "tab:blue", "saved_model": "tab:orange", "onnx": "tab:green"}
        labels = {"keras": "Keras (tf.function)", "saved_model": "SavedModel ids", "onnx": "ONNX Runtime"}
        for ax, b in zip(axes, THROUGHPUT_BATCHES):
            for i, runtime in enumerate(RUNTIMES):
                vals = [tp[n][f"batch{b}"][f"{runtime}_rows_per_s"] for n in names]
                ax.bar(np.arange(len(names)) + (i - 1) * width, vals, width, color=colors[runtime],
                       label=labels[runtime])
            ax.set_xticks(np.arange(len(names)), names)
            ax.set(yscale="log", ylabel="rows / s (median)", title=f"Prediction throughput, batch {b}")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        largest = next(iter(tp.values()))["largest"]
        fig.suptitle(f"DeepFM d=40, largest vocabulary {_fmt_rows(largest)}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, "scale_throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------- cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=sorted(PHASES), default=None, help="run one measurement (what the driver runs)")
    p.add_argument("--sweeps", default="train,stage1,throughput", help="driver: which sweeps, comma-separated")
    p.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="train sweep: rows of the largest table")
    p.add_argument("--largest", type=int, default=10_000, help="train phase: rows of the largest table")
    p.add_argument("--model", choices=TRAIN_MODELS, default="baseline")
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="lazy_adam")
    p.add_argument("--models", default="baseline,mec", help="train sweep: models (also: baseline_sparse_read)")
    p.add_argument("--optimizers", default="lazy_adam,adam",
                   help="train sweep: optimizers (also: lazy_adam_sparse_read, diagnostic)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--input-batches", type=int, default=8, help="distinct in-memory batches cycled through")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--adam-cap-steps", type=int, default=10, help="timed steps of Adam at --adam-cap-from rows and up")
    p.add_argument("--adam-cap-from", type=int, default=10**7)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--stage1-sizes", default="1e5,1e6,1e7")
    p.add_argument("--rows", type=int, default=100_000, help="stage1 phase: table rows")
    p.add_argument("--codewords", type=int, default=256, help="stage1 phase: K")
    p.add_argument("--stage1-epochs", type=int, default=1)
    p.add_argument("--stage1-batch", type=int, default=16384)
    p.add_argument("--throughput-largest", type=int, default=10**5)
    p.add_argument("--throughput-train-rows", type=int, default=32 * BLOCK)
    p.add_argument("--rounds", type=int, default=7, help="throughput: alternated rounds")
    p.add_argument("--burst-rows", type=int, default=16384,
                   help="throughput: rows per timed burst (calls per round = burst_rows // batch, 1 to --max-calls)")
    p.add_argument("--max-calls", type=int, default=100, help="throughput: most calls per timed burst")
    p.add_argument("--passes", type=int, default=2,
                   help="train sweep: passes over the sizes (the second in descending order, so that a drift in "
                        "the machine's load does not favour one end of the sweep); the table pools their steps")
    p.add_argument("--pass-index", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--afm-energy", type=float, default=0.9)
    p.add_argument("--afm-calibration-batches", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("bench", "out", "scale_sweep"), help="temporary models")
    p.add_argument("--results", default=os.path.join("bench", "out", "scale_sweep.jsonl"))
    p.add_argument("--summarise", metavar="JSONL[,JSONL]", help="print the Markdown tables of results file(s) and exit")
    p.add_argument("--plot", metavar="JSONL[,JSONL]",
                   help="write the PNGs of results file(s) (into --plot-dir) and exit")
    p.add_argument("--plot-dir", default=os.path.join("bench", "results"))
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(load_rows(args.summarise)))
        return
    if args.plot:
        for path in plot(load_rows(args.plot), args.plot_dir):
            print(path)
        return
    if args.phase is None:
        driver(args)
        return
    load = os.getloadavg()
    t0 = time.perf_counter()
    result = PHASES[args.phase](args)
    for row in result if isinstance(result, list) else [result]:
        row.update(wall_seconds=time.perf_counter() - t0, loadavg_start=load, loadavg_end=os.getloadavg(),
                   seed=args.seed)
        append(args.results, row)
        brief = {k: v for k, v in row.items() if k not in ("step_seconds", "vocab_sizes")}
        print(json.dumps(brief, default=float), flush=True)


if __name__ == "__main__":
    main()
