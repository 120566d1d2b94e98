"""MEC end to end: train a baseline, learn PQ codes (stage 1), train the compressed model (stage 2).

    python examples/mec_compress.py
"""
import tfmec
from tfmec.evaluation import evaluate
from tfmec.mec import compress_embeddings, learn_codes, memory_report
from tfmec.training import compile_ctr, fit_early_stopping


def main():
    data = tfmec.data.load("synthetic", rows=100_000, seed=0, batch_size=1024)

    # Stage 0: an ordinary model with full embedding tables.
    base = tfmec.models.DeepFM(data.schema, embedding_dim=16, seed=0)
    compile_ctr(base, learning_rate=3e-3)
    fit_early_stopping(base, data.train, data.valid, epochs=10, patience=2)

    # Stage 1: codes and codebooks for every table PQ makes smaller, weighted by popularity.
    codes = learn_codes(base, data.frequencies, num_subspaces=4, num_codewords=256, alpha=1e-4, beta=2e-3, seed=0)
    for name, fc in list(codes.items())[:3]:
        print(name, {k: fc.stats[k] for k in ("reconstruction_mse", "usage_entropy", "dead_codewords")})

    # Stage 2: any model of the same schema, its large tables swapped for QuantizedEmbedding.
    target = compress_embeddings(tfmec.models.DCNv2(data.schema, embedding_dim=16, seed=0), codes)
    compile_ctr(target, learning_rate=3e-3)
    fit_early_stopping(target, data.train, data.valid, epochs=10, patience=2)

    report = memory_report(target)
    print("baseline:", evaluate(base, data.test))
    print("MEC     :", evaluate(target, data.test))
    print(f"embedding bytes {report['original_embedding_bytes']:,} -> {report['embedding_bytes']:,} "
          f"({report['compression_ratio_embeddings']:.1f}x); whole model {report['compression_ratio_model']:.1f}x")


if __name__ == "__main__":
    main()
