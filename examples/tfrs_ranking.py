"""MEC + AFM on a TensorFlow Recommenders (TFRS) ranking model, exported for TF Serving.

TFRS runs on tf-keras only, so this script sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is
imported (or run it with the variable set). Steps:

1. a TFRS model (``tfrs.models.Model`` + ``tfrs.tasks.Ranking``) around a functional DCN tower that uses
   ``tfrs.layers.dcn.Cross``, trained on tfmec's synthetic Criteo-shaped data;
2. MEC stage 1 (``learn_codes``: PQ codes of the large tables) and stage 2 (``compress_embeddings``:
   ``QuantizedEmbedding`` tables, fine-tuned with the TFRS task plus the contrastive term);
3. AFM (``afm.compress``: the MLP's Dense layers become ``AFMDense``), fine-tuned by the TFRS model;
4. ``tfmec.export.saved_model`` of the compressed tower, and a check that the SavedModel's predictions
   equal the Keras model's to 1e-6 (exit status 1 otherwise).

    TF_USE_LEGACY_KERAS=1 python examples/tfrs_ranking.py --rows 20000 --out saved_models/tfrs_ranking
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported: TFRS needs tf-keras

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import tfmec  # noqa: E402
from tfmec.backend import keras  # noqa: E402
from tfmec.integrations.tfrs import TowerRankingModel, dcn_tower  # noqa: E402
from tfmec.training import fit_early_stopping  # noqa: E402

TOLERANCE = 1e-6


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows to generate")
    parser.add_argument("--fields", type=int, default=None,
                        help="use only the first N categorical fields (and 2 numeric ones); default: all")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training / fine-tuning run")
    parser.add_argument("--min-vocab", type=int, default=200, help="MEC compresses tables with at least this many ids")
    parser.add_argument("--codewords", type=int, default=16, help="K of MEC")
    parser.add_argument("--subspaces", type=int, default=4, help="M of MEC")
    parser.add_argument("--afm-energy", type=float, default=0.95, help="variance share AFM keeps per Dense layer")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default=None, help="SavedModel base folder (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    return parser.parse_args(argv)


def load_data(args):
    """The synthetic CTR splits (``({field: [batch]}, labels [batch])`` batches)."""
    schema = None
    if args.fields is not None:
        fields = [tfmec.data.Field(f"I{i}", tfmec.data.NUMERIC) for i in (1, 2)]
        fields += [tfmec.data.Field(f"C{i + 1}", tfmec.data.CATEGORICAL) for i in range(args.fields)]
        schema = tfmec.data.Schema(fields, label="label")
    return tfmec.data.load("synthetic", schema=schema, rows=args.rows, batch_size=args.batch_size, seed=args.seed,
                           progress=False)


def compile_ranking(model, learning_rate=1e-3):
    """TFRS models take only an optimizer: the loss and metrics are the task's."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def test_features(data, limit=4096):
    """``{field: array[n]}`` of up to ``limit`` test rows."""
    parts = []
    for x, _ in data.test:
        parts.append({k: v.numpy() for k, v in x.items()})
        if sum(len(next(iter(p.values()))) for p in parts) >= limit:
            break
    return {k: np.concatenate([p[k] for p in parts])[:limit] for k in parts[0]}


def run(args) -> dict:
    """Trains, compresses, fine-tunes and exports; returns the numbers the script prints."""
    keras.utils.set_random_seed(args.seed)
    data = load_data(args)
    out = {}

    # 1. the TFRS model: a Ranking task around a functional tower (embeddings, tfrs Cross, MLP)
    model = compile_ranking(TowerRankingModel(dcn_tower(data.schema, args.embedding_dim, seed=args.seed)))
    fit_early_stopping(model, data.train, data.valid, epochs=args.epochs, patience=1, verbose=args.verbose)
    out["base_auc"] = model.evaluate(data.test, return_dict=True, verbose=0)["auc"]

    # 2. MEC: stage 1 reads the tower's tables; stage 2 swaps them inside a new TowerRankingModel
    codes = tfmec.mec.learn_codes(model, data.frequencies, num_subspaces=args.subspaces,
                                  num_codewords=args.codewords, min_vocab=args.min_vocab, epochs=3,
                                  seed=args.seed, progress=bool(args.verbose))
    if not len(codes):
        raise SystemExit(f"no table has >= {args.min_vocab} ids; lower --min-vocab or raise --rows")
    mec = compile_ranking(tfmec.mec.compress_embeddings(model, codes))
    fit_early_stopping(mec, data.train, data.valid, epochs=args.epochs, patience=1, keep_start=True,
                       verbose=args.verbose)
    out["mec_tables"] = len(codes)
    out["mec_auc"] = mec.evaluate(data.test, return_dict=True, verbose=0)["auc"]

    # 3. AFM on the tower's MLP; the fine-tuning callable receives the TFRS model (its own task)
    def fine_tune(ranking):
        compile_ranking(ranking)
        fit_early_stopping(ranking, data.train, data.valid, epochs=args.epochs, patience=1, keep_start=True,
                           verbose=args.verbose)
        return ranking

    small, report = tfmec.afm.compress(mec, data.train.take(20), energy=args.afm_energy, fine_tune=fine_tune)
    compile_ranking(small)
    out["afm_ranks"] = report.ranks
    out["afm_auc"] = small.evaluate(data.test, return_dict=True, verbose=0)["auc"]
    out["bytes_before"] = tfmec.evaluation.model_bytes(model.tower)
    out["bytes_after"] = tfmec.evaluation.model_bytes(small.tower)

    # 4. export the compressed tower (raw-value serving_default + ids signature) and check parity
    base_dir = args.out or tempfile.mkdtemp(prefix="tfmec-tfrs-")
    path = tfmec.export.saved_model(small.tower, base_dir, data.encoder)
    features = test_features(data)
    keras_pred = np.asarray(small.predict(features, batch_size=1024, verbose=0)).reshape(-1)
    served = tfmec.export.predict_saved_model(path, features, signature="ids").reshape(-1)
    out["saved_model"] = path
    out["rows_checked"] = int(len(keras_pred))
    out["max_abs_diff"] = float(np.max(np.abs(keras_pred - served)))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = run(args)
    print(f"base TFRS model      test AUC {out['base_auc']:.4f}  ({out['bytes_before']:,} bytes)")
    print(f"+ MEC ({out['mec_tables']} tables)    test AUC {out['mec_auc']:.4f}")
    print(f"+ AFM ranks {out['afm_ranks']}  test AUC {out['afm_auc']:.4f}  ({out['bytes_after']:,} bytes)")
    print(f"SavedModel {out['saved_model']}: max |keras - saved model| = {out['max_abs_diff']:.3g} "
          f"over {out['rows_checked']} rows (tolerance {TOLERANCE:g})")
    if not out["max_abs_diff"] <= TOLERANCE:
        print("FAILED: the SavedModel's predictions differ from the Keras model's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
