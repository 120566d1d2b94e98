"""``tf.distribute`` helpers: which strategy is in use, and the Keras 3 multi-worker guard.

Keras 3's ``model.fit`` does not work under ``tf.distribute.MultiWorkerMirroredStrategy`` with more
than one worker (keras-team/keras issue #20585: it fails deep inside TensorFlow); tf-keras's does.
tfmec checks this before it starts a fit (:func:`check_fit_supported`) and raises
:class:`MultiWorkerKerasError` naming the issue and the workaround, ``TF_USE_LEGACY_KERAS=1``.
Stage 1 (:func:`tfmec.mec.learn_codes`) is a plain TensorFlow loop and runs multi-worker in both
Keras modes. See docs/scaling.md.

``MultiWorkerMirroredStrategy`` also broadcasts every new variable's initial value from the chief, with
a collective op that carries only bool/float/int32/int64: the ``uint8``/``uint16`` codes of a
:class:`~tfmec.layers.QuantizedEmbedding` cannot be created that way. :func:`local_integer_variables`
lets each worker create them from its own value (stage 1's codes, the same on every worker) and then
checks, with one all-reduce, that every worker holds the same values.
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import IS_LEGACY_KERAS

KERAS_MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"
KERAS_PS_ISSUE = "https://github.com/keras-team/keras/issues/18624"


@tfmec_export("tfmec.training.MultiWorkerKerasError")
class MultiWorkerKerasError(RuntimeError):
    """Multi-worker ``model.fit`` was asked of Keras 3, which cannot do it (keras issue #20585)."""


def ambient_strategy():
    """The strategy whose scope is open (``tf.distribute.get_strategy()``), or None outside any scope."""
    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def is_multi_worker(strategy) -> bool:
    """True when ``strategy`` spans more than one worker process (a ``MultiWorkerMirroredStrategy``
    whose cluster has two or more workers, or a ``ParameterServerStrategy``)."""
    if strategy is None:
        return False
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return True
    in_multi_worker = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker()) if callable(in_multi_worker) else False


def model_strategy(model):
    """The strategy ``model``'s variables were created under (None when it has none)."""
    try:
        return getattr(model, "distribute_strategy", None)
    except Exception:  # noqa: BLE001 - a half-built model may raise here
        return None


@tfmec_export("tfmec.training.check_fit_supported")
def check_fit_supported(model=None, strategy=None) -> None:
    """Raises :class:`MultiWorkerKerasError` when a Keras 3 ``model.fit`` would run multi-worker.

    Args:
        model: the model about to be fitted (its ``distribute_strategy`` is checked), or None.
        strategy: a strategy to check as well (default: the strategy whose scope is open).
    Under tf-keras (``TF_USE_LEGACY_KERAS=1``) every strategy passes.
    """
    if IS_LEGACY_KERAS:
        return
    for candidate in (strategy if strategy is not None else ambient_strategy(), model_strategy(model)):
        if isinstance(candidate, tf.distribute.experimental.ParameterServerStrategy):
            raise MultiWorkerKerasError(
                "Keras 3 does not support ParameterServerStrategy training (keras-team/keras issue #18624, "
                f"{KERAS_PS_ISSUE}). Workaround: use tf-keras: pip install 'tf-keras~=2.21' and set "
                "TF_USE_LEGACY_KERAS=1 in the environment of every task before TensorFlow is imported. "
                "See docs/scaling.md."
            )
        if is_multi_worker(candidate):
            raise MultiWorkerKerasError(
                f"Keras 3 cannot train under {type(candidate).__name__} with more than one worker: model.fit "
                f"fails inside TensorFlow (keras-team/keras issue #20585, {KERAS_MULTI_WORKER_ISSUE}). "
                "Workaround: use tf-keras, which tfmec supports with the same code: pip install 'tf-keras~=2.21' "
                "and set TF_USE_LEGACY_KERAS=1 in the environment of every worker before TensorFlow is "
                "imported. (tfmec.mec.learn_codes, stage 1, runs multi-worker under both Keras versions.) "
                "See docs/scaling.md."
            )


_BROADCASTABLE = frozenset({tf.bool, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64})


@contextlib.contextmanager
def local_integer_variables(strategy=None):
    """Lets variables of dtypes the multi-worker broadcast cannot carry (``uint8``/``uint16`` MEC codes)
    be created under a multi-worker ``MultiWorkerMirroredStrategy``.

    Inside the context, such a variable is created (still mirrored, in the strategy's scope) from each
    worker's own initial value instead of the chief's broadcast one; on leaving it, one all-reduce of a
    fingerprint per variable checks that every worker created the same values and raises ``ValueError``
    otherwise (never a silent divergence). Outside multi-worker training it does nothing.
    :func:`tfmec.mec.compress_embeddings` uses it; wrap your own creation of quantised layers under
    ``MultiWorkerMirroredStrategy`` in it too (building them or loading a saved model).

    Args:
        strategy: the strategy (default: the one whose scope is open).
    Yields:
        the list of variables it let through (filled while the context is open).
    """
    strategy = strategy if strategy is not None else ambient_strategy()
    extended = getattr(strategy, "extended", None)
    created = []
    if not is_multi_worker(strategy) or not hasattr(extended, "_num_workers"):
        yield created
        return

    def creator(next_creator, **kwargs):
        dtype = kwargs.get("dtype")
        if dtype is None or tf.as_dtype(dtype).base_dtype in _BROADCASTABLE:
            return next_creator(**kwargs)
        workers = extended._num_workers
        extended._num_workers = 1  # the strategy's initial-value broadcast runs only for more than one worker
        try:
            variable = next_creator(**kwargs)
        finally:
            extended._num_workers = workers
        created.append(variable)
        return variable

    with tf.variable_creator_scope(creator):
        yield created
    check_same_on_all_workers(strategy, created)


def _fingerprint(value, chunk: int = 1 << 22) -> float:
    """A float64 digest of an array: its values weighted by a fixed pseudo-random sequence, plus its size;
    computed in chunks of ``chunk`` values (a 10^9-row code table is never copied to float64 whole)."""
    flat = np.asarray(value).reshape(-1)
    total = float(flat.size)
    for i, start in enumerate(range(0, flat.size, chunk)):
        part = flat[start:start + chunk].astype(np.float64)
        total += float(part @ np.random.default_rng([12345, i]).uniform(0.5, 1.5, size=part.size))
    return total


def check_same_on_all_workers(strategy, variables) -> None:
    """Raises ``ValueError`` unless every worker of ``strategy`` holds the same values in ``variables``
    (compared through one all-reduce of per-variable fingerprints). Call it on every worker."""
    if not variables:
        return
    local = np.array([_fingerprint(strategy.experimental_local_results(v)[0] if hasattr(v, "values") else v)
                      for v in variables], np.float64)

    def total():
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(local))

    summed = strategy.experimental_local_results(strategy.run(total))[0].numpy()
    mean = summed / strategy.num_replicas_in_sync
    differ = [getattr(v, "name", str(i)) for i, v in enumerate(variables)
              if not np.isclose(mean[i], local[i], rtol=1e-12, atol=0.0)]
    if differ:
        raise ValueError(f"the workers created different values for {differ}: every worker must build the "
                         "compressed model from the same stage-1 codes (run stage 1 under the same strategy, or "
                         "load the same code set on every worker)")


__all__ = ["MultiWorkerKerasError", "KERAS_MULTI_WORKER_ISSUE", "KERAS_PS_ISSUE", "ambient_strategy", "is_multi_worker",
           "model_strategy", "check_fit_supported", "local_integer_variables", "check_same_on_all_workers"]
