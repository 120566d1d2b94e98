"""The real CTR samples in ../shared/data, as tfmec readers and schemas, for benchmarks and tests.

The data stays in ../shared/data (internal evaluation only): this module only knows how to read it.
``open_dataset(name)`` returns ``(reader, schema_or_None)``; pass both to ``tfmec.data.load``.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Iterator

import numpy as np

from tfmec.data import AvazuReader, CriteoReader, CSVReader, LibSVMReader, Schema
from tfmec.data.readers.base import Chunk, Reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("TFMEC_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
DATASETS = ("criteo", "avazu", "frappe", "movielens-100k", "movielens-1m-part", "mind-small-5k")


def path(*parts: str) -> str:
    """A path under the shared data folder; raises FileNotFoundError when it is missing."""
    p = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(p):
        raise FileNotFoundError(f"real data not found: {p} (set TFMEC_SHARED_DATA to the shared/data folder)")
    return p


class JoinedReader(Reader):
    """Adds side columns to another reader's chunks by looking up a key column in a table.

    ``tables`` is a list of ``(key_column, {key: {column: value}}, [(column, kind), ...])``; keys not
    in a table get ``""`` (categorical) for every side column.
    """

    def __init__(self, base: Reader, tables):
        super().__init__(base.on_error)
        self.base, self.tables = base, tables
        self.columns = list(base.columns) + [c for _, _, cols in tables for c in cols]
        self.label, self.description = base.label, base.description

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        for chunk in self.base.chunks(chunk_size):
            feats = dict(chunk.features)
            for key, table, cols in self.tables:
                # look up each distinct key once, then broadcast to the rows
                uniq, inverse = np.unique(chunk.features[key].astype(str), return_inverse=True)
                for col, _ in cols:
                    values = np.empty(len(uniq), dtype=object)
                    values[:] = [table.get(k, {}).get(col, "") for k in uniq.tolist()]
                    feats[col] = values[inverse]
            yield Chunk(feats, chunk.labels, chunk.row_index)
        self.stats.skipped = self.base.stats.skipped


class MindReader(Reader):
    """MIND behaviors.tsv exploded to one row per shown article.

    Columns: user_id, news_id, hour, weekday, category, subcategory, history_len (log2 bucket);
    label 1 = clicked.
    """

    def __init__(self, behaviors: str, news: str | None = None):
        super().__init__("raise")
        self.behaviors = behaviors
        self.news = {}
        if news:
            with open(news, encoding="utf-8") as fh:
                for line in fh:
                    parts = line.rstrip("\n").split("\t")
                    self.news[parts[0]] = (parts[1], parts[2])
        self.columns = [(c, "categorical") for c in
                        ("user_id", "news_id", "hour", "weekday", "category", "subcategory", "history_len")]
        self.label = "click"
        self.description = behaviors

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        names = [c for c, _ in self.columns]
        buf = {c: [] for c in names}
        labels = []
        with open(self.behaviors, encoding="utf-8") as fh:
            for line in fh:
                _, user, when, history, impressions = line.rstrip("\n").split("\t")
                t = datetime.strptime(when, "%m/%d/%Y %I:%M:%S %p")
                hist = len(history.split()) if history else 0
                hist_bucket = str(int(np.log2(hist + 1)))
                for item in impressions.split():
                    news_id, lab = item.rsplit("-", 1)
                    cat, sub = self.news.get(news_id, ("", ""))
                    for c, v in zip(names, (user, news_id, str(t.hour), str(t.weekday()), cat, sub, hist_bucket)):
                        buf[c].append(v)
                    labels.append(float(lab))
                    if len(labels) >= chunk_size:
                        yield _chunk(buf, labels)
                        buf = {c: [] for c in names}
                        labels = []
        if labels:
            yield _chunk(buf, labels)


def _chunk(buf: dict, labels: list) -> Chunk:
    feats = {}
    for c, vals in buf.items():
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        feats[c] = arr
    return Chunk(feats, np.asarray(labels, np.float32), np.zeros(0, np.int64))


def _ml1m_side_tables():
    users, movies = {}, {}
    with open(path("movielens-1m-part", "users.dat"), encoding="latin-1") as fh:
        for line in fh:
            uid, gender, age, occ, zipc = line.rstrip("\n").split("::")
            users[uid] = {"gender": gender, "age": age, "occupation": occ, "zip": zipc[:3]}
    with open(path("movielens-1m-part", "movies.dat"), encoding="latin-1") as fh:
        for line in fh:
            mid, title, genres = line.rstrip("\n").split("::")
            year = title.strip()[-5:-1]
            movies[mid] = {"year": year, "genre": genres.split("|")[0]}
    user_cols = [(c, "categorical") for c in ("gender", "age", "occupation", "zip")]
    movie_cols = [(c, "categorical") for c in ("year", "genre")]
    return [("user_id", users, user_cols), ("movie_id", movies, movie_cols)]


def _ml100k_side_tables():
    users, items = {}, {}
    with open(path("movielens-100k", "ml-100k.user"), encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            uid, age, gender, occ, zipc = line.rstrip("\n").split("\t")
            users[uid] = {"age": str(int(age) // 10), "gender": gender, "occupation": occ, "zip": zipc[:3]}
    with open(path("movielens-100k", "ml-100k.item"), encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            iid, _title, year, genres = (line.rstrip("\n").split("\t") + ["", "", ""])[:4]
            items[iid] = {"year": year, "genre": genres.split(" ")[0] if genres else ""}
    user_cols = [(c, "categorical") for c in ("age", "gender", "occupation", "zip")]
    item_cols = [(c, "categorical") for c in ("year", "genre")]
    return [("user_id:token", users, user_cols), ("item_id:token", items, item_cols)]


def open_any(name: str, synthetic_rows: int = 200_000):
    """:func:`open_dataset`, plus ``"synthetic"``: tfmec's generator with ``synthetic_rows`` rows (data
    seed 0; the split seed varies per run)."""
    if name == "synthetic":
        from tfmec.data import SyntheticCTR

        return SyntheticCTR(rows=synthetic_rows, seed=0), None
    return open_dataset(name)


def open_dataset(name: str, side_features: bool = True):
    """``(reader, schema or None)`` for one of :data:`DATASETS`; schema None means tfmec's default.

    ``side_features`` joins the MovieLens user and movie attributes onto the rating rows.
    """
    if name == "criteo":
        return CriteoReader(path("criteo", "criteo_dac_train_first10k.txt")), Schema.criteo()
    if name == "avazu":
        return AvazuReader(path("avazu", "avazu_train_first10k.csv")), None
    if name == "frappe":
        files = [path("frappe", "frappe.validation.libfm"), path("frappe", "frappe.test.libfm")]
        return LibSVMReader(files, field_names=FRAPPE_FIELDS), None
    if name == "movielens-100k":
        base = CSVReader(path("movielens-100k", "ml-100k.inter"), label="rating:float", label_threshold=4,
                         drop=["timestamp:float"])
        return (JoinedReader(base, _ml100k_side_tables()) if side_features else base), None
    if name == "movielens-1m-part":
        base = CSVReader(path("movielens-1m-part", "ratings.dat.gz"), label="rating", sep="::",
                         names=["user_id", "movie_id", "rating", "timestamp"], label_threshold=4, drop=["timestamp"])
        return (JoinedReader(base, _ml1m_side_tables()) if side_features else base), None
    if name == "mind-small-5k":
        return MindReader(path("mind-small-5k", "behaviors.tsv"), path("mind-small-5k", "news.tsv")), None
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


