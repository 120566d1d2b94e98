"""The real CTR samples in ../shared/data, as tfmec readers and schemas, for benchmarks and tests.

The data stays in ../shared/data (internal evaluation only): this module only knows how to read it.
``open_dataset(name)`` returns ``(reader, schema_or_None)``; pass both to ``tfmec.data.load``.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from tfmec.data import AvazuReader, CriteoReader, CSVReader, LibSVMReader, MindReader, Schema
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


#: ``tfmec run`` data flags for each real sample file (paths relative to the shared data folder): the
#: commands a user types; ``bench/run_samples.py`` runs every method on each.
CLI_DATA_ARGS = {
    "criteo": ["--data", "criteo/criteo_dac_train_first10k.txt", "--format", "criteo"],
    "criteo-deepctr-200": ["--data", "criteo/deepctr_criteo_sample.csv", "--format", "csv", "--label", "label",
                           "--numeric", ",".join(f"I{k}" for k in range(1, 14))],
    "avazu": ["--data", "avazu/avazu_train_first10k.csv", "--format", "avazu"],
    "frappe": ["--data", "frappe/frappe.validation.libfm,frappe/frappe.test.libfm", "--format", "libfm"],
    "movielens-100k": ["--data", "movielens-100k/ml-100k.inter", "--format", "csv", "--label", "rating:float",
                       "--label-threshold", "4", "--drop", "timestamp:float"],
    "movielens-1m-part": ["--data", "movielens-1m-part/ratings.dat.gz", "--format", "csv", "--sep", "::",
                          "--names", "user_id,movie_id,rating,timestamp", "--label", "rating",
                          "--label-threshold", "4", "--drop", "timestamp"],
    "movielens-100k-din": ["--data", "movielens-100k/ml-100k.inter", "--format", "movielens"],
    "movielens-1m-din": ["--data", "movielens-1m-part/ratings.dat.gz", "--format", "movielens"],
    "mind-small-5k": ["--data", "mind-small-5k/behaviors.tsv", "--format", "mind"],
}


def cli_data_args(name: str, root: str | None = None) -> list[str]:
    """The ``tfmec run`` data flags of :data:`CLI_DATA_ARGS` ``[name]`` with paths under ``root``
    (default: the shared data folder); the command itself reports a missing file."""
    if name not in CLI_DATA_ARGS:
        raise ValueError(f"unknown sample {name!r}; choose one of {sorted(CLI_DATA_ARGS)}")
    args = list(CLI_DATA_ARGS[name])
    k = args.index("--data") + 1
    args[k] = ",".join(os.path.join(str(root or SHARED_DATA), p) for p in args[k].split(","))
    return args


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
        return MindReader(path("mind-small-5k", "behaviors.tsv"), news=path("mind-small-5k", "news.tsv")), None
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def run_cli(args: list, folder: str) -> dict:
    """Runs ``python -m tfmec.cli run <args> --out folder`` (output to ``folder/run.log``, C++ logs at
    level 2); returns ``{command, rc, commit, seconds, metrics}`` with ``metrics`` the run's
    ``metrics.json`` (None when it failed). What the bench drivers of real samples share."""
    import json
    import subprocess
    import sys
    import time

    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, "-m", "tfmec.cli", "run", *args, "--out", folder]
    t0 = time.perf_counter()
    with open(os.path.join(folder, "run.log"), "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).returncode
    metrics = None
    if rc == 0:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as fh:
            metrics = json.load(fh)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    return {"command": " ".join(cmd[1:]), "rc": rc, "commit": commit, "seconds": round(time.perf_counter() - t0, 1),
            "metrics": metrics}


def latest_results(path: str, *keys: str) -> dict:
    """``{(row[k] for k in keys): row}`` of a bench results file (JSON lines): the last successful
    (``rc == 0``) line of each key counts."""
    import json

    latest = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["rc"] == 0:
                latest[tuple(row[k] for k in keys)] = row
    return latest
