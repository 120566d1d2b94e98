"""Diagnostic for issue 4's 4-bit scale target: how much of the AUC lost by K=16 codes comes back when the
most frequent ids are decoded from K=256 codes instead (a two-tier code table), without any training.

    python bench/mec_scale_tiers.py --shares 0,0.01,0.03,0.1,0.14,1 --results bench/results/mec_scale_tiers.jsonl

Reads what ``bench/mec_scale.py`` left in ``--out`` (the baseline's weights, the stage-1 codes of
``M4_K16_bits4`` and ``M4_K256_bits0``), rebuilds the same synthetic data, and for each head share ``s``
sets every quantised table to: rows ``0 .. s*V - 1`` (the most frequent ids: the Zipf rank is the id) decoded
from the K=256 codes, or kept as float rows where K=256 left the table whole (tables too small for PQ), and
the other rows decoded from the K=16 codes. It evaluates test AUC with no fine-tuning. Share 0 is the
K=16 model, share 1 the K=256 model (both before stage 2).

Bytes of such a two-tier table of the 10^7 x 40 field: a head row costs 4 bytes (4 codes of 8 bits), a tail
row 2 bytes (4 codes of 4 bits), against 160 float bytes; ``ratio_largest`` in each line is that ratio
(codebooks ignored, they are 40 KB of 1.6 GB).

The baseline weights were saved when the zoo's default table layer was ``keras.layers.Embedding`` (the
``SparseReadEmbedding`` tables of later commits store their variable under another path of the weights
file), so the model is rebuilt here with ``keras.layers.Embedding`` tables to load them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import mec_scale  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shares", default="0,0.01,0.03,0.1,0.14,1", help="head shares decoded from the K=256 codes")
    p.add_argument("--out", default=os.path.join(HERE, "out", "scale"), help="bench/mec_scale.py's --out")
    p.add_argument("--results", default=os.path.join(HERE, "results", "mec_scale_tiers.jsonl"))
    args = p.parse_args(argv)

    from tfmec.backend import keras, tf_variable
    from tfmec.evaluation import embedding_layers, evaluate
    from tfmec.mec import CodeSet
    from tfmec.models import build_model

    scale = argparse.Namespace(largest=10**7, dim=40, train_rows=1_000_000, eval_rows=200_000, seed=0, data_seed=0)
    gen, _, _, test = mec_scale._data(scale)
    keras.utils.set_random_seed(0)
    model = build_model("deepfm", mec_scale._schema(gen), embedding_dim=scale.dim, seed=0,
                        embedding_factory=lambda field, dim, name, **kw: keras.layers.Embedding(
                            int(field.vocab_size), int(dim), name=name))
    model.load_weights(os.path.join(args.out, "baseline.weights.h5"))
    test_ds = mec_scale._dataset(gen, test, 16384)
    baseline_auc = evaluate(model, test_ds)["auc"]
    low = CodeSet.load(os.path.join(args.out, "codes_M4_K16_bits4"))
    high = CodeSet.load(os.path.join(args.out, "codes_M4_K256_bits0"))
    layers = {layer.name: layer for layer in embedding_layers(model)}
    # bytes per row of the largest table: float32 rows, K=256 codes (one byte per sub-space), 4-bit codes
    float_row = 4 * scale.dim
    head_code_row, tail_code_row = low.config["num_subspaces"], low.config["num_subspaces"] / 2

    def layer_of(field):
        return layers[field if field.startswith("linear_") else "embedding_" + field]

    shares = [float(s) for s in args.shares.split(",")]
    # decoded once per table: the K=16 rows, and the head rows for the largest share (K=256 decoding, or
    # the float rows of a table K=256 left whole); each share then writes its own prefix of the head
    tail_rows, head_rows = {}, {}
    for field, fc in low.items():
        tail_rows[field] = fc.decode().astype(np.float32)
        most = int(round(max(shares) * fc.codes.shape[0]))
        head_rows[field] = (high[field].decode(np.arange(most)) if field in high
                            else layer_of(field).embeddings.numpy()[:most]).astype(np.float32)
    for share in shares:
        t0 = time.perf_counter()
        for field, fc in low.items():
            variable = tf_variable(layer_of(field).embeddings)
            variable.assign(tail_rows[field])
            head = int(round(share * fc.codes.shape[0]))
            if head:
                variable[:head].assign(head_rows[field][:head])
        auc = evaluate(model, test_ds)["auc"]
        row = {"head_share_k256": share, "test_auc": auc, "baseline_test_auc": baseline_auc,
               "auc_delta_no_training": auc - baseline_auc,
               "ratio_largest": float_row / (head_code_row * share + tail_code_row * (1 - share)),
               "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        with open(args.results, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
