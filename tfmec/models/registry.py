"""Model registry: look a builder up by name."""
from __future__ import annotations

from tfmec.api_export import export_value, tfmec_export
from tfmec.models.autoint import AutoInt
from tfmec.models.cross import DCNv2, GDCN
from tfmec.models.deepfm import DeepFM
from tfmec.models.din import DIN
from tfmec.models.fm import FM
from tfmec.models.lr import LR
from tfmec.models.pnn import PNN

MODELS = {"lr": LR, "fm": FM, "deepfm": DeepFM, "dcnv2": DCNv2, "pnn": PNN, "gdcn": GDCN, "autoint": AutoInt, "din": DIN}
"""Name (lower case) -> builder ``(schema, embedding_dim=16, embedding_factory=None, **kw) -> keras.Model``."""
export_value("tfmec.models.MODELS", MODELS, doc="model name (lower case) -> builder")


@tfmec_export("tfmec.models.build_model")
def build_model(name: str, schema, **kwargs):
    """Builds model ``name`` (case-insensitive key of :data:`MODELS`) from ``schema``.

    Args:
        name: e.g. ``"deepfm"``.
        schema: feature schema.
        **kwargs: passed to the builder (``embedding_dim``, ``embedding_factory``, ``seed``, ...).

    Returns:
        a functional ``keras.Model``: ``{field: [batch]}`` -> probability ``[batch, 1]``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names are {sorted(MODELS)}")
    return MODELS[key](schema, **kwargs)
