"""Users' own Keras models on real data, uncompressed vs MEC vs MEC+AFM (issue 17 acceptance).

    python bench/user_models.py --data movielens-1m-part --seeds 0,1,2,3,4
    python bench/user_models.py --data movielens-1m-part --seeds 0 --quick   # smoke run (minutes)

Two models written the way a user writes them, with plain Keras 3 (no tfmec inside):

- ``tutorial``: raw string ids in (``user_id``, ``movie_id``), ``StringLookup`` -> ``Embedding(16)``
  inside the model (functional), concatenation, MLP 256-128, sigmoid.
- ``history``: the candidate movie and the user's padded history of earlier movies (most recent
  first, 20 at most, padding id 0) read through ONE shared item table ``Embedding(3953, 16,
  mask_zero=True)``, masked mean pooling (``GlobalAveragePooling1D``), the user id through its own
  table, MLP 256-128, sigmoid.

Data (movielens-1m-part, ``UserID::MovieID::Rating::Timestamp``): label = rating >= 4. Each user's
ratings are sorted by (timestamp, movie id); the first 80% of them (floor) are train, the next 10%
valid, the rest test (per-user chronological split; every user appears in all three). A rating's
history is the user's movies rated at a strictly earlier timestamp. Rows with an empty history (the
user's first timestamp) are dropped from every split, for both models, so both see the same rows.
The split does not depend on the seed; the seed sets initialisation, shuffling and stage 1.

Per seed and model: train (Adam 1e-3, batch 1024, at most ``--epochs`` epochs, early stopping on
validation AUC with patience 1, best weights restored: ``tfmec.training.fit_early_stopping``), then
MEC (``count_ids`` on train through the model itself -> ``learn_codes`` -> ``compress_embeddings``
-> stage 2 fine-tuning at ``--stage2-lr``, early stopping on validation AUC keeping the un-tuned
weights when no epoch helps), then AFM on the MEC model (``afm.compress``, energy rule, 1-epoch
fine-tune). Test AUC is exact (``sklearn.metrics.roc_auc_score``). One JSON line per (seed, model,
method) goes to ``--out``; the Markdown summary (mean AUC, mean paired difference, Wilcoxon p) is
printed at the end and can be rebuilt with ``--summarise FILE``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from real_data import path as data_path  # noqa: E402

HISTORY = 20
DIM = 16
HIDDEN = (256, 128)
METHODS = ("none", "mec", "mec+afm")
MODELS = ("tutorial", "history")


# ------------------------------------------------------------------------------------------------ data
def load_movielens(max_users: int | None = None) -> dict:
    """Rows of movielens-1m-part with their history, split per user chronologically 80/10/10.

    Returns ``{"user", "movie", "label", "history", "split", "info"}`` (numpy arrays; ``split`` is
    0/1/2 for train/valid/test). Raises FileNotFoundError when the data is missing."""
    src = data_path("movielens-1m-part", "ratings.dat.gz")  # raises FileNotFoundError, naming the path
    with gzip.open(src, "rt") as fh:
        raw = np.array([line.rstrip("\n").split("::") for line in fh if line.strip()], dtype=np.int64)
    if raw.ndim != 2 or raw.shape[1] != 4 or len(raw) == 0:
        raise RuntimeError(f"{src}: expected UserID::MovieID::Rating::Timestamp lines, got shape {raw.shape}")
    if max_users is not None:
        raw = raw[raw[:, 0] <= max_users]
    user, movie, rating, ts = raw.T
    order = np.lexsort((movie, ts, user))  # by user, then timestamp, then movie id
    user, movie, rating, ts = user[order], movie[order], rating[order], ts[order]
    n = len(user)
    idx = np.arange(n)
    new_user = np.r_[True, user[1:] != user[:-1]]
    ustart = np.maximum.accumulate(np.where(new_user, idx, 0))
    counts = np.bincount(user)[user]
    pos = idx - ustart
    split = np.where(pos < np.floor(0.8 * counts), 0, np.where(pos < np.floor(0.9 * counts), 1, 2))
    # history: movies rated strictly before this timestamp = rows [ustart, tie group start)
    new_tie = new_user | np.r_[True, ts[1:] != ts[:-1]]
    tstart = np.maximum.accumulate(np.where(new_tie, idx, 0))
    back = tstart[:, None] - 1 - np.arange(HISTORY)[None, :]
    history = np.where(back >= ustart[:, None], movie[np.clip(back, 0, None)], 0).astype(np.int32)
    keep = tstart > ustart  # at least one earlier movie
    info = {"ratings": int(n), "users": int(len(np.unique(user))), "movies": int(len(np.unique(movie))),
            "dropped_empty_history": {s: int(((~keep) & (split == i)).sum())
                                      for i, s in enumerate(("train", "valid", "test"))}}
    out = {"user": user[keep].astype(np.int32), "movie": movie[keep].astype(np.int32),
           "label": (rating[keep] >= 4).astype(np.float32), "history": history[keep], "split": split[keep]}
    info["rows"] = {s: int((out["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))}
    info["positive_rate"] = {s: float(out["label"][out["split"] == i].mean())
                             for i, s in enumerate(("train", "valid", "test"))}
    info["mean_history_length"] = float((out["history"] > 0).sum(1).mean())
    out["info"] = info
    return out


def subsample(data: dict, share: float, seed: int = 1234) -> dict:
    """Keeps a random ``share`` of the train rows (valid and test whole)."""
    if share >= 1:
        return data
    rng = np.random.default_rng(seed)
    keep = (data["split"] != 0) | (rng.random(len(data["split"])) < share)
    out = {k: v[keep] for k, v in data.items() if k != "info"}
    out["info"] = dict(data["info"], train_subsample=share,
                       rows={s: int((out["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))})
    return out


def features_for(kind: str, data: dict, mask) -> dict:
    if kind == "tutorial":  # raw strings, as read from a CSV
        return {"user_id": data["user"][mask].astype(str).astype(object),
                "movie_id": data["movie"][mask].astype(str).astype(object)}
    return {"user_id": data["user"][mask], "candidate": data["movie"][mask], "history": data["history"][mask]}


def make_datasets(tf, kind: str, data: dict, batch: int, seed: int) -> dict:
    """``train`` (reshuffled each epoch), ``train_eval`` (fixed order), ``valid``, ``test`` datasets of
    ``(features, label)`` batches, and ``test_labels``."""
    out = {}
    for i, name in enumerate(("train", "valid", "test")):
        mask = data["split"] == i
        feats = {k: tf.constant(v) for k, v in features_for(kind, data, mask).items()}
        labels = tf.constant(data["label"][mask])
        n = int(mask.sum())

        def gather(ix, feats=feats, labels=labels):
            return {k: tf.gather(v, ix) for k, v in feats.items()}, tf.gather(labels, ix)

        fixed = tf.data.Dataset.range(n).batch(4096).map(gather).prefetch(2)
        if name == "train":
            out["train"] = (tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
                            .batch(batch).map(gather).prefetch(2))
            out["train_eval"] = fixed
        else:
            out[name] = fixed
        if name == "test":
            out["test_labels"] = data["label"][mask]
    return out


# ---------------------------------------------------------------------------------------------- models
def _head(keras, x):
    for i, units in enumerate(HIDDEN):
        x = keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")(x)
    return keras.layers.Dense(1, activation="sigmoid", name="ctr")(x)


def build_tutorial(keras, train_users, train_movies):
    """The Keras/TFRS tutorial pattern: string ids, ``StringLookup`` -> ``Embedding`` inside."""
    user = keras.Input(shape=(), dtype="string", name="user_id")
    movie = keras.Input(shape=(), dtype="string", name="movie_id")
    user_lookup = keras.layers.StringLookup(vocabulary=sorted(set(train_users)), name="user_lookup")
    movie_lookup = keras.layers.StringLookup(vocabulary=sorted(set(train_movies)), name="movie_lookup")
    x = keras.layers.Concatenate()([
        keras.layers.Embedding(user_lookup.vocabulary_size(), DIM, name="user_embedding")(user_lookup(user)),
        keras.layers.Embedding(movie_lookup.vocabulary_size(), DIM, name="movie_embedding")(movie_lookup(movie)),
    ])
    return keras.Model({"user_id": user, "movie_id": movie}, _head(keras, x), name="tutorial")


def build_history(keras, num_users, num_movies):
    """Candidate + padded history through one shared ``mask_zero`` item table, masked mean pooling."""
    user = keras.Input(shape=(), dtype="int32", name="user_id")
    cand = keras.Input(shape=(), dtype="int32", name="candidate")
    hist = keras.Input(shape=(HISTORY,), dtype="int32", name="history")
    items = keras.layers.Embedding(num_movies, DIM, mask_zero=True, name="item_embedding")
    pooled = keras.layers.GlobalAveragePooling1D(name="history_mean")(items(hist))
    x = keras.layers.Concatenate()([keras.layers.Embedding(num_users, DIM, name="user_embedding")(user),
                                    items(cand), pooled])
    return keras.Model({"user_id": user, "candidate": cand, "history": hist}, _head(keras, x), name="history")


# ------------------------------------------------------------------------------------------- one seed
def compile_model(keras, model, lr):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(num_thresholds=2000, name="auc")])


def test_auc(model, ds) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(ds["test_labels"], model.predict(ds["test"], verbose=0).reshape(-1)))


def model_bytes_total(model) -> int:
    from tfmec.evaluation import model_bytes

    return int(model_bytes(model))


def run_seed(kind: str, seed: int, data: dict, args, emit) -> None:
    import tensorflow as tf

    from tfmec import afm, mec
    from tfmec.backend import keras
    from tfmec.training import fit_early_stopping

    keras.utils.set_random_seed(seed)
    ds = make_datasets(tf, kind, data, args.batch_size, seed)
    train = data["split"] == 0
    if kind == "tutorial":
        model = build_tutorial(keras, data["user"][train].astype(str), data["movie"][train].astype(str))
    else:
        model = build_history(keras, int(data["user"].max()) + 1, int(max(data["movie"].max(), data["history"].max())) + 1)
    common = {"dataset": args.data, "model": kind, "seed": seed, "keras": keras.__version__,
              "rows": data["info"]["rows"]}

    # stage 0: the user's own training
    compile_model(keras, model, args.lr)
    t0 = time.perf_counter()
    fit = fit_early_stopping(model, ds["train"], ds["valid"], epochs=args.epochs, patience=1, verbose=args.verbose)
    base_mem = mec.memory_report(model)
    base_total = model_bytes_total(model)
    base = dict(common, method="none", test_auc=test_auc(model, ds), epochs=fit["epochs"],
                best_epoch=fit["best_epoch"], train_seconds=round(time.perf_counter() - t0, 1),
                embedding_bytes=base_mem["embedding_bytes"], emb_ratio=1.0, model_bytes=base_total, model_ratio=1.0,
                tables=[{k: t[k] for k in ("layer", "vocab_size", "dim", "bytes")} for t in base_mem["tables"]])
    emit(base)

    # MEC: counts through the model's own preprocessing (once), then per setting codes -> swap -> stage 2
    t0 = time.perf_counter()
    try:
        freqs = mec.count_ids(model, ds["train_eval"], progress=False)
    except Exception as exc:
        emit(dict(common, method="mec", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()))
        return
    count_seconds = time.perf_counter() - t0
    for m, k, bits in args.mec_settings:
        run_compressed(keras, mec, afm, fit_early_stopping, model, freqs, count_seconds, ds, common, base_total,
                       m, k, bits, seed, args, emit)


def run_compressed(keras, mec, afm, fit_early_stopping, model, freqs, count_seconds, ds, common, base_total,
                   m, k, bits, seed, args, emit):
    setting = f"M={m} K={k} bits={bits}"
    common = dict(common, setting=setting)
    t0 = time.perf_counter()
    try:
        codes = mec.learn_codes(model, freqs, num_subspaces=m, num_codewords=k, seed=seed, progress=False,
                                epochs=args.stage1_epochs)
        mec_model = mec.compress_embeddings(model, codes, bits=bits, seed=seed)
        compile_model(keras, mec_model, args.stage2_lr)
        start_auc = test_auc(mec_model, ds)
        fit2 = fit_early_stopping(mec_model, ds["train"], ds["valid"], epochs=args.stage2_epochs, patience=1,
                                  keep_start=True, verbose=args.verbose)
    except Exception as exc:  # report, keep going with the next setting / model / seed
        emit(dict(common, method="mec", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()))
        return
    mem = mec.memory_report(mec_model)
    total = model_bytes_total(mec_model)
    emit(dict(common, method="mec", test_auc=test_auc(mec_model, ds), test_auc_before_stage2=start_auc,
              epochs=fit2["epochs"], best_epoch=fit2["best_epoch"], start_valid_auc=fit2["start_auc"],
              train_seconds=round(time.perf_counter() - t0 + count_seconds, 1),
              embedding_bytes=mem["embedding_bytes"], emb_ratio=mem["compression_ratio_embeddings"],
              model_bytes=total, model_ratio=base_total / total,
              tables=[{k_: t[k_] for k_ in ("layer", "kind", "vocab_size", "dim", "bytes")} for t in mem["tables"]],
              settings={"M": m, "K": k, "bits": bits, "stage2_lr": args.stage2_lr},
              count_rows={k_: int(v.sum()) for k_, v in freqs.items()},
              stage1={f: {s: fc.stats.get(s) for s in ("relative_error", "dead_codewords", "usage_entropy")}
                      for f, fc in codes.items()}))

    # MEC + AFM on the MEC model
    t0 = time.perf_counter()
    try:
        afm_model, report = afm.compress(
            mec_model, ds["train_eval"].take(args.afm_batches), energy=args.afm_energy,
            param_budget=args.afm_budget,
            fine_tune={"train": ds["train"], "valid": ds["valid"], "epochs": 1, "learning_rate": args.stage2_lr},
        )
    except Exception as exc:
        emit(dict(common, method="mec+afm", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()))
        return
    mem = mec.memory_report(afm_model)
    total = model_bytes_total(afm_model)
    emit(dict(common, method="mec+afm", test_auc=test_auc(afm_model, ds), train_seconds=round(time.perf_counter() - t0, 1),
              embedding_bytes=mem["embedding_bytes"], emb_ratio=mem["compression_ratio_embeddings"],
              model_bytes=total, model_ratio=base_total / total, ranks=report.ranks,
              settings={"M": m, "K": k, "bits": bits, "afm_energy": args.afm_energy,
                        "afm_param_budget": args.afm_budget, "afm_batches": args.afm_batches,
                        "fine_tune_lr": args.stage2_lr},
              fine_tune=[{k_: v for k_, v in f.items() if k_ != "history"} for f in report.fine_tune]))


# -------------------------------------------------------------------------------------------- summary
def summarise(rows: list[dict]) -> str:
    from scipy.stats import wilcoxon

    ok = [r for r in rows if "test_auc" in r]
    lines = ["| model | setting | method | n | test AUC (mean ± std) | diff vs none (mean) | diffs per seed (0-4) | "
             "Wilcoxon p | embedding bytes | emb. ratio | model ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in MODELS:
        base = {r["seed"]: r for r in ok if r["model"] == kind and r["method"] == "none"}
        settings = sorted({r.get("setting") for r in ok if r["model"] == kind and r["method"] != "none"},
                          key=lambda x: (x is None, str(x)))
        keys = [("none", None)] + [(m, s) for s in settings for m in METHODS[1:]]
        for method, setting in keys:
            rs = sorted((r for r in ok if r["model"] == kind and r["method"] == method
                         and (method == "none" or r.get("setting") == setting)), key=lambda r: r["seed"])
            if not rs:
                continue
            aucs = np.array([r["test_auc"] for r in rs])
            diffs = [r["test_auc"] - base[r["seed"]]["test_auc"] for r in rs if r["seed"] in base]
            if method == "none":
                diff, per, p = "-", "-", "-"
            else:
                diff = f"{np.mean(diffs):+.4f}" if diffs else "-"
                per = ", ".join(f"{d:+.4f}" for d in diffs)
                p = f"{wilcoxon(diffs).pvalue:.4f}" if len(diffs) >= 5 else "-"
            lines.append(f"| {kind} | {setting or '-'} | {method} | {len(rs)} | {aucs.mean():.4f} ± {aucs.std(ddof=1) if len(rs) > 1 else 0:.4f} "
                         f"| {diff} | {per} | {p} | {int(np.mean([r['embedding_bytes'] for r in rs])):,} "
                         f"| {np.mean([r['emb_ratio'] for r in rs]):.1f}x | {np.mean([r['model_ratio'] for r in rs]):.2f}x |")
    errors = [r for r in rows if "error" in r]
    for r in errors:
        lines.append(f"\nERROR {r['model']} seed {r['seed']} {r.get('setting', '')} {r['method']}: {r['error']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="movielens-1m-part", choices=["movielens-1m-part"])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--quick", action="store_true", help="smoke run: 300 users, 1 epoch per stage")
    p.add_argument("--train-share", type=float, default=1.0, help="random share of the train rows kept")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mec-settings", default="4x16x4,8x32x5",
                   help="MEC settings MxKxBITS, comma-separated (each gets mec and mec+afm on the same base model)")
    p.add_argument("--stage1-epochs", type=int, default=10)
    p.add_argument("--stage2-epochs", type=int, default=3)
    p.add_argument("--stage2-lr", type=float, default=1e-4)
    p.add_argument("--afm-energy", type=float, default=0.95)
    p.add_argument("--afm-budget", type=float, default=0.5)
    p.add_argument("--afm-batches", type=int, default=50)
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "user_models.jsonl"))
    p.add_argument("--summarise", metavar="FILE", help="only print the summary table of a JSON-lines file")
    args = p.parse_args(argv)
    args.mec_settings = [tuple(int(x) for x in item.split("x")) for item in args.mec_settings.split(",")]
    if args.summarise:
        with open(args.summarise) as fh:
            print(summarise([json.loads(line) for line in fh if line.strip()]))
        return 0
    if args.quick:
        args.epochs, args.stage2_epochs, args.stage1_epochs, args.afm_batches = 1, 1, 2, 5
        if args.out.endswith(os.path.join("results", "user_models.jsonl")):  # keep smoke runs out of the results
            args.out = os.path.join(os.path.dirname(os.path.dirname(args.out)), "out", "user_models_quick.jsonl")

    data = load_movielens(max_users=300 if args.quick else None)  # fails loudly when the data is missing
    data = subsample(data, args.train_share)
    print(json.dumps(data["info"]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = []

    def emit(row):
        row = dict(row, data_info=data["info"], quick=args.quick)
        rows.append(row)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
        shown = {k: row.get(k) for k in ("model", "seed", "method", "test_auc", "emb_ratio", "model_ratio",
                                           "train_seconds", "error")}
        print(json.dumps(shown, default=float), flush=True)
        if "traceback" in row:
            print(row["traceback"], file=sys.stderr, flush=True)

    for seed in [int(s) for s in args.seeds.split(",")]:
        for kind in args.models.split(","):
            run_seed(kind, seed, data, args, emit)
    print(summarise(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
