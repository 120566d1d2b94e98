"""The functional model class that MEC's stage 2 returns: reports the contrastive term as a metric."""
from __future__ import annotations

import tensorflow as tf

from tfmec.backend import IS_LEGACY_KERAS, keras, legacy_functional_from_config, legacy_functional_get_config, register


@register
class MECModel(keras.Model):
    """A functional Keras model whose ``fit`` logs ``contrastive_loss`` separately.

    The :class:`~tfmec.layers.QuantizedEmbedding` and :class:`~tfmec.layers.TieredEmbedding` layers add
    ``beta * contrastive`` to the loss themselves (``add_loss``), so the term reaches any model containing
    them; this class only adds the reporting: a ``Mean`` metric, ``contrastive_loss``, of the
    *unweighted* contrastive terms of a step (summed over the tables and calls; before ``beta``), the
    quantity of the layers' ``last_contrastive_loss``, of :func:`~tfmec.layers.contrastive_loss` and of
    stage 1's history entry ``contrastive``. Its ``beta``-weighted value is part of ``loss`` and not
    logged apart. Build it like any functional model: ``MECModel(inputs=..., outputs=...)``. Saves and
    loads as ``.keras`` in both Keras modes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.contrastive_tracker = keras.metrics.Mean(name="contrastive_loss")

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, after :func:`tfmec.distribute.check_fit_supported`: under Keras 3 a
        multi-worker or parameter-server strategy raises a clear error (keras issue 20585) instead of
        failing inside TensorFlow."""
        from tfmec.distribute import check_fit_supported

        check_fit_supported(self)
        return super().fit(*args, **kwargs)

    def _contrastive_terms(self):
        """The unweighted contrastive terms (float32 scalars) of this step: each table layer's added
        losses (``beta * term``, one per call) divided by its ``beta`` (every layer with a contrastive
        term has ``last_contrastive_loss`` and ``contrastive_weight``: QuantizedEmbedding,
        SharedQuantizedEmbedding, TieredEmbedding), wherever they sit: a user's table inside a nested
        sub-model counts as one at the top."""
        from tfmec.graph.walk import iter_layers

        return [loss / ref.layer.contrastive_weight for ref in iter_layers(self)  # nested sub-models included
                if hasattr(ref.layer, "last_contrastive_loss") and getattr(ref.layer, "contrastive_weight", 0) > 0
                for loss in ref.layer.losses]

    def compute_loss(self, *args, **kwargs):
        loss = super().compute_loss(*args, **kwargs)
        terms = self._contrastive_terms()
        self.contrastive_tracker.update_state(tf.add_n(terms) if terms else tf.constant(0.0))
        return loss

    def get_config(self):
        return legacy_functional_get_config(self) if IS_LEGACY_KERAS else super().get_config()

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if IS_LEGACY_KERAS:
            return legacy_functional_from_config(cls, config, custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
