"""Evaluation of a trained CTR model: exact AUC and logloss, byte counts, prediction throughput."""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tfmec.api_export import public_names, tfmec_export



@tfmec_export("tfmec.evaluation.roc_auc")
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney with average ranks for ties) of ``labels[n]`` in {0,1}."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@tfmec_export("tfmec.evaluation.log_loss")
def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs[n]``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@tfmec_export("tfmec.evaluation.predict_dataset")
def predict_dataset(model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``model`` over ``dataset`` of ``(features, labels)``; returns ``(labels[n], probs[n])``."""
    predict = tf.function(lambda x: model(x, training=False))
    ys, ps = [], []
    for x, y in dataset:
        ps.append(np.asarray(predict(x)).reshape(-1))
        ys.append(np.asarray(y).reshape(-1))
    return np.concatenate(ys), np.concatenate(ps)


@tfmec_export("tfmec.evaluation.evaluate")
def evaluate(model, dataset: tf.data.Dataset) -> dict:
    """``{"auc", "logloss", "rows"}`` of ``model`` on ``dataset`` (exact, over every row)."""
    y, p = predict_dataset(model, dataset)
    bad = int(np.count_nonzero(~np.isfinite(p)))
    if bad:
        raise ValueError(f"model {getattr(model, 'name', '?')!r} predicts NaN or infinite scores for {bad} of {p.size} "
                         f"rows; an AUC of such scores would mean nothing (the weights hold NaN: lower the learning "
                         f"rate or the loss weights)")
    return {"auc": roc_auc(y, p), "logloss": log_loss(y, p), "rows": int(y.size)}


@tfmec_export("tfmec.evaluation.array_weights")
def array_weights(weights) -> list:
    """The weights that are arrays (variables with a shape and a dtype): tf-keras lists a lookup
    layer's table handler among a model's weights too."""
    return [w for w in weights if hasattr(w, "shape") and hasattr(w, "dtype")]


@tfmec_export("tfmec.evaluation.variable_bytes")
def variable_bytes(variables) -> int:
    """Bytes of a list of variables at their stored dtypes."""
    total = 0
    for v in array_weights(variables):
        dtype = tf.as_dtype(v.dtype)
        total += int(np.prod(v.shape)) * dtype.size
    return total


@tfmec_export("tfmec.evaluation.embedding_layers")
def embedding_layers(model) -> list:
    """Every embedding-table layer of ``model`` (Keras ``Embedding`` and layers that declare
    ``is_embedding_table = True``), found by structure wherever it sits (nested, subclassed, custom
    layers; :func:`tfmec.graph.find_tables`), each layer once however many inputs share it."""
    from tfmec.graph import find_tables

    return [ref.layer for ref in find_tables(model)]


@tfmec_export("tfmec.evaluation.embedding_bytes")
def embedding_bytes(model) -> int:
    """Bytes held by the model's embedding tables (all their weights, at stored width)."""
    return sum(variable_bytes(layer.weights) for layer in embedding_layers(model))


@tfmec_export("tfmec.evaluation.model_bytes")
def model_bytes(model) -> int:
    """Bytes of every weight of the model, trainable or not, at stored width (optimizer excluded)."""
    return variable_bytes(model.weights)


@tfmec_export("tfmec.evaluation.param_count_of")
def param_count_of(weights) -> int:
    """Number of scalars in a list of weights (arrays only)."""
    return int(sum(int(np.prod(v.shape)) for v in array_weights(weights)))


@tfmec_export("tfmec.evaluation.param_count")
def param_count(model) -> int:
    """Number of scalars in the model's weights."""
    return param_count_of(model.weights)


def _throughput_batch(dataset: tf.data.Dataset, batch_size: int) -> dict:
    """One ``batch_size`` batch of ``dataset``'s features; rows repeat when the data set is smaller."""
    x = next(iter(dataset.unbatch().repeat().batch(batch_size).take(1)))[0]
    return x


@tfmec_export("tfmec.evaluation.prediction_throughput")
def prediction_throughput(model, dataset: tf.data.Dataset, batch_size: int = 4096, repeats: int = 7) -> float:
    """Median rows per second of ``model(x, training=False)`` on one ``batch_size`` batch of
    ``dataset`` (graph mode, after a warm-up call; rows repeat when the data set is smaller)."""
    return throughput_side_by_side({"model": model}, dataset, batch_size=batch_size, rounds=repeats)["model"]


@tfmec_export("tfmec.evaluation.throughput_side_by_side")
def throughput_side_by_side(models: dict, dataset: tf.data.Dataset, batch_size: int = 4096,
                            rounds: int = 9) -> dict:
    """Median rows per second of each of ``models`` (name -> Keras model) on the same ``batch_size``
    batch, the models called in turn within each of ``rounds`` rounds so that they share the machine's
    state (load, clock, caches); compare them by their ratio, not across runs. Graph mode, one warm-up
    call each."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    x = _throughput_batch(dataset, batch_size)
    n = int(next(iter(x.values())).shape[0])
    calls = {}
    for name, model in models.items():
        calls[name] = tf.function(lambda inputs, m=model: m(inputs, training=False))
        np.asarray(calls[name](x))  # trace + warm-up
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            np.asarray(call(x))
            times[name].append(time.perf_counter() - t0)
    return {name: float(n / np.median(t)) for name, t in times.items()}


__all__ = public_names(globals())
