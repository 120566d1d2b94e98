"""Integrations with other TensorFlow libraries. Each submodule imports its library itself, so
importing :mod:`tfmec` never needs them: ``tfmec.integrations.tfrs`` needs tensorflow-recommenders
(and therefore tf-keras, ``TF_USE_LEGACY_KERAS=1``)."""
