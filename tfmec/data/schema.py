"""Feature schema: which fields a CTR data set has and how each becomes a model input.

A :class:`Field` is one input of the model. After preprocessing every field is either

* ``categorical``: an ``int32`` id per row, shape ``[batch]``, in ``[0, vocab_size)``; id 0 is the
  field's OOV bucket (rare and unseen values), or
* ``numeric``: a ``float32`` value per row, shape ``[batch]``.

A raw numeric column can be turned into a categorical field by a bucketising transform (the standard
Criteo ``log_square`` one). Sequence fields are reserved for later (``kind="sequence"`` is rejected
for now with a clear message).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable, Sequence

CATEGORICAL = "categorical"
NUMERIC = "numeric"
KINDS = (CATEGORICAL, NUMERIC)

# Transforms of raw numeric columns.
#   None / "identity": keep the float (NaN -> 0, plus the standardisation learned on train).
#   "log1p": sign(x) * log1p(|x|), then standardised.
#   "log_square": Criteo's bucketing; x > 2 -> floor(log(x)^2), else int(x); missing -> "" bucket.
#                  The field becomes categorical.
NUMERIC_TRANSFORMS = (None, "identity", "log1p", "log_square")
BUCKETISING_TRANSFORMS = ("log_square",)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def safe_name(name: str) -> str:
    """A Keras-safe version of a column name (letters, digits and underscores only)."""
    cleaned = _SAFE_NAME.sub("_", name.split(":")[0] if ":" in name else name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "f_" + cleaned
    return cleaned


@dataclasses.dataclass
class Field:
    """One model input.

    Args:
        name: the field's name, also the name of the model input (Keras-safe).
        kind: ``"categorical"`` or ``"numeric"`` as stored in the raw data.
        transform: for raw numeric columns, one of ``NUMERIC_TRANSFORMS``.
        min_count: values seen fewer times than this in the training split map to OOV (id 0).
        vocab_size: number of ids including OOV; set once the vocabulary is built.
        source: the raw column it is read from (defaults to ``name``).
    """

    name: str
    kind: str = CATEGORICAL
    transform: str | None = None
    min_count: int = 2
    vocab_size: int | None = None
    source: str | None = None

    def __post_init__(self):
        if self.kind == "sequence":
            raise ValueError(f"field {self.name!r}: sequence fields are not supported yet")
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.transform not in NUMERIC_TRANSFORMS:
            raise ValueError(f"field {self.name!r}: transform must be one of {NUMERIC_TRANSFORMS}, got {self.transform!r}")
        if self.transform is not None and self.kind != NUMERIC:
            raise ValueError(f"field {self.name!r}: transform {self.transform!r} applies to numeric fields only")
        if self.min_count < 1:
            raise ValueError(f"field {self.name!r}: min_count must be >= 1")
        if self.source is None:
            self.source = self.name

    @property
    def is_categorical(self) -> bool:
        """True when the model sees an integer id (raw categorical, or a bucketised numeric)."""
        return self.kind == CATEGORICAL or self.transform in BUCKETISING_TRANSFORMS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Schema:
    """An ordered set of fields plus the label column.

    Shapes: a batch for a model built from this schema is ``{field.name: Tensor[batch]}``, int32 for
    categorical fields and float32 for numeric ones, with a float32 label ``Tensor[batch]``.
    """

    def __init__(self, fields: Sequence[Field], label: str = "label"):
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names: {dupes}")
        if not fields:
            raise ValueError("a schema needs at least one field")
        self.fields = list(fields)
        self.label = label

    # --- access --------------------------------------------------------------------------
    def __iter__(self):
        return iter(self.fields)

    def __len__(self):
        return len(self.fields)

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field named {name!r}; fields are {[f.name for f in self.fields]}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def categorical(self) -> list[Field]:
        return [f for f in self.fields if f.is_categorical]

    @property
    def numeric(self) -> list[Field]:
        return [f for f in self.fields if not f.is_categorical]

    @property
    def is_built(self) -> bool:
        """True when every categorical field knows its vocabulary size."""
        return all(f.vocab_size for f in self.categorical)

    # --- presets ---------------------------------------------------------------------------
    @classmethod
    def criteo(cls, min_count: int = 2) -> "Schema":
        """Criteo DAC: I1..I13 bucketised with ``log_square`` (so categorical), C1..C26 categorical."""
        fields = [Field(f"I{i}", NUMERIC, "log_square", min_count) for i in range(1, 14)]
        fields += [Field(f"C{i}", CATEGORICAL, None, min_count) for i in range(1, 27)]
        return cls(fields, label="label")

    @classmethod
    def avazu(cls, min_count: int = 2) -> "Schema":
        """Avazu: the 22 columns other than ``id`` and ``click``, all categorical; hour split into
        hour-of-day and weekday by the reader."""
        from tfmec.data.readers import AVAZU_FEATURE_COLUMNS

        return cls([Field(c, CATEGORICAL, None, min_count) for c in AVAZU_FEATURE_COLUMNS], label="click")

    @classmethod
    def from_columns(
        cls,
        columns: Iterable[tuple[str, str]],
        label: str = "label",
        numeric_transform: str | None = "log1p",
        min_count: int = 2,
    ) -> "Schema":
        """A schema with one field per raw column ``(name, kind)``; numeric columns get
        ``numeric_transform``."""
        fields = []
        for name, kind in columns:
            fields.append(
                Field(
                    safe_name(name),
                    kind,
                    numeric_transform if kind == NUMERIC else None,
                    min_count,
                    source=name,
                )
            )
        return cls(fields, label=label)

    # --- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"label": self.label, "fields": [f.to_dict() for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict) -> "Schema":
        return cls([Field(**f) for f in data["fields"]], label=data.get("label", "label"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        return cls.from_dict(json.loads(text))

    def copy(self) -> "Schema":
        return Schema.from_dict(self.to_dict())

    def __repr__(self):
        cats = len(self.categorical)
        return f"Schema({len(self.fields)} fields: {cats} categorical, {len(self.fields) - cats} numeric; label={self.label!r})"
