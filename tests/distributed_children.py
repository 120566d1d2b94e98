"""Child program of tests/test_distributed.py: MEC stages 0-2 under a ``tf.distribute`` strategy.

    python tests/distributed_children.py mirrored OUT.npz   # MirroredStrategy over two logical CPUs
    python tests/distributed_children.py worker OUT.npz     # one MultiWorkerMirroredStrategy worker (TF_CONFIG)

It runs in its own process because logical devices and the multi-worker cluster must be configured
before TensorFlow initialises. The Keras mode comes from ``TF_USE_LEGACY_KERAS`` as usual. Steps:

* stage 0: a small DeepFM on ``tfmec.data.load("synthetic", rows=...)``, built and compiled in the
  strategy's scope, one epoch of ``fit_early_stopping`` (skipped for a multi-worker Keras 3 run, which
  cannot fit: there the guard's error is the expected outcome, printed as ``KERAS3_GUARD_OK``);
* stage 1: ``learn_codes`` on two tables, distributed (``strategy=`` in ``mirrored`` mode, the ambient
  strategy of the open scope in ``worker`` mode); in ``mirrored`` mode also with plain equal weights and
  no PWR / contrastive term next to the single-device loop (``exact_*`` arrays, which must agree);
* stage 2: ``compress_embeddings`` in the scope, compile, one epoch of ``fit_early_stopping``.

Writes every array the test compares to ``OUT.npz`` and prints ``CHILD_OK``.
"""
import os
import sys
import time

import numpy as np
import tensorflow as tf

ROWS = int(os.environ.get("TFMEC_TEST_ROWS", "480"))
BATCH = 32


def configure(mode: str):
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        return strategy
    if mode == "worker":
        # RING over gRPC on loopback: what a CPU cluster uses
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise SystemExit(f"unknown mode {mode!r}")


def in_memory(dataset):
    """``({field: array[n]}, array[n])`` of a ``tfmec.data`` split (identical on every worker)."""
    xs, ys = [], []
    for x, y in dataset:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append(y.numpy())
    return {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}, np.concatenate(ys)


def batches(arrays):
    """Full global batches only, so every worker runs the same number of steps."""
    x, y = arrays
    keep = len(y) // BATCH * BATCH
    ds = tf.data.Dataset.from_tensor_slices(({k: v[:keep] for k, v in x.items()}, y[:keep])).batch(BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def local_copies_equal(strategy, model) -> bool:
    """True when every replica's copy of every weight holds the same values."""
    from tfmec.export.module import tf_variables

    for v in tf_variables(model):
        copies = [np.asarray(c) for c in strategy.experimental_local_results(v)]
        if any(not np.array_equal(copies[0], c) for c in copies[1:]):
            return False
    return True


T0 = time.perf_counter()


def mark(what: str):
    """Elapsed seconds per phase on stderr (for the test's failure output)."""
    print(f"[child {time.perf_counter() - T0:7.1f}s] {what}", file=sys.stderr, flush=True)


def main():
    mode, out = sys.argv[1], sys.argv[2]
    strategy = configure(mode)
    import tfmec
    from tfmec.backend import IS_LEGACY_KERAS
    from tfmec.distribute import MultiWorkerKerasError, is_multi_worker
    from tfmec.training import compile_ctr, fit_early_stopping

    tfmec.backend.keras.utils.set_random_seed(0)
    # a few fields keep the graphs (traced once per replica) small: the test is about distribution
    schema = tfmec.data.Schema([tfmec.data.Field("I1", tfmec.data.NUMERIC)]
                               + [tfmec.data.Field(f"C{i}", tfmec.data.CATEGORICAL) for i in (3, 5, 7, 9)],
                               label="label")
    data = tfmec.data.load("synthetic", schema=schema, rows=ROWS, batch_size=256, seed=0, progress=False)
    train, valid = batches(in_memory(data.train)), batches(in_memory(data.valid))
    fields = sorted((f for f in data.schema.categorical), key=lambda f: -f.vocab_size)[:2]
    fields = [f.name for f in fields]
    multi_keras3 = is_multi_worker(strategy) and not IS_LEGACY_KERAS
    arrays = {}
    mark("data loaded")

    with strategy.scope():
        base = tfmec.models.DeepFM(data.schema, embedding_dim=8, hidden_units=(16,), dropout=0.0, seed=0)
        compile_ctr(base, learning_rate=0.01)
    if multi_keras3:
        try:
            fit_early_stopping(base, train, valid, epochs=1, verbose=0)
        except MultiWorkerKerasError as err:
            assert "20585" in str(err) and "TF_USE_LEGACY_KERAS=1" in str(err), str(err)
            print("KERAS3_GUARD_OK", flush=True)
        else:
            raise AssertionError("Keras 3 multi-worker fit did not raise MultiWorkerKerasError")
    else:
        fit_early_stopping(base, train, valid, epochs=1, verbose=0)
    arrays.update({f"stage0_{i}": w for i, w in enumerate(base.get_weights())})
    mark("stage 0 done")

    settings = dict(fields=fields, num_subspaces=2, num_codewords=16, epochs=2, batch_size=64, seed=1,
                    progress=False, beta=0.01)
    if mode == "worker":
        with strategy.scope():  # the ambient strategy
            codes = tfmec.mec.learn_codes(base, data.frequencies, **settings)
    else:
        codes = tfmec.mec.learn_codes(base, data.frequencies, strategy=strategy, **settings)
        exact = dict(settings, alpha=0.0, beta=0.0, batch_size=50)  # equal weights: a plain mean, split exactly
        tables = {f: np.asarray(base.get_layer(f"embedding_{f}").get_weights()[0]) for f in fields}
        for name, strat in (("exact_single", None), ("exact_mirrored", strategy)):
            got = tfmec.mec.learn_codes(tables, None, strategy=strat, **exact)
            for f in fields:
                arrays[f"{name}_{f}_codes"], arrays[f"{name}_{f}_codebooks"] = got[f].codes, got[f].codebooks
                arrays[f"{name}_{f}_history"] = np.asarray([h["loss"] for h in got[f].stats["history"]])
    mark("stage 1 done")
    for f in fields:
        arrays[f"stage1_{f}_codes"], arrays[f"stage1_{f}_codebooks"] = codes[f].codes, codes[f].codebooks

    if not multi_keras3:
        with strategy.scope():
            target = tfmec.mec.compress_embeddings(base, codes)
            compile_ctr(target, learning_rate=0.01)
        start = {f: np.asarray(target.get_layer(f"embedding_{f}").codebooks) for f in fields}
        fit_early_stopping(target, train, valid, epochs=1, patience=1, verbose=0)
        moved = any(not np.array_equal(start[f], np.asarray(target.get_layer(f"embedding_{f}").codebooks))
                    for f in fields)
        assert moved, "stage 2 did not change the codebooks"
        arrays.update({f"stage2_{i}": w for i, w in enumerate(target.get_weights())})
        assert local_copies_equal(strategy, target), "replicas hold different stage-2 weights"
        mark("stage 2 done")
    np.savez(out, **arrays)
    print("CHILD_OK", mode, strategy.num_replicas_in_sync, flush=True)


if __name__ == "__main__":
    main()
