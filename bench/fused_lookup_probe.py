"""Probe: does one fused lookup over all tiered tables of a model decode faster than one lookup per table?

Issue 19 asks the budgeted MEC model to predict at least as fast as its baseline. Each
:class:`tfmec.layers.TieredEmbedding` costs about 20 small TensorFlow ops per lookup against a Keras
``Embedding``'s gather, so the idea was to decode every table of a model with ONE set of vectorised
ops: the ids of all tables stacked ``[B, n]``, each id's tier found by comparison against per-table
boundaries, per-tier parameters gathered by tier, the pq codes read from one byte buffer, the hashed
codes computed, and one gather from one float table. This script builds that fused decode from the
tiered layers of a trained model (``--run DIR/<--method>/model.keras``; tables grouped by output
width, hashed tiers with a power-of-two K), checks that it returns exactly the per-table lookups,
and times, side by side in alternating rounds (medians), the embedding lookups alone at batch 256
and 4096:

- ``baseline``: the baseline model's own tables (``DIR/baseline/model.keras``), same names;
- ``per_table``: the tiered layers, one call each;
- ``fused``: the fused decode.

    python bench/fused_lookup_probe.py --run runs/demo --results bench/results/fused_lookup_probe.jsonl
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, ROOT)

KINDS = {"exact": 0, "pq": 1, "hashed": 2}


def fused_parameters(tables):
    """Constants of the fused decode of ``tables`` (TieredEmbedding, one output width)."""
    from tfmec.layers.tiered_embedding import _hash_multipliers

    d = tables[0].output_dim
    g = 0
    for layer in tables:
        g = math.gcd(g, layer.slot_width)
    slots = d // g
    blocks, codes, tiers, first_tier, boundaries = [], [], [], [], []
    base = code_base = 0
    most = max(len(layer.tiers) for layer in tables)
    s = np.arange(slots)
    for layer in tables:
        values = layer.table.numpy().reshape(-1, g)
        layout = [x * (layer.slot_width // g) for x in layer._layout()]
        first_tier.append(len(tiers))
        boundaries.append(list(layer.starts[1:]) + [layer.input_dim + 1] * (most - len(layer.tiers)))
        for t, tier in enumerate(layer.tiers):
            e = {"kind": KINDS[tier.kind], "start": layer.starts[t], "base": base + layout[t]}
            if tier.kind == "exact":
                e.update(off=s, mult=slots)
            else:
                m, k = tier.num_subspaces, tier.num_codewords
                r = slots // m
                e.update(off=(s // r) * k * r + s % r, mult=r)
                if tier.kind == "pq":
                    packed = layer.tier_codes_weights[t].numpy()
                    bit = (s // r) * tier.bits
                    e.update(code_base=code_base, stride=packed.shape[1], byte=bit // 8, shift=bit % 8,
                             modulus=1 << tier.bits)
                    codes.append(packed.reshape(-1))
                    code_base += packed.size
                else:
                    if k & (k - 1):
                        raise SystemExit(f"{layer.name}: hashed K={k} is not a power of two (not probed)")
                    a, b = _hash_multipliers(m, layer.hash_salt + t)
                    e.update(a=a[s // r], b=b[s // r], hash_shift=32 - (k.bit_length() - 1))
            tiers.append(e)
        blocks.append(values)
        base += values.shape[0]

    def column(key, default, dtype=np.int32, per_slot=False):
        return np.array([np.broadcast_to(e.get(key, default), (slots,)) if per_slot else e.get(key, default)
                         for e in tiers], dtype=dtype)

    return {"d": d, "table": np.concatenate(blocks), "codes": np.concatenate(codes + [np.zeros(4, np.uint8)]),
            "boundaries": np.array(boundaries, np.int32)[:, :most - 1], "first_tier": np.array(first_tier, np.int32),
            "input_dim": np.array([x.input_dim for x in tables], np.int32),
            "oov": np.array([x.oov_id for x in tables], np.int32),
            "kind": column("kind", 0), "start": column("start", 0), "base": column("base", 0),
            "off": column("off", 0, per_slot=True), "mult": column("mult", 0), "code_base": column("code_base", 0),
            "stride": column("stride", 0), "byte": column("byte", 0, per_slot=True),
            "shift": column("shift", 0, per_slot=True), "modulus": column("modulus", 1 << 30),
            "a": column("a", 0, per_slot=True), "b": column("b", 0, per_slot=True),
            "hash_shift": column("hash_shift", 31, dtype=np.uint32)}


def fused_lookup(p):
    """``fn(list of int32 [B] ids) -> list of [B, d]``: the fused decode of :func:`fused_parameters`."""
    import tensorflow as tf

    c = {k: tf.constant(v) for k, v in p.items() if k != "d"}
    d = p["d"]

    def lookup(ids):
        x = tf.stack(ids, axis=-1)  # [B, n]
        x = tf.where(tf.logical_and(x >= 0, x < c["input_dim"]), x, c["oov"])
        tier = tf.reduce_sum(tf.cast(x[..., None] >= c["boundaries"], tf.int32), -1) + c["first_tier"]
        local = x - tf.gather(c["start"], tier)
        kind = tf.gather(c["kind"], tier)[..., None]
        at = tf.gather(c["code_base"], tier) + local * tf.gather(c["stride"], tier)
        byte = tf.cast(tf.gather(c["codes"], at[..., None] + tf.gather(c["byte"], tier)), tf.int32)
        pq = tf.math.floormod(tf.bitwise.right_shift(byte, tf.gather(c["shift"], tier)),
                              tf.gather(c["modulus"], tier)[..., None])
        h = tf.cast(x[..., None] * tf.gather(c["a"], tier) + tf.gather(c["b"], tier), tf.uint32)
        hashed = tf.cast(tf.bitwise.right_shift(h, tf.gather(c["hash_shift"], tier)[..., None]), tf.int32)
        value = tf.where(kind == 1, pq, tf.where(kind == 2, hashed, local[..., None]))
        index = (tf.gather(c["base"], tier)[..., None] + tf.gather(c["off"], tier)
                 + value * tf.gather(c["mult"], tier)[..., None])
        rows = tf.reshape(tf.gather(c["table"], index), tf.concat([tf.shape(x), [d]], 0))
        return tf.unstack(rows, axis=-2)

    return lookup


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--method", default="mec")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=30, help="calls per timed burst")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "fused_lookup_probe.jsonl"))
    args = p.parse_args(argv)

    import tensorflow as tf

    from tfmec.io import load_model
    from tfmec.layers import TieredEmbedding

    model = load_model(os.path.join(args.run, args.method, "model.keras"))
    baseline = load_model(os.path.join(args.run, "baseline", "model.keras"))
    tiered = [x for x in model.layers if isinstance(x, TieredEmbedding)]
    rng = np.random.default_rng(0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    for d in sorted({x.output_dim for x in tiered}):
        tables = [x for x in tiered if x.output_dim == d]
        base_tables = [baseline.get_layer(x.name) for x in tables]
        fused = fused_lookup(fused_parameters(tables))
        probe = [tf.constant(rng.integers(-2, x.input_dim + 3, size=2048).astype(np.int32)) for x in tables]
        diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(fused(probe), [x(i) for x, i in zip(tables, probe)]))
        fns = {"baseline": tf.function(lambda ids, ts=base_tables: [t(i) for t, i in zip(ts, ids)]),
               "per_table": tf.function(lambda ids, ts=tables: [t(i) for t, i in zip(ts, ids)]),
               "fused": tf.function(fused)}
        row = {"run": args.run, "method": args.method, "output_dim": d, "tables": len(tables),
               "tiers": sum(len(x.tiers) for x in tables), "max_abs_diff_fused": diff, "commit": commit,
               "rounds": args.rounds, "calls": args.calls}
        for batch in (256, 4096):
            ids = [tf.constant(rng.integers(0, x.input_dim, size=batch).astype(np.int32)) for x in tables]
            for fn in fns.values():
                fn(ids), fn(ids)
            times = {k: [] for k in fns}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    t = time.perf_counter()
                    for _ in range(args.calls):
                        fn(ids)
                    times[k].append((time.perf_counter() - t) / args.calls * 1e3)
            row[f"batch{batch}_ms"] = {k: round(float(np.median(v)), 3) for k, v in times.items()}
        print(json.dumps(row), flush=True)
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
