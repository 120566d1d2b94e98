"""The search space of a MEC sweep: alpha and beta on a log scale, K and M as choices, and for
``mec+afm`` the AFM energy.

Each hyperparameter is named after the :class:`~tfmec.experiment.RunConfig` field it sets
(``alpha``, ``beta``, ``codewords``, ``subspaces``, ``afm_energy``), so a trial's values are a
partial ``RunConfig`` and the best trial becomes a config file for ``tfmec run --config``.
"""
from __future__ import annotations

import dataclasses

from tfmec.api_export import export_value, tfmec_export
from tfmec.settings import SweepSettings

TUNED_FIELDS = export_value("tfmec.tuning.TUNED_FIELDS", tuple(f.name for f in dataclasses.fields(SweepSettings)),
                            doc="the RunConfig fields a search space sweeps")
"""The RunConfig fields a sweep sets per trial."""


@dataclasses.dataclass
@tfmec_export("tfmec.tuning.SearchSpace")
class SearchSpace(SweepSettings):
    """Ranges of the swept hyperparameters (their defaults, and ``tfmec tune``'s flags for them, are
    declared in :class:`tfmec.settings.SweepSettings`).

    ``alpha``, ``beta``: ``(low, high)`` sampled on a log scale, or one number (fixed).
    ``afm_energy``: ``(low, high)`` sampled linearly, or one number; used by ``mec+afm`` only.
    ``codewords`` (K), ``subspaces`` (M): a list of choices, or one number (fixed). M values that do
    not divide the embedding width are dropped (with an error when none is left). ``to_dict()``: the
    space as JSON-ready values.
    """

    def resolved(self, embedding_dim: int, bits: int | None = None) -> "SearchSpace":
        """A copy checked against the model: M values dividing ``embedding_dim``, K values that fit in
        ``bits`` when codes are bit-packed. Raises ``ValueError`` naming the bad setting."""
        from tfmec.layers.bitpack import bits_needed

        out = dataclasses.replace(self)
        for name in ("alpha", "beta", "afm_energy"):
            value = getattr(self, name)
            if _is_number(value):
                if not value >= 0:
                    raise ValueError(f"{name} must be >= 0, got {value}")
                continue
            low, high = _pair(name, value)
            if name != "afm_energy" and not 0 < low:
                raise ValueError(f"{name} is sampled on a log scale: its low end must be > 0, got {low}")
            if name == "afm_energy" and not 0 < low <= high <= 1:
                raise ValueError(f"afm_energy range must lie in (0, 1], got {value}")
            setattr(out, name, (float(low), float(high)))
        k = _choices("codewords", self.codewords)
        if min(k) < 2:
            raise ValueError(f"codewords must be >= 2, got {k}")
        if bits is not None:
            too_big = [v for v in k if bits_needed(v) > bits]
            if too_big:
                raise ValueError(f"codewords {too_big} do not fit in bits={bits}; drop them or raise bits")
        m = _choices("subspaces", self.subspaces)
        fit = [v for v in m if v >= 1 and embedding_dim % v == 0]
        if not fit:
            raise ValueError(f"no subspaces choice in {m} divides embedding_dim {embedding_dim}")
        out.codewords, out.subspaces = k, fit
        return out

    def declare(self, hp, method: str, defaults=None):
        """Declares the hyperparameters on a KerasTuner ``HyperParameters`` ``hp`` (the AFM energy only
        for ``mec+afm``); ``defaults`` (a RunConfig) gives each its default when inside the range.
        Returns ``hp``."""
        for name in ("alpha", "beta") + (("afm_energy",) if method == "mec+afm" else ()):
            value = getattr(self, name)
            if _is_number(value):
                hp.Fixed(name, float(value))
                continue
            low, high = _pair(name, value)
            if low == high:
                hp.Fixed(name, low)
                continue
            default = getattr(defaults, name, None) if defaults is not None else None
            default = float(default) if default is not None and low <= default <= high else None
            hp.Float(name, low, high, sampling="linear" if name == "afm_energy" else "log", default=default)
        for name in ("codewords", "subspaces"):
            values = _choices(name, getattr(self, name))
            if len(values) == 1:
                hp.Fixed(name, int(values[0]))
                continue
            default = getattr(defaults, name, None) if defaults is not None else None
            hp.Choice(name, values, ordered=True, default=default if default in values else None)
        return hp


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pair(name, value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if low > high:
        raise ValueError(f"{name} range ({low}, {high}) has low > high")
    return low, high


def _choices(name, value) -> list:
    values = [value] if _is_number(value) else list(value)
    if not values or any(not _is_number(v) or int(v) != v for v in values):
        raise ValueError(f"{name} must be an integer or a list of integers, got {value!r}")
    return sorted({int(v) for v in values})


__all__ = ["SearchSpace", "TUNED_FIELDS"]
