"""Feature schema: which fields a CTR data set has and how each becomes a model input.

A :class:`Field` is one input of the model. After preprocessing every field is either

* ``categorical``: an ``int32`` id per row, shape ``[batch]``, in ``[0, vocab_size)``; id 0 is the
  field's OOV bucket (rare and unseen values), or
* ``numeric``: a ``float32`` value per row, shape ``[batch]``.

A raw numeric column can be turned into a categorical field by a bucketising transform (the standard
Criteo ``log_square`` one).

A categorical field with ``max_length`` is **multi-valued** (a list of ids per row: the news a reader
clicked before, the genres of a movie): ``int32[batch, max_length]``, padded with 0. Rules:

* a raw cell is a list of values (a Python list or array, e.g. a Parquet list column or a TFRecord
  variable-length feature) or a string split on ``separator`` (whitespace when None), in
  chronological order, oldest first (as MIND's click history);
* values the vocabulary does not keep (rare or unseen) are dropped from the list, so id 0 is only
  ever padding inside a list (its mask is ``ids != 0``);
* the ``max_length`` most recent kept values are kept, **most recent first**; an empty list is all
  padding;
* ``shares="news_id"`` makes the field use the vocabulary (ids and counts: every occurrence in both
  fields is counted) and the embedding table of another categorical field.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable, Sequence

from tfmec.api_export import export_value, tfmec_export

CATEGORICAL = "categorical"
NUMERIC = "numeric"
export_value("tfmec.data.CATEGORICAL", CATEGORICAL, doc="the kind of a field of ids (Field.kind)")
export_value("tfmec.data.NUMERIC", NUMERIC, doc="the kind of a field of floats (Field.kind)")
KINDS = (CATEGORICAL, NUMERIC)

# Transforms of raw numeric columns.
#   None / "identity": keep the float (NaN -> 0, plus the standardisation learned on train).
#   "log1p": sign(x) * log1p(|x|), then standardised.
#   "log_square": Criteo's bucketing; x > 2 -> floor(log(x)^2), else int(x); missing -> "" bucket.
#                  The field becomes categorical.
LIST = "list"
"""The column kind of a reader's multi-valued column (a schema makes it a categorical field with
``max_length``)."""
DEFAULT_MAX_LENGTH = 50
"""Values kept per row of a multi-valued field when the schema is derived from a reader."""

NUMERIC_TRANSFORMS = (None, "identity", "log1p", "log_square")
BUCKETISING_TRANSFORMS = ("log_square",)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def safe_name(name: str) -> str:
    """A Keras-safe version of a column name (letters, digits and underscores only)."""
    cleaned = _SAFE_NAME.sub("_", name.split(":")[0] if ":" in name else name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "f_" + cleaned
    return cleaned


@tfmec_export("tfmec.data.Field")
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
        max_length: for a multi-valued categorical field, the most values kept per row (see the
            module docstring); None for one value per row.
        shares: the name of another categorical field whose vocabulary and embedding table this
            field uses (that field must not share itself); None for its own.
        separator: how a multi-valued field's string cells split (None: on whitespace).
    """

    name: str
    kind: str = CATEGORICAL
    transform: str | None = None
    min_count: int = 2
    vocab_size: int | None = None
    source: str | None = None
    max_length: int | None = None
    shares: str | None = None
    separator: str | None = None

    def __post_init__(self):
        if self.kind in ("sequence", "list"):
            raise ValueError(f"field {self.name!r}: a multi-valued field is kind='categorical' with "
                             f"max_length=N (the most values kept per row), not kind={self.kind!r}")
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
        if self.max_length is not None:
            if isinstance(self.max_length, bool) or int(self.max_length) != self.max_length or self.max_length < 1:
                raise ValueError(f"field {self.name!r}: max_length must be an integer >= 1, got {self.max_length!r}")
            self.max_length = int(self.max_length)
            if self.kind != CATEGORICAL:
                raise ValueError(f"field {self.name!r}: max_length applies to categorical fields only")
        if self.shares is not None and not self.is_categorical:
            raise ValueError(f"field {self.name!r}: shares applies to categorical fields only")
        if self.shares == self.name:
            raise ValueError(f"field {self.name!r}: a field cannot share its own table")
        if self.separator is not None and (self.max_length is None or not isinstance(self.separator, str)
                                           or not self.separator):
            raise ValueError(f"field {self.name!r}: separator must be a non-empty string, and applies to "
                             "multi-valued fields (max_length) only")

    @property
    def is_categorical(self) -> bool:
        """True when the model sees an integer id (raw categorical, or a bucketised numeric)."""
        return self.kind == CATEGORICAL or self.transform in BUCKETISING_TRANSFORMS

    @property
    def is_list(self) -> bool:
        """True for a multi-valued field (``int32[batch, max_length]``, 0-padded)."""
        return self.max_length is not None

    @property
    def table(self) -> str:
        """The field whose vocabulary and embedding table this field uses (``shares`` or itself)."""
        return self.shares or self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@tfmec_export("tfmec.data.Schema")
class Schema:
    """An ordered set of fields plus the label column.

    Shapes: a batch for a model built from this schema is ``{field.name: Tensor[batch]}``, int32 for
    categorical fields and float32 for numeric ones (``int32[batch, max_length]`` for multi-valued
    fields), with a float32 label ``Tensor[batch]``.
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
        by_name = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.shares is None:
                continue
            owner = by_name.get(f.shares)
            if owner is None:
                raise ValueError(f"field {f.name!r} shares {f.shares!r}, which is not a field of the schema "
                                 f"(fields: {names})")
            if not owner.is_categorical or owner.shares is not None:
                raise ValueError(f"field {f.name!r} shares {f.shares!r}, which must be a categorical field with "
                                 "its own table (not numeric, not sharing another's)")

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
    def lists(self) -> list[Field]:
        """The multi-valued fields."""
        return [f for f in self.fields if f.is_list]

    def sharing(self, name: str) -> list[Field]:
        """The fields that use field ``name``'s table (itself first when it owns one)."""
        return [f for f in self.fields if f.is_categorical and f.table == name]

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
        max_length: int = DEFAULT_MAX_LENGTH,
        shares: dict | None = None,
        separators: dict | None = None,
    ) -> "Schema":
        """A schema with one field per raw column ``(name, kind)``; numeric columns get
        ``numeric_transform``; a ``"list"`` column (a reader's multi-valued column) becomes a
        categorical field with ``max_length`` values, split on ``separators[name]`` (whitespace when
        absent), sharing the table of ``shares[name]`` (a column name) when given."""
        shares, separators = dict(shares or {}), dict(separators or {})
        names = {name for name, _ in columns}
        unknown = sorted(set(shares) - names) + sorted(set(shares.values()) - names)
        if unknown:
            raise ValueError(f"shares names columns {unknown} the data does not have; the columns are {sorted(names)}")
        fields = []
        for name, kind in columns:
            is_list = kind == LIST
            owner = shares.get(name)
            fields.append(
                Field(
                    safe_name(name),
                    CATEGORICAL if is_list else kind,
                    numeric_transform if kind == NUMERIC else None,
                    min_count,
                    source=name,
                    max_length=max_length if is_list else None,
                    shares=safe_name(owner) if owner else None,
                    separator=separators.get(name) if is_list else None,
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
