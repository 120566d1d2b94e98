"""From a reader to ``tf.data``: vocabulary pass, encoding, deterministic split, batching.

``load`` makes ONE streaming pass over the data to count split sizes and build the vocabularies
(and numeric statistics) on the training split, then returns three ``tf.data.Dataset`` objects that
stream the data again, encoded, as ``({field: Tensor[batch]}, label Tensor[batch])``.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.data.epochs import EpochStream
from tfmec.data.errors import DataError
from tfmec.data.lists import encode_lists, split_cells
from tfmec.data.readers.base import Chunk, Reader
from tfmec.data.schema import DEFAULT_MAX_LENGTH, Schema
from tfmec.data.split import SPLIT_NAMES, TRAIN, assign_splits, check_fractions
from tfmec.data.transforms import ZSCORE_LIMIT, apply_numeric_transform
from tfmec.data.vocabulary import NumericStats, Vocabulary, load_vocabularies, save_vocabularies


def _progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="chunk", leave=False)


@tfmec_export("tfmec.data.FeatureEncoder")
class FeatureEncoder:
    """Turns raw chunks into model inputs, using a schema, vocabularies and numeric statistics.

    ``encode(features)`` maps ``{column: raw array[rows]}`` to ``{field.name: array[rows]}`` with
    ``int32`` ids for categorical fields and standardised ``float32`` values (NaN -> 0, clipped to
    ``±ZSCORE_LIMIT``) for numeric fields; a multi-valued field gives ``int32[rows, max_length]``
    (:func:`tfmec.data.lists.encode_lists`). A field that ``shares`` another's table uses, and
    counts into, that field's vocabulary; ``vocabularies`` holds one per table.
    """

    def __init__(self, schema: Schema, vocabularies: dict | None = None, numeric_stats: dict | None = None):
        self.schema = schema
        self.vocabularies: dict[str, Vocabulary] = vocabularies or {
            f.name: Vocabulary(f.name, f.min_count) for f in schema.categorical if f.shares is None
        }
        self.numeric_stats: dict[str, NumericStats] = numeric_stats or {f.name: NumericStats(f.name) for f in schema.numeric}

    def check_columns(self, reader: Reader) -> None:
        """Raises a clear error when a field's source column is not in the reader's columns."""
        have = dict(reader.columns)
        missing = [f.source for f in self.schema if f.source not in have]
        if missing:
            raise ValueError(
                f"{reader.description}: the schema needs columns {missing}, which the data lacks; it has {sorted(have)}"
            )

    def _field_values(self, field, features: dict) -> np.ndarray:
        raw = features[field.source]
        if field.transform is not None:
            return apply_numeric_transform(field.transform, raw)
        return raw

    @staticmethod
    def _list_cells(field, fn, *args):
        """``fn(*args)`` on a multi-valued field's cells, a bad cell (TypeError) as a DataError naming it."""
        try:
            return fn(*args)
        except TypeError as err:
            raise DataError(f"field {field.name!r} (column {field.source!r}): {err}") from None

    def update(self, features: dict) -> None:
        """Counts one chunk of training rows (vocabularies and numeric statistics)."""
        for field in self.schema:
            values = self._field_values(field, features)
            if field.is_list:
                self.vocabularies[field.table].update(self._list_cells(field, split_cells, values, field.separator)[0])
            elif field.is_categorical:
                self.vocabularies[field.table].update(values)
            else:
                self.numeric_stats[field.name].update(values)

    def finalize(self) -> Schema:
        """Freezes the vocabularies and returns the schema with every ``vocab_size`` set."""
        for field in self.schema.categorical:
            field.vocab_size = self.vocabularies[field.table].finalize().size
        return self.schema

    def encode(self, features: dict) -> dict:
        """Encodes one chunk; see the class docstring for the output dtypes (shape ``[rows]``, or
        ``[rows, max_length]`` for a multi-valued field)."""
        out = {}
        for field in self.schema:
            values = self._field_values(field, features)
            if field.is_list:
                out[field.name] = self._list_cells(field, encode_lists, self.vocabularies[field.table], values,
                                                   field.max_length, field.separator)
            elif field.is_categorical:
                out[field.name] = self.vocabularies[field.table].lookup(values)
            else:
                stats = self.numeric_stats[field.name]
                z = (np.asarray(values, np.float64) - stats.mean) / stats.std
                z = np.clip(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0), -ZSCORE_LIMIT, ZSCORE_LIMIT)
                out[field.name] = z.astype(np.float32)
        return out

    @property
    def frequencies(self) -> dict:
        """Training-split frequency of every id: ``{field: int64[vocab_size]}`` (MEC's input), one
        entry per table (a shared table's counts hold every occurrence, in all of its fields)."""
        return {name: v.counts for name, v in self.vocabularies.items()}

    def save(self, path: str) -> None:
        """Writes vocabularies and numeric statistics as JSON (atomically)."""
        save_vocabularies(path, self.vocabularies, self.numeric_stats)

    @classmethod
    def load(cls, schema: Schema, path: str) -> "FeatureEncoder":
        """Reads what :meth:`save` wrote and sets the schema's vocabulary sizes."""
        vocabs, numeric = load_vocabularies(path)
        enc = cls(schema, vocabs, numeric)
        for f in schema.categorical:
            if f.table not in vocabs:
                raise ValueError(f"{path}: no vocabulary for field {f.table!r}")
            f.vocab_size = vocabs[f.table].size
        return enc


def _limited(chunks: Iterator[Chunk], max_rows: int | None) -> Iterator[Chunk]:
    if max_rows is None:
        yield from chunks
        return
    seen = 0
    for chunk in chunks:
        if seen >= max_rows:
            return
        take = min(len(chunk), max_rows - seen)
        if take < len(chunk):
            chunk = Chunk({k: v[:take] for k, v in chunk.features.items()}, chunk.labels[:take], chunk.row_index[:take])
        seen += take
        yield chunk


@tfmec_export("tfmec.data.CTRData")
@dataclasses.dataclass
class CTRData:
    """A loaded data set: three ``tf.data.Dataset`` splits plus what was learned from the data.

    Each dataset yields ``({field: Tensor[batch]}, Tensor[batch])``. Unpacks as
    ``train, valid, test = data``.
    """

    train: tf.data.Dataset
    valid: tf.data.Dataset
    test: tf.data.Dataset
    schema: Schema
    encoder: FeatureEncoder
    rows: dict
    name: str
    positive_rate: float
    train_stream: EpochStream | None = None  # the train split as seeded epochs (exact resumption)

    def __iter__(self):
        return iter((self.train, self.valid, self.test))

    @property
    def frequencies(self) -> dict:
        """``{field: int64[vocab_size]}`` training-split counts per id."""
        return self.encoder.frequencies

    @property
    def vocabularies(self) -> dict:
        return self.encoder.vocabularies


def _make_reader(data, format, label, field_map, rows, seed, on_error, reader_kwargs, engine=None) -> Reader:
    if engine is not None and (isinstance(data, Reader) or (isinstance(data, str) and data == "synthetic")):
        raise ValueError("engine applies when reading Parquet files (format='parquet'), not to a reader object "
                         "or 'synthetic'")
    if isinstance(data, Reader):
        return data
    if isinstance(data, str) and data == "synthetic":
        from tfmec.data.synthetic import SyntheticCTR

        return SyntheticCTR(rows=rows or 100_000, seed=seed, **reader_kwargs)
    if format is None:
        raise ValueError("give format= (criteo, avazu, csv, libsvm, parquet, tfrecord) for a file path, or pass 'synthetic'")
    from tfmec.data.readers import open_reader

    return open_reader(data, format, label=label, field_map=field_map, engine=engine, on_error=on_error,
                       **reader_kwargs)


@tfmec_export("tfmec.data.default_schema")
def default_schema(reader: Reader, min_count: int = 2, max_length: int = DEFAULT_MAX_LENGTH,
                   shares: dict | None = None) -> Schema:
    """The schema tfmec uses for a reader when none is given: Criteo-style bucketing for the Criteo
    layout (and the synthetic data), one field per column otherwise; the reader's ``"list"`` columns
    become multi-valued fields of ``max_length`` values, sharing tables as ``reader.shared_tables``
    and then ``shares`` (``{list column: column}``) say."""
    from tfmec.data.synthetic import SyntheticCTR

    from tfmec.data.readers import CriteoReader

    if isinstance(reader, (CriteoReader, SyntheticCTR)):
        names = reader.column_names
        schema = Schema.criteo(min_count)
        if names == schema.names:
            return schema
    return Schema.from_columns(reader.columns, label=reader.label, min_count=min_count, max_length=max_length,
                               shares={**reader.shared_tables, **dict(shares or {})},
                               separators=reader.list_separators)


def without_columns(schema: Schema, drop: Sequence[str], columns: Sequence[str]) -> Schema:
    """``schema`` without the fields read from columns ``drop`` (each must be a column; a field that
    shares a dropped field's table cannot stay: that is an error naming it)."""
    unknown = sorted(set(drop) - set(columns))
    if unknown:
        raise ValueError(f"drop names columns {unknown} the data does not have; the columns are {list(columns)}")
    kept = [f for f in schema if f.source not in set(drop)]
    names = {f.name for f in kept}
    orphans = [f.name for f in kept if f.shares is not None and f.shares not in names]
    if orphans:
        raise ValueError(f"fields {orphans} share the table of a dropped column; drop them too")
    if not kept:
        raise ValueError("drop leaves no field")
    return Schema(kept, label=schema.label)


@tfmec_export("tfmec.data.load")
def load(
    data,
    schema: Schema | None = None,
    *,
    format: str | None = None,
    label: str | None = None,
    field_map: str | None = None,
    engine: str | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    batch_size: int = 1024,
    min_count: int = 2,
    max_length: int = DEFAULT_MAX_LENGTH,
    shares: dict | None = None,
    drop: Sequence[str] = (),
    rows: int | None = None,
    shuffle_buffer: int = 100_000,
    cache: bool = True,
    chunk_size: int = 8192,
    on_error: str = "raise",
    progress: bool = True,
    **reader_kwargs,
) -> CTRData:
    """Loads a CTR data set as three ``tf.data`` splits.

    Args:
        data: ``"synthetic"`` (the embedded generator), a :class:`Reader`, or path(s) with ``format``.
        schema: fields to use; default :func:`default_schema` of the reader (with ``min_count``,
            ``max_length`` for multi-valued columns and ``shares``: ``{list column: column}``).
        drop: columns of the reader to leave out of the default schema (e.g. MIND's ``history``).
        format, label, field_map, on_error, reader_kwargs: passed to the reader.
        engine: Parquet only: ``"pyarrow"`` (default) or ``"tfio"`` (``tfio.IODataset.from_parquet``;
            needs tensorflow-io 0.37.1 on TensorFlow 2.16.x, else a clear ``ValueError``). Both engines
            give identical batches; see :class:`~tfmec.data.readers.ParquetReader`.
        fractions: (train, valid, test) shares; the split is deterministic in ``seed``.
        rows: read at most this many rows (for ``"synthetic"``: generate this many, default 100k).
        batch_size: rows per batch; the train split is shuffled with ``shuffle_buffer``.
        cache: keep the encoded rows in memory after the first epoch (``tf.data`` cache).
    Returns:
        :class:`CTRData`, whose ``train/valid/test`` yield ``({field: Tensor[batch]}, Tensor[batch])``;
        ``train_stream`` is the training split as seeded epochs (:class:`~tfmec.data.epochs.EpochStream`,
        what resumable training uses).
    """
    fractions = check_fractions(fractions)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    reader = _make_reader(data, format, label, field_map, rows, seed, on_error, reader_kwargs, engine)
    if isinstance(data, str) and data == "synthetic":
        rows = None  # the generator already has its length
    if schema is not None and drop:
        raise ValueError("drop applies to the default schema; leave the fields out of the schema you give instead")
    schema = (schema.copy() if schema is not None else default_schema(reader, min_count, max_length, shares))
    if drop:
        schema = without_columns(schema, drop, reader.column_names)
    encoder = FeatureEncoder(schema)
    encoder.check_columns(reader)

    counts = [0, 0, 0]
    positives = 0.0
    for chunk in _progress(_limited(reader.chunks(chunk_size), rows), progress, "building vocabularies"):
        split = assign_splits(chunk.row_index, fractions, seed)
        for s in range(3):
            counts[s] += int((split == s).sum())
        train_mask = split == TRAIN
        positives += float(chunk.labels.sum())
        if train_mask.any():
            encoder.update({k: v[train_mask] for k, v in chunk.features.items()})
    if counts[TRAIN] == 0:
        raise ValueError(f"{reader.description}: the training split is empty; more rows are needed")
    encoder.finalize()
    total = sum(counts)

    specs = {f.name: tf.TensorSpec([None, f.max_length] if f.is_list else [None],
                                   tf.int32 if f.is_categorical else tf.float32) for f in schema}
    signature = (specs, tf.TensorSpec([None], tf.float32))

    def split_dataset(which: int) -> tf.data.Dataset:
        def generate():
            for chunk in _limited(reader.chunks(chunk_size), rows):
                mask = assign_splits(chunk.row_index, fractions, seed) == which
                if mask.any():
                    feats = encoder.encode({k: v[mask] for k, v in chunk.features.items()})
                    yield feats, chunk.labels[mask]

        ds = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
        if cache:
            ds = ds.cache()
        if which == TRAIN:
            rows_datasets[TRAIN] = ds
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    name = data if isinstance(data, str) else getattr(reader, "description", "data")
    rows_datasets: dict = {}
    train = split_dataset(0)
    return CTRData(
        train=train,
        valid=split_dataset(1),
        test=split_dataset(2),
        schema=schema,
        encoder=encoder,
        rows=dict(zip(SPLIT_NAMES, counts)),
        name=str(name),
        positive_rate=positives / max(1, total),
        train_stream=EpochStream(rows_datasets[TRAIN], counts[TRAIN], batch_size, shuffle_buffer, seed),
    )


__all__ = ["FeatureEncoder", "CTRData", "load", "default_schema"]
