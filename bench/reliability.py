"""The fault campaign of issue 10: bad input everywhere it enters, and SIGKILLs everywhere state is written.

    python bench/reliability.py                      # ~10 minutes on 2 CPU cores
    python bench/reliability.py --trials 3 --kills 1 # a quick pass
    python bench/reliability.py --issue18 1,2,3,4,5,6,7,8,9   # issue 18's seeded generators, one per class

Inputs (every outcome is classified against what the documentation promises):

* readers: for each format (criteo, csv, avazu, libsvm, parquet, tfrecord) and each kind of bad input
  (truncated file, wrong column count, binary garbage, non-UTF-8 bytes, NaN/inf numerics, empty
  strings, huge values, a label that is not 0/1), ``--trials`` files mutated at seeded random places;
* ``QuantizedEmbedding``: random integer ids of every magnitude in random batch shapes;
* the command line: nonexistent paths, folders, unknown model/method names, contradictory flags,
  garbage data files;
* the serving signature: random TF Serving REST requests (batches of 0 to 5 rows and one of 100,000;
  known, unseen, empty and 10 kB strings, NaN/inf/huge numerics, missing and unknown fields, wrong
  JSON types, out-of-range ids on the ``ids`` signature).

Outcomes: ``error`` (a clear error: a DataError naming the file and the right line, a RequestError, a
one-line ``tfmec: error:``; never TensorFlow internals), ``answered`` (accepted, and the answer equals
the documented one: values as written, empty -> NaN / "", unseen or out-of-range -> the OOV id 0,
checked against an independent expectation or the Keras model on the training-time encoder),
``wrong`` (accepted with another answer, an error where the input was fine or at the wrong line,
TensorFlow internals in a message) and ``crash`` (any other exception). Wrong answers = wrong + crash.

Faults (SIGKILL, which runs no cleanup), each followed by a restart with the same arguments:

* MEC stage 1 and a MEC stage-2 fit (child programs of tests/reliability_children.py), killed
  ``--kills`` times at seeded random steps in one run, then compared with an uninterrupted run (exact);
* ``tfmec run --method none,mec --checkpoint-dir`` killed ``--kills`` times at random instants, then
  compared with an uninterrupted run: baseline and MEC test AUC exact (stage 2's contrastive negatives
  are drawn from a stateless seed and a step counter that the checkpoints hold);
* SavedModel export and model.keras / vocabulary.json / metrics.json writes, killed inside a write.

A model is lost when a finished artifact (a SavedModel version, a .keras file, a checkpointed epoch or
table) is missing, unloadable or different after the kill, or a restart trains from scratch although a
checkpoint existed. Writes ``bench/results/reliability.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import tensorflow as tf  # noqa: E402

import reliability_children as children  # noqa: E402
from tfmec import export  # noqa: E402
from tfmec.backend import KERAS_MODE  # noqa: E402
from tfmec.data import CATEGORICAL, NUMERIC, DataError, Field, Schema, SyntheticCTR, load, open_reader  # noqa: E402
from tfmec.io import load_model  # noqa: E402

TF_INTERNALS = ("{{function_node", "[Op:", "Traceback", "tensorflow.python")
OUTCOMES = ("error", "answered", "wrong", "crash")


class Tally:
    """Counts outcomes per (area, kind) and keeps the first examples of wrong answers."""

    def __init__(self):
        self.counts: dict = {}
        self.examples: list = []

    def add(self, area: str, kind: str, outcome: str, detail: str = ""):
        row = self.counts.setdefault(area, {}).setdefault(kind, dict.fromkeys(OUTCOMES, 0))
        row[outcome] += 1
        if outcome in ("wrong", "crash") and len(self.examples) < 50:
            self.examples.append(f"{area}/{kind}: {outcome}: {detail}"[:400])


def clean_message(text: str) -> bool:
    return not any(s in text for s in TF_INTERNALS)


# ----------------------------------------------------------------------------------- readers
class Table:
    """A small CTR table as text cells: ``label`` plus numeric and categorical cells per row."""

    def __init__(self, rng, n, numeric, categorical, digits=False):
        self.numeric, self.categorical = list(numeric), list(categorical)
        value = (lambda: str(int(rng.integers(0, 10**6)))) if digits else (lambda: f"{rng.integers(0, 16**6):06x}")
        self.rows = [{"label": str(rng.integers(0, 2)),
                      **{c: str(int(rng.integers(0, 50))) for c in self.numeric},
                      **{c: value() for c in self.categorical}} for _ in range(n)]

    def copy(self):
        out = Table.__new__(Table)
        out.numeric, out.categorical, out.rows = self.numeric, self.categorical, [dict(r) for r in self.rows]
        return out


FORMATS = {  # name: (numeric columns, categorical columns, header lines before row 0)
    "criteo": ([f"I{i}" for i in range(1, 14)], [f"C{i}" for i in range(1, 27)], 0),
    "csv": (["n1", "n2"], ["c1", "c2"], 1),
    "avazu": ([], ["C1", "site_id", "app_id"], 1),
    "libsvm": ([], ["f0", "f1", "f2"], 0),
    "parquet": (["n1"], ["c1", "c2"], 0),
    "tfrecord": (["n1"], ["c1", "c2"], 0),
}


def text_lines(fmt: str, table: Table) -> list[str]:
    """The file's lines (without line endings) for the text formats."""
    num, cat = table.numeric, table.categorical
    if fmt == "criteo":
        return ["\t".join([r["label"], *(r[c] for c in num), *(r[c] for c in cat)]) for r in table.rows]
    if fmt == "libsvm":
        return [" ".join([r["label"], *(f"{r[c]}:1" for c in cat)]) for r in table.rows]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(["label", *num, *cat])
        writer.writerows([[r["label"], *(r[c] for c in num), *(r[c] for c in cat)] for r in table.rows])
    else:  # avazu
        writer.writerow(["id", "click", "hour", *cat])
        writer.writerows([[str(i), r["label"], "14102113", *(r[c] for c in cat)] for i, r in enumerate(table.rows)])
    return buf.getvalue().rstrip("\n").split("\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def file_bytes(fmt: str, table: Table, path: str) -> None:
    """Writes ``table`` as a ``fmt`` file at ``path``."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def number(text):
            try:
                return float(text)
            except ValueError:  # "" or text: a null cell
                return None

        cols = {"label": pa.array([number(r["label"]) for r in table.rows], pa.float64())}
        cols.update({c: pa.array([number(r[c]) for r in table.rows], pa.float64()) for c in table.numeric})
        cols.update({c: pa.array([r[c].encode("utf-8", "surrogateescape") for r in table.rows], pa.binary())
                     for c in table.categorical})
        pq.write_table(pa.table(cols), path)
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(path) as writer:
            for r in table.rows:
                label = [float(r["label"])] if _is_number(r["label"]) else []  # "" or text: an empty label
                feature = {"label": tf.train.Feature(float_list=tf.train.FloatList(value=label))}
                for c in table.numeric:
                    values = [] if r[c] == "" else [float(r[c])]
                    feature[c] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                for c in table.categorical:
                    feature[c] = tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[r[c].encode("utf-8", "surrogateescape")]))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    else:
        data = "\n".join(text_lines(fmt, table)) + "\n"
        with open(path, "wb") as fh:
            fh.write(data.encode("utf-8", "surrogateescape"))


def read_rows(fmt: str, path: str) -> list[tuple]:
    """Every row a reader accepts: ``(label, {column: value})``."""
    kwargs = {"label": "label"} if fmt in ("csv", "parquet", "tfrecord") else {}
    if fmt == "csv":
        kwargs["numeric"] = FORMATS["csv"][0]
    reader = open_reader(path, fmt, **kwargs)
    rows = []
    for chunk in reader.chunks(16):
        for i in range(len(chunk)):
            rows.append((float(chunk.labels[i]), {c: chunk.features[c][i] for c, _ in reader.columns}))
    return rows


def expected_rows(fmt: str, table: Table) -> list[tuple]:
    """What the documentation says the reader returns for ``table`` (labels 0/1; numerics as floats,
    empty -> NaN; categoricals as written; avazu's hour split into hour_of_day and weekday)."""
    out = []
    for r in table.rows:
        values = {c: (float("nan") if r[c] == "" else float(np.float32(r[c]) if fmt == "tfrecord" else float(r[c])))
                  for c in table.numeric}
        values.update({c: r[c] for c in table.categorical})
        if fmt == "avazu":
            values.update(hour_of_day="13", weekday="1")  # 2014-10-21 was a Tuesday
        out.append((1.0 if r["label"] == "1" else 0.0, values))
    return out


def same_row(a, b, prefix_column=None) -> bool:
    if a[0] != b[0] or set(a[1]) != set(b[1]):
        return False
    for c, x in a[1].items():
        y = b[1][c]
        if isinstance(x, float) or isinstance(y, float):
            if not (np.isnan(x) and np.isnan(y)) and x != y:
                return False
        elif x != y and not (c == prefix_column and str(y).startswith(str(x))):
            return False
    return True


def reader_trial(tally, fmt, kind, table, path, *, bad_line=None, accept=None, prefix_ok=False):
    """Reads ``path`` and classifies: ``bad_line`` (1-based line/record of the planted problem, or -1 for
    'anywhere') means a DataError is required; ``accept`` (expected rows) means acceptance is documented.
    ``prefix_ok``: a truncated file may be accepted as a prefix of ``table``'s rows (its last value cut)."""
    try:
        rows = read_rows(fmt, path)
    except DataError as err:
        ok = path in str(err) and clean_message(str(err))
        if bad_line is not None and bad_line > 0:
            ok = ok and err.line == bad_line
        if accept is not None and bad_line is None:
            ok = False
        tally.add("readers", kind, "error" if ok else "wrong", f"{fmt}: {err} (planted at {bad_line})")
        return
    except Exception as err:  # noqa: BLE001 - the campaign classifies everything
        tally.add("readers", kind, "crash", f"{fmt}: {type(err).__name__}: {err}")
        return
    if accept is not None:
        ok = len(rows) == len(accept) and all(same_row(a, b) for a, b in zip(rows, accept))
    elif prefix_ok:
        want = expected_rows(fmt, table)
        last_col = (table.categorical or table.numeric)[-1]
        ok = 0 < len(rows) <= len(want) and all(same_row(a, b) for a, b in zip(rows[:-1], want))
        ok = ok and same_row(rows[-1], want[len(rows) - 1], prefix_column=last_col)
    else:
        ok = False
    tally.add("readers", kind, "answered" if ok else "wrong", f"{fmt}: accepted {len(rows)} rows")


def campaign_readers(tally, trials: int, seed: int, workdir: str):
    rng = np.random.default_rng(seed)
    n = 12
    for fmt, (numeric, categorical, header) in FORMATS.items():
        binary = fmt in ("parquet", "tfrecord")
        for trial in range(trials):
            base = Table(rng, n, numeric, categorical, digits=fmt == "libsvm")  # libSVM values are indices
            path = os.path.join(workdir, f"{fmt}-{trial}")
            file_bytes(fmt, base, path + ".ok")
            blob = open(path + ".ok", "rb").read()
            row = int(rng.integers(0, n))
            line = row + 1 + (0 if binary else header)

            # truncated at a random byte
            cut = path + ".cut"
            with open(cut, "wb") as fh:
                fh.write(blob[: int(rng.integers(1, len(blob)))])
            reader_trial(tally, fmt, "truncated file", base, cut, bad_line=-1,
                         prefix_ok=fmt != "parquet")  # a cut at a record boundary leaves whole records

            # wrong column count (text formats): a field removed or repeated on one line
            if not binary:
                lines = text_lines(fmt, base)
                sep = {"criteo": "\t", "libsvm": " "}.get(fmt, ",")
                cells = lines[line - 1].split(sep)
                k = int(rng.integers(1, len(cells)))
                cells = cells[:k] + cells[k + 1:] if rng.random() < 0.5 else cells[:k] + [cells[k]] + cells[k:]
                lines[line - 1] = sep.join(cells)
                with open(path + ".cols", "w") as fh:
                    fh.write("\n".join(lines) + "\n")
                reader_trial(tally, fmt, "wrong column count", base, path + ".cols", bad_line=line)

            # binary garbage: a whole file, or one line of it (with an undecodable byte)
            garbage = rng.bytes(int(rng.integers(1, 400)))
            with open(path + ".garbage", "wb") as fh:
                fh.write(garbage)
            reader_trial(tally, fmt, "binary garbage", base, path + ".garbage", bad_line=-1,
                         prefix_ok=False)
            if not binary:
                noise = rng.bytes(int(rng.integers(1, 60))).replace(b"\n", b"").replace(b"\r", b"") + b"\xff"
                lines = blob.split(b"\n")
                lines[line - 1] = noise
                with open(path + ".noise", "wb") as fh:
                    fh.write(b"\n".join(lines))
                reader_trial(tally, fmt, "binary garbage", base, path + ".noise", bad_line=line)

            # non-UTF-8 bytes inside one value
            bad = base.copy()
            col = categorical[int(rng.integers(0, len(categorical)))]
            bad.rows[row][col] = bad.rows[row][col][:3] + "\udcff\udcfe" + bad.rows[row][col][3:]
            file_bytes(fmt, bad, path + ".utf8")
            reader_trial(tally, fmt, "non-UTF-8 bytes", base, path + ".utf8", bad_line=line)

            # NaN / inf in a numeric column
            if numeric:
                bad = base.copy()
                bad.rows[row][numeric[int(rng.integers(0, len(numeric)))]] = str(
                    rng.choice(["nan", "NaN", "inf", "-inf", "Infinity"]))
                file_bytes(fmt, bad, path + ".nan")
                reader_trial(tally, fmt, "NaN / inf numerics", base, path + ".nan", bad_line=line)

            # empty strings: numeric -> NaN, categorical -> "" (documented), in a few random cells
            if fmt != "libsvm":
                empty = base.copy()
                for _ in range(3):
                    r = empty.rows[int(rng.integers(0, n))]
                    r[str(rng.choice(numeric + categorical))] = ""
                file_bytes(fmt, empty, path + ".empty")
                reader_trial(tally, fmt, "empty strings", empty, path + ".empty", accept=expected_rows(fmt, empty))

            # huge values: counts of 1e308 (3e38 for TFRecord's float32), 10 kB strings
            huge = base.copy()
            r = huge.rows[row]
            for c in numeric:
                r[c] = str(rng.choice(["3e38", "-3e38", "1e30"] if fmt == "tfrecord" else
                                      ["1e308", "-1e308", "123456789012345678901234567890"]))
            big = categorical[int(rng.integers(0, len(categorical)))]
            r[big] = ("9" if fmt == "libsvm" else "x") * 10_240
            file_bytes(fmt, huge, path + ".huge")
            reader_trial(tally, fmt, "huge values", huge, path + ".huge", accept=expected_rows(fmt, huge))

            # a label that is not 0/1
            bad = base.copy()
            bad.rows[row]["label"] = str(rng.choice(["2", "0.5", "yes", "", "-2", "nan", "1e9"]))
            file_bytes(fmt, bad, path + ".label")
            reader_trial(tally, fmt, "label not 0/1", base, path + ".label", bad_line=line)


# ----------------------------------------------------------------------------------- QuantizedEmbedding
def campaign_quantized_ids(tally, trials: int, seed: int):
    from tfmec.layers import QuantizedEmbedding
    from tfmec.layers.quantized_embedding import decode_codes

    rng = np.random.default_rng(seed)
    V, M, K, SUB = 50, 4, 16, 2
    codes = rng.integers(0, K, size=(V, M))
    books = rng.normal(size=(M, K, SUB)).astype(np.float32)
    table = np.asarray(decode_codes(codes, books))
    layers = [QuantizedEmbedding(V, M, K, SUB, codes=codes, codebooks=books, bits=b, oov_id=o)
              for b, o in ((None, 0), (4, 0), (None, 7))]
    extremes = np.array([0, V - 1, V, -1, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1], np.int64)
    for _ in range(trials * 20):
        shape = tuple(int(s) for s in rng.integers(0, 5, size=int(rng.integers(0, 4))))
        dtype = np.int32 if rng.random() < 0.5 else np.int64
        ids = rng.choice(extremes, size=shape) if rng.random() < 0.3 else rng.integers(-10, V + 10, size=shape)
        ids = np.clip(ids, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
        layer = layers[int(rng.integers(0, len(layers)))]
        try:
            out = np.asarray(layer(tf.constant(ids)))
        except Exception as err:  # noqa: BLE001
            tally.add("QuantizedEmbedding", "any int id, any batch shape", "crash", f"{shape} {dtype}: {err}")
            continue
        want = table[np.where((ids >= 0) & (ids < V), ids, layer.oov_id)]
        ok = out.shape == ids.shape + (M * SUB,) and np.allclose(out, want, atol=1e-6)
        tally.add("QuantizedEmbedding", "any int id, any batch shape",
                  "answered" if ok else "wrong", f"{shape} {dtype}")


# ----------------------------------------------------------------------------------- command line
def campaign_cli(tally, workdir: str):
    from tfmec.cli import main

    garbage = os.path.join(workdir, "garbage.bin")
    with open(garbage, "wb") as fh:
        fh.write(np.random.default_rng(1).bytes(5000))
    cases = {
        "nonexistent path": [["--data", f"{workdir}/missing.txt", "--format", "criteo"],
                             ["--config", f"{workdir}/missing.json"],
                             ["--data", f"synthetic,{workdir}/missing.csv", "--format", "csv"]],
        "folder as data": [["--data", workdir, "--format", "criteo"]],
        "unknown model or method": [["--model", "deepfmm"], ["--method", "mecc"], ["--method", "none,none"],
                                    ["--format", "xml", "--data", garbage], ["--optimizer", "sgd"],
                                    ["--stage2", "sometimes"]],
        "contradictory flags": [["--data", "synthetic", "--format", "criteo"],
                                ["--data", garbage, "--format", "criteo", "--numeric", "I1"],
                                ["--data", garbage, "--format", "parquet", "--sep", ";"],
                                ["--data", garbage, "--format", "criteo", "--field-map", garbage],
                                ["--data", garbage, "--format", "criteo", "--label", "click"],
                                ["--method", "mec", "--codewords", "256", "--bits", "4"],
                                ["--method", "mec", "--subspaces", "5"], ["--hash-bytes", "100"],
                                ["--checkpoint-dir", garbage], ["--out", garbage]],
        "out-of-range numbers": [["--rows", "3"], ["--epochs", "0"], ["--batch-size", "-1"],
                                 ["--learning-rate", "-0.1"], ["--afm-energy", "0", "--method", "afm"],
                                 ["--codewords", "1", "--method", "mec"], ["--patience", "0"],
                                 ["--seed", "x"]],
        "garbage data file": [["--data", garbage, "--format", fmt] + (["--label", "y"] if fmt in ("csv", "parquet")
                                                                       else [])
                              for fmt in ("criteo", "csv", "avazu", "libsvm", "parquet", "tfrecord")],
    }
    for kind, arg_lists in cases.items():
        for args in arg_lists:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    code = main(["run", "--out", os.path.join(workdir, "out"), "--quiet", *args])
                except SystemExit as exc:  # argparse's own usage errors (exit 2, one line)
                    code = exc.code
                except Exception as exc:  # noqa: BLE001
                    tally.add("command line", kind, "crash", f"{args}: {type(exc).__name__}: {exc}")
                    continue
            text = err.getvalue()
            ok = code == 2 and ("tfmec: error:" in text or "error: argument" in text) and clean_message(text)
            tally.add("command line", kind, "error" if ok else "wrong", f"{args}: rc {code}: {text[-300:]}")


# ----------------------------------------------------------------------------------- serving
SERVING_SCHEMA = Schema([Field("I1", NUMERIC, "log_square"), Field("I2", NUMERIC)]
                        + [Field(f"C{i}", CATEGORICAL) for i in range(1, 5)])


def campaign_serving(tally, trials: int, seed: int, workdir: str):
    from tfmec.export import RequestError, predict_request
    from tfmec.export.parity import keras_probabilities
    from tfmec.mec import compress_embeddings, learn_codes
    from tfmec.models import DeepFM

    reader = SyntheticCTR(rows=3000, seed=0, vocab_sizes=[10, 100, 1000, 3000], num_numeric=2)
    data = load(reader, SERVING_SCHEMA, batch_size=256, progress=False)
    base = DeepFM(data.schema, embedding_dim=4, hidden_units=(8,), seed=0)
    codes = learn_codes(base, data.frequencies, num_subspaces=2, num_codewords=8, epochs=0, fields=["C3", "C4"],
                        progress=False)
    model = compress_embeddings(base, codes)
    path = export.saved_model(model, os.path.join(workdir, "served"), data.encoder)
    signatures = tf.saved_model.load(path).signatures
    encoder = data.encoder
    rng = np.random.default_rng(seed)
    known = {f.name: encoder.vocabularies[f.name].tokens[:20] for f in SERVING_SCHEMA if f.kind == CATEGORICAL}

    perturbations = {
        "unseen values": lambda f: "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF,
                                                                             size=int(rng.integers(1, 12)))),
        "empty strings": lambda f: "",
        "10 kB strings": lambda f: "".join(rng.choice(list("abcdef"), size=10_240)),
        "NaN / inf / huge numerics": lambda f: float(rng.choice([np.nan, np.inf, -np.inf, 3e38, -1e30, 1e6])),
    }

    def known_value(f):
        if f.kind == CATEGORICAL:
            return str(rng.choice(known[f.name]))
        return float(rng.choice([0.0, 1.0, 1.5, 7.0, 40.0]))

    def request_rows(kind, n):
        """``n`` rows of known values with ``kind``'s perturbation in a random half of the right cells."""
        rows = [{f.name: known_value(f) for f in SERVING_SCHEMA} for _ in range(n)]
        if kind in perturbations:
            numeric = kind.startswith("NaN")
            for row in rows:
                for f in SERVING_SCHEMA:
                    if (f.kind != CATEGORICAL) == numeric and rng.random() < 0.5:
                        row[f.name] = perturbations[kind](f)
        return rows

    def expected(rows):
        cols = {f.name: np.asarray([r[f.name] for r in rows], dtype=object if f.kind == CATEGORICAL else np.float64)
                for f in SERVING_SCHEMA}
        return keras_probabilities(model, encoder.encode(cols))

    def classify(kind, body, want_error, rows=None):
        try:
            response = predict_request(signatures, body)
        except RequestError as err:
            ok = want_error and clean_message(str(err))
            tally.add("serving", kind, "error" if ok else "wrong", f"RequestError {err}")
            return
        except Exception as err:  # noqa: BLE001
            tally.add("serving", kind, "crash", f"{type(err).__name__}: {err}")
            return
        if want_error:
            tally.add("serving", kind, "wrong", "accepted a request TF Serving would reject")
            return
        got = np.asarray(response.get("predictions", response.get("outputs")), np.float64).reshape(-1)
        want = expected(rows) if rows else np.zeros(0)
        ok = got.shape == want.shape and np.all(np.isfinite(got)) and np.allclose(got, want, atol=1e-5)
        tally.add("serving", kind, "answered" if ok else "wrong", f"max diff {np.max(np.abs(got - want), initial=0)}")

    kinds = ["batch of one", "known values"] + list(perturbations)
    for trial in range(trials * 8):
        kind = kinds[trial % len(kinds)]
        rows = request_rows(kind, 1 if kind == "batch of one" else int(rng.integers(2, 6)))
        classify(kind, {"instances": rows}, False, rows)
        broken = [dict(r) for r in rows]
        victim = str(rng.choice([f.name for f in SERVING_SCHEMA]))
        action = trial % 3
        if action == 0:
            del broken[0][victim]
            classify("missing fields", {"instances": broken}, True)
        elif action == 1:
            broken[0]["unknown_field"] = "x"
            classify("unknown fields", {"instances": broken}, True)
        else:
            broken[0][victim] = 17 if SERVING_SCHEMA[victim].kind == CATEGORICAL else "text"
            classify("wrong JSON types", {"instances": broken}, True)
    classify("empty batch", {"inputs": {f.name: [] for f in SERVING_SCHEMA}}, False, [])
    classify("empty batch", {"instances": []}, True)
    classify("invalid JSON", "{\"instances\": [", True)
    big = [{f.name: (str(rng.choice(known[f.name])) if f.kind == CATEGORICAL else float(rng.integers(0, 9)))
            for f in SERVING_SCHEMA} for _ in range(100)]
    rows = [big[i % 100] for i in range(100_000)]
    classify("100,000 rows", {"inputs": {f.name: [r[f.name] for r in rows] for f in SERVING_SCHEMA}}, False, rows)
    ids_fn = signatures["ids"]
    specs = ids_fn.structured_input_signature[1]
    zero = {k: tf.zeros([1], s.dtype) for k, s in specs.items()}
    reference = ids_fn(**zero)["probability"].numpy()[0, 0]
    for _ in range(trials * 4):
        value = int(rng.choice([-1, -(2**31), 2**31 - 1, 10**6, 3000, 10**9]))
        body = {"signature_name": "ids", "instances": [{k: (value if s.dtype.is_integer else 0.0)
                                                        for k, s in specs.items()}]}
        try:
            got = np.asarray(predict_request(signatures, body)["predictions"]).reshape(-1)[0]
            tally.add("serving", "out-of-range ids", "answered" if abs(got - reference) < 1e-6 else "wrong",
                      f"id {value}: {got} vs OOV {reference}")
        except Exception as err:  # noqa: BLE001
            tally.add("serving", "out-of-range ids", "crash", f"id {value}: {type(err).__name__}: {err}")


# ----------------------------------------------------------------------------------- faults
def _has_checkpoint(folder: str) -> bool:
    """True when a complete checkpoint (CheckpointManager's ``checkpoint`` index) exists under ``folder``."""
    return any("checkpoint" in files for _, _, files in os.walk(folder))


def _fresh_start(mode: str, progress: str) -> bool:
    """True when a training child's first step is the first step of a whole run."""
    lines = children.progress_lines(progress)
    if not lines:
        return False
    first = lines[0]
    return first == ["a", "0", "1"] if mode == "stage1" else first == ["batch", "0", "0"]


def kill_restart_training(mode: str, kills: int, seed: int, workdir: str) -> dict:
    """The training child killed ``kills`` times at random steps, restarted each time, compared with an
    uninterrupted run. A restart that begins from scratch although a checkpoint existed loses work."""
    script = os.path.join(workdir, f"{mode}_child.py")
    with open(script, "w") as fh:
        fh.write(children.TRAINING_CHILD)
    ref, out = os.path.join(workdir, f"{mode}_ref.npz"), os.path.join(workdir, f"{mode}_out.npz")
    children.finish(children.start_training(script, mode, f"{workdir}/{mode}-ck-ref", f"{workdir}/{mode}-ref.p", ref))
    total = children.step_lines(f"{workdir}/{mode}-ref.p")
    rng = random.Random(seed)
    ck = f"{workdir}/{mode}-ck"
    lost, details, had_checkpoint, progress_files = 0, [], False, []
    for k in range(kills + 1):
        progress = f"{workdir}/{mode}-{k}.p"
        progress_files.append(progress)
        proc = children.start_training(script, mode, ck, progress, out)
        if k == kills:
            children.finish(proc)
        else:
            first = 5 if mode == "stage1" else total // 4  # the first checkpoint: 5 steps, or one epoch
            seen = children.kill_at_step(proc, progress, rng.randint(first + 1, max(first + 1, total // 2)))
            details.append(f"kill {k + 1} after {seen} steps")
        if k > 0 and had_checkpoint and _fresh_start(mode, progress):
            lost += 1
        had_checkpoint = _has_checkpoint(ck)
    redone = sum(children.step_lines(p) for p in progress_files)
    a, b = dict(np.load(ref)), dict(np.load(out))
    wrong = int(sorted(a) != sorted(b) or any(not np.array_equal(a[key], b[key]) for key in a))
    details.append(f"{redone} steps over all runs for a {total}-step job; "
                   f"results {'differ' if wrong else 'bit-identical'}")
    return {"injected": kills, "models_lost": lost, "wrong_answers": wrong, "detail": "; ".join(details)}


def kill_restart_pipeline(kills: int, seed: int, workdir: str) -> dict:
    """``tfmec run --method none,mec --checkpoint-dir`` killed ``kills`` times at random instants."""
    def command(out, ck):
        return [sys.executable, "-m", "tfmec.cli", "run", "--data", "synthetic", "--rows", "10000", "--model",
                "deepfm", "--embedding-dim", "8", "--method", "none,mec", "--epochs", "3", "--stage1-epochs", "3",
                "--codewords", "16", "--batch-size", "512", "--seed", "0", "--no-export", "--quiet",
                "--out", out, "--checkpoint-dir", ck]

    def run(cmd, kill_after=None):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=children.child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if kill_after is None:
            output, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(output[-3000:])
            return time.perf_counter() - t0
        try:
            proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            return -1.0
        return time.perf_counter() - t0  # finished before the kill

    ref_out, out, ck = f"{workdir}/run-ref", f"{workdir}/run", f"{workdir}/run-ck"
    duration = run(command(ref_out, f"{workdir}/run-ck-ref"))
    rng = random.Random(seed)
    killed, where = 0, []
    for k in range(kills):  # the first kill early, later ones late: restarts skip what is finished
        after = (rng.uniform(0.25, 0.6) if k == 0 else rng.uniform(0.6, 0.95)) * duration
        if run(command(out, ck), kill_after=after) < 0:
            killed += 1
            done = [os.path.relpath(root, ck) for root, _, files in os.walk(ck) if "checkpoint" in files]
            fits = sorted(d.split(os.sep, 1)[1] for d in done if d.startswith("fit" + os.sep))
            tables = sum(d.startswith("stage1" + os.sep) for d in done)
            where.append(f"kill {killed} {after:.0f}s into a run (checkpoints then: fits {', '.join(fits) or '-'}; "
                         f"{tables} stage-1 tables)")
    resumed = run(command(out, ck))
    ref = {r["method"]: r for r in json.load(open(f"{ref_out}/metrics.json"))["runs"]}
    got = {r["method"]: r for r in json.load(open(f"{out}/metrics.json"))["runs"]}
    lost = 0
    for method in ("baseline", "mec"):
        try:
            load_model(f"{out}/{method}/model.keras")
        except Exception:  # noqa: BLE001
            lost += 1
    base_diff = abs(got["baseline"]["test_auc"] - ref["baseline"]["test_auc"])
    mec_diff = abs(got["mec"]["test_auc"] - ref["mec"]["test_auc"])
    wrong = int(base_diff > 0) + int(mec_diff > 0)
    return {"injected": killed, "models_lost": lost, "wrong_answers": wrong,
            "detail": f"{'; '.join(where)}; uninterrupted run {duration:.0f}s, last resumed run {resumed:.0f}s; "
                      f"test AUC vs uninterrupted: baseline {base_diff:.1e}, mec {mec_diff:.1e} (both exact expected)"}


def kill_writes(mode: str, kills: int, seed: int, workdir: str) -> dict:
    """The writer child killed ``kills`` times inside a write; every artifact checked after each kill."""
    import pathlib

    lost = wrong = 0
    details = []
    for k in range(kills):
        tmp = pathlib.Path(workdir) / f"{mode}-{k}"
        tmp.mkdir()
        out, write, lines = children.kill_during_write(tmp, mode, seed=seed + k, first=2, last=5)
        done = [int(line[1]) for line in lines if line[0] == "done"]
        if mode == "savedmodel":
            base = out / "ctr"
            versions = export.existing_versions(str(base))
            lost += len(set(done) - set(versions))
            v1, request = np.load(out / "v1.npy"), children.raw_request(out)
            for v in versions:
                try:
                    same = np.array_equal(export.predict_saved_model(str(base / str(v)), request), v1)
                except Exception:  # noqa: BLE001
                    same = False
                wrong += int(not same)
            hidden = [n for n in os.listdir(base) if not n.isdigit()]
            details.append(f"kill in version {write}: versions {versions}, hidden temporaries {len(hidden)}")
        else:
            try:
                model = load_model(str(out / "model.keras"))
                with np.load(out / "ids.npz", allow_pickle=False) as arrays:
                    got = np.asarray(model({n: tf.constant(v) for n, v in arrays.items()})).reshape(-1)
                wrong += int(not any(np.array_equal(got, np.load(out / f"keras{i}.npy")) for i in (0, 1)))
            except Exception:  # noqa: BLE001
                lost += 1
            try:
                from tfmec.data import load_vocabularies

                load_vocabularies(str(out / "vocabulary.json"))
                metrics = json.loads((out / "metrics.json").read_text())
                wrong += int(metrics["values"][0] != metrics["version"])
            except Exception:  # noqa: BLE001
                lost += 1
            details.append(f"kill in write {write}")
    return {"injected": kills, "models_lost": lost, "wrong_answers": wrong, "detail": "; ".join(details)}


# ----------------------------------------------------------------------------------- issue 18
# One seeded generator per class of issue 18, each a self-contained function named for its class that
# produces many members of the class and classifies every outcome in a ClassTally:
#   clean      a clear error naming what it must name (the file, the folder, the checkpoint)
#   answered   accepted, with the documented result (checked against an independent expectation)
#   silent     accepted with a wrong result, or a wrong refusal: a silent wrong answer
#   traceback  an exception that is not tfmec's clear error (a Python or TensorFlow traceback)
#   hang       no answer within the case's time limit (SIGALRM)
#   lost       an artifact that was complete before the case is missing or unloadable after it
#   unbounded  accepted or refused, but after allocating more than the case's memory bound
ISSUE18_OUTCOMES = ("clean", "answered", "silent", "traceback", "hang", "lost", "unbounded")


class ClassTally:
    """Outcomes of one issue-18 class, per kind of member, with the first examples of each failure."""

    def __init__(self):
        self.counts: dict = {}
        self.examples: list = []

    def add(self, kind: str, outcome: str, detail: str = ""):
        row = self.counts.setdefault(kind, dict.fromkeys(ISSUE18_OUTCOMES, 0))
        row[outcome] += 1
        if outcome not in ("clean", "answered") and len(self.examples) < 30:
            self.examples.append(f"{kind}: {outcome}: {detail}"[:500])

    def totals(self) -> dict:
        out = dict.fromkeys(ISSUE18_OUTCOMES, 0)
        for row in self.counts.values():
            for k, v in row.items():
                out[k] += v
        out["cases"] = sum(out[k] for k in ISSUE18_OUTCOMES if k != "lost")
        return out


class Hang(Exception):
    """A case ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raises :class:`Hang` in the main thread after ``seconds`` (interrupts blocking system calls)."""
    def fire(signum, frame):
        raise Hang(f"no answer after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def umask_set(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def run_cli(args: list, seconds: float = 600) -> tuple:
    """``(exit code, stderr, exception or None)`` of ``tfmec <args>`` run in this process."""
    from tfmec.cli import main as cli_main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), time_limit(seconds):
            code = cli_main(args)
    except Hang as exc:
        return None, err.getvalue(), exc
    except SystemExit as exc:
        return exc.code, err.getvalue(), None
    except BaseException as exc:  # noqa: BLE001 - classified by the caller
        return None, err.getvalue(), exc
    return code, err.getvalue(), None


def one_error_line(stderr: str) -> str | None:
    """The ``tfmec: error:`` line when there is exactly one and no traceback; else None."""
    lines = [x for x in stderr.splitlines() if x.startswith("tfmec: error:")]
    if len(lines) != 1 or "Traceback" in stderr or not clean_message(lines[0]):
        return None
    return lines[0]


def class2_resume_against_other_data(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 2: a checkpointed ``tfmec run``, then its data changed in place (same path, same row count,
    often the same size and the old modification time) and the same command run again. Every change of
    content must be refused naming the checkpoint folder and the file; the same bytes (touched, rewritten,
    moved) must resume with the first run's results. Formats: csv, criteo, MIND (with its news.tsv)."""
    rng = np.random.default_rng(seed)
    root = os.path.join(workdir, "class2")

    def write(fmt, folder, s, rows):
        r = np.random.default_rng(s)
        if fmt == "csv":
            path = os.path.join(folder, "clicks.csv")
            lines = ["label,n1,c1,c2"] + [f"{r.integers(0, 2)},{r.integers(10, 99)},{'abcdefgh'[r.integers(0, 8)]}x,"
                                          f"{'ABCDEFGH'[r.integers(0, 8)]}y" for _ in range(rows)]
            args = ["--format", "csv", "--label", "label", "--numeric", "n1"]
        elif fmt == "criteo":
            path = os.path.join(folder, "train.txt")
            lines = ["\t".join([str(r.integers(0, 2))] + [str(r.integers(10, 99)) for _ in range(13)]
                               + [f"{r.integers(0, 16):x}{r.integers(0, 16):x}aa" for _ in range(26)])
                     for _ in range(rows)]
            args = ["--format", "criteo"]
        else:
            path = os.path.join(folder, "behaviors.tsv")
            lines = [f"{i}\tU{r.integers(0, 30)}\t11/{r.integers(10, 15)}/2019 {r.integers(1, 12)}:"
                     f"{r.integers(10, 59)}:{r.integers(10, 59)} AM\tN{r.integers(10, 40)}"
                     f"\tN{r.integers(10, 40)}-{r.integers(0, 2)} N{r.integers(10, 40)}-{r.integers(0, 2)}"
                     for i in range(rows // 2)]
            news = [f"N{i}\tcat{r.integers(0, 5)}\tsub{r.integers(0, 9)}\ttitle" for i in range(10, 40)]
            with open(os.path.join(folder, "news.tsv"), "w") as fh:
                fh.write("\n".join(news) + "\n")
            args = ["--format", "mind"]
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path, args

    def lines_of(path):
        with open(path) as fh:
            return fh.read().rstrip("\n").split("\n")

    def put(path, lines, keep_time):
        st = os.stat(path)
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        if keep_time:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def same_length_swap(value, r):
        """Another value of the same length (digits stay digits)."""
        if not value:
            return value
        i = int(r.integers(0, len(value)))
        alphabet = "0123456789" if value[i].isdigit() else "abcdefghijklmnopqrstuvwxyz"
        choices = [c for c in alphabet if c != value[i]]
        return value[:i] + choices[int(r.integers(0, len(choices)))] + value[i + 1:]

    def mutate(kind, fmt, path, r, keep_time, header):
        lines = lines_of(path)
        first = 1 if header else 0
        sep = "," if fmt == "csv" else "\t"
        k = int(r.integers(first, len(lines)))
        if kind == "one label flipped (same size)":
            cells = lines[k].split(sep)
            if fmt == "mind":
                imps = cells[4].split(" ")
                j = int(r.integers(0, len(imps)))
                nid, lab = imps[j].rsplit("-", 1)
                imps[j] = f"{nid}-{1 - int(lab)}"
                cells[4] = " ".join(imps)
            else:
                cells[0] = "1" if cells[0] == "0" else "0"
            lines[k] = sep.join(cells)
        elif kind == "two rows swapped (same size)":
            j = int(r.integers(first, len(lines)))
            while lines[j] == lines[k]:
                j = int(r.integers(first, len(lines)))
            lines[j], lines[k] = lines[k], lines[j]
        elif kind == "one value changed, same length":
            cells = lines[k].split(sep)
            c = int(r.choice([1, 3])) if fmt == "mind" else int(r.integers(1, len(cells)))  # user or history
            cells[c] = same_length_swap(cells[c], r)
            lines[k] = sep.join(cells)
        elif kind == "rows regenerated, same row count":
            regen = os.path.dirname(path) + "-regen"
            os.makedirs(regen, exist_ok=True)
            other, _ = write(fmt, regen, int(r.integers(10**6)), len(lines) - first)
            lines = lines_of(other)
        elif kind == "side file changed (news.tsv)":
            news = os.path.join(os.path.dirname(path), "news.tsv")
            rows = lines_of(news)
            j = int(r.integers(0, len(rows)))
            cells = rows[j].split("\t")
            cells[1] = same_length_swap(cells[1], r)
            rows[j] = "\t".join(cells)
            put(news, rows, keep_time)
            return
        put(path, lines, keep_time)

    def metrics_of(out):
        with open(os.path.join(out, "metrics.json")) as fh:
            run = json.load(fh)["runs"][0]
        return run["test_auc"], run.get("history")

    changes = ["one label flipped (same size)", "two rows swapped (same size)", "one value changed, same length",
               "rows regenerated, same row count"]
    controls = ["same bytes, touched", "same bytes, rewritten in place", "same bytes under another path"]
    for fmt in ("csv", "criteo", "mind"):
        for trial in range(trials):
            folder = os.path.join(root, f"{fmt}-{trial}")
            os.makedirs(folder)
            path, args = write(fmt, folder, int(rng.integers(10**6)), int(rng.integers(300, 700)))
            pristine = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}

            def command(data, out, ck):
                return ["run", "--data", data, *args, "--model", "lr", "--method", "none", "--epochs", "1",
                        "--batch-size", "128", "--no-export", "--quiet", "--out", out, "--checkpoint-dir", ck]

            ck0 = os.path.join(folder, "ck0")
            code, err, exc = run_cli(command(path, os.path.join(folder, "out0"), ck0))
            if code != 0:
                tally.add("first run", "traceback" if exc else "silent", f"{fmt}: {exc!r} {err[-300:]}")
                continue
            first = metrics_of(os.path.join(folder, "out0"))
            kinds = changes + (["side file changed (news.tsv)"] if fmt == "mind" else []) + controls
            for n, kind in enumerate(kinds):
                for name, blob in pristine.items():  # back to the trained-on bytes, with their times
                    p = os.path.join(folder, name)
                    st = os.stat(p)
                    with open(p, "wb") as fh:
                        fh.write(blob)
                    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
                r = np.random.default_rng([seed, trial, n, len(fmt)])
                keep_time = bool(r.integers(0, 2))
                data = path
                if kind in changes or kind.startswith("side file"):
                    mutate(kind, fmt, path, r, keep_time, header=fmt == "csv")
                elif kind == "same bytes, touched":
                    os.utime(path)
                elif kind == "same bytes, rewritten in place":
                    os.replace(path, path + ".old")
                    shutil.copyfile(path + ".old", path)
                    os.remove(path + ".old")
                else:
                    moved = os.path.join(folder, "moved")
                    os.makedirs(moved, exist_ok=True)
                    data = os.path.join(moved, os.path.basename(path))
                    for name in pristine:
                        shutil.copyfile(os.path.join(folder, name), os.path.join(moved, name))
                ck = os.path.join(folder, f"ck{n + 1}")
                shutil.copytree(ck0, ck)
                out = os.path.join(folder, f"out{n + 1}")
                code, err, exc = run_cli(command(data, out, ck))
                label = f"{kind}{' (old mtime)' if keep_time and kind in changes else ''}"
                if isinstance(exc, Hang):
                    tally.add(label, "hang", f"{fmt}: {exc}")
                elif exc is not None:
                    tally.add(label, "traceback", f"{fmt}: {type(exc).__name__}: {exc}")
                elif kind in controls:
                    ok = code == 0 and metrics_of(out) == first
                    tally.add(label, "answered" if ok else "silent", f"{fmt}: rc {code} {err[-300:]}")
                elif code == 0:
                    tally.add(label, "silent", f"{fmt}: resumed a checkpoint trained on other data")
                else:
                    line = one_error_line(err)
                    changed = os.path.join(folder, "news.tsv") if kind.startswith("side file") else path
                    ok = code == 2 and line is not None and ck in line and changed in line and "differs" in line
                    tally.add(label, "clean" if ok else "silent", f"{fmt}: rc {code}: {err[-400:]}")


def class3_artifact_modes(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 3: every kind of artifact written under a seeded umask (022, 002, 027, 077, 007, 026), fresh
    and over an earlier one written under another umask; each file must come out ``0666 & ~umask`` and
    each folder ``0777 & ~umask`` (a plain write's modes), and, as root under a umask that lets others
    read, the user ``nobody`` must read every file (a model server of its own). One whole ``tfmec run``
    output folder (models, codes, SavedModel, ONNX, vocabulary, metrics, report) per trial too."""
    import stat as st_mod

    from tfmec.atomic import write_json_atomic
    from tfmec.data import save_vocabularies
    from tfmec.export.onnx_export import onnx, onnx_available
    from tfmec.io import save_model
    from tfmec.mec.codes import CodeSet, FieldCodes
    from tfmec.report import write_report

    rng = np.random.default_rng(seed)
    umasks = [0o022, 0o002, 0o027, 0o077, 0o007, 0o026]
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    from tfmec.backend import keras as K

    inp = K.Input((3,), name="x")
    model = K.Model(inp, K.layers.Dense(1, activation="sigmoid", name="d")(inp))
    vocab_data = load(SyntheticCTR(rows=300, seed=0, vocab_sizes=[5, 9], num_numeric=1),
                      Schema([Field("I1", NUMERIC), Field("C1", CATEGORICAL), Field("C2", CATEGORICAL)]),
                      batch_size=64, progress=False)

    def write(kind, target):
        if kind == "SavedModel version":
            return export.saved_model(model, os.path.join(target, "sm"))
        if kind == "model.keras":
            save_model(model, os.path.join(target, "model.keras"))
        elif kind == "codes pair":
            codes = CodeSet({"t": FieldCodes("t", rng.integers(0, 4, (6, 2)), rng.normal(size=(2, 4, 2)))})
            codes.save(os.path.join(target, "codes"))
        elif kind == "vocabulary.json":
            save_vocabularies(os.path.join(target, "vocabulary.json"), vocab_data.vocabularies)
        elif kind == "metrics.json":
            write_json_atomic(os.path.join(target, "metrics.json"), {"runs": []})
        elif kind == "report.md and figures":
            write_report({"dataset": "x", "rows": 1, "runs": [{"method": "baseline", "model": "lr", "test_auc": 0.7,
                                                                 "test_logloss": 0.5, "embedding_bytes": 8,
                                                                 "model_bytes": 9, "train_seconds": 1.0,
                                                                 "history": {"val_auc": [0.6, 0.7]}}]}, target)
        elif kind == "ONNX model":
            onnx(model, os.path.join(target, "model.onnx"))
        return target

    def check(kind, path, mask, detail):
        wrong = []
        for directory, _, files in os.walk(path):
            if os.path.basename(directory) in ("ck",) or f"{os.sep}ck{os.sep}" in directory + os.sep:
                continue  # training checkpoints are TensorFlow's own files, not artifacts
            mode = st_mod.S_IMODE(os.stat(directory).st_mode)
            if directory != path or kind == "SavedModel version":
                if mode != 0o777 & ~mask:
                    wrong.append(f"{directory}: {oct(mode)}")
            for name in files:
                mode = st_mod.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
                if mode != 0o666 & ~mask:
                    wrong.append(f"{os.path.join(directory, name)}: {oct(mode)}")
        if wrong:
            tally.add(kind, "silent", f"umask {oct(mask)}{detail}: {wrong[:3]}")
            return
        if as_root and not mask & 0o005:
            reader = ('set -e; for d in $(find "$1" -type d); do ls "$d" > /dev/null; done; '
                      'for f in $(find "$1" -type f); do cat "$f" > /dev/null; done')
            done = subprocess.run(["sh", "-c", reader, "sh", path], user=65534, group=65534, capture_output=True,
                                  text=True, timeout=120)
            if done.returncode != 0:
                tally.add(kind, "silent", f"umask {oct(mask)}{detail}: another user cannot read: {done.stderr[-200:]}")
                return
        tally.add(kind, "answered", "")

    kinds = ["SavedModel version", "model.keras", "codes pair", "vocabulary.json", "metrics.json",
             "report.md and figures"] + (["ONNX model"] if onnx_available() else [])
    root = tempfile.mkdtemp(prefix="tfmec-class3-")  # its own folder: "nobody" must be able to enter it
    os.chmod(root, 0o755)
    try:
        for trial in range(trials):
            for kind in kinds:
                for over in (False, True):
                    mask = int(rng.choice(umasks))
                    target = os.path.join(root, f"{trial}-{kind.split()[0]}-{int(over)}")
                    os.makedirs(target)
                    os.chmod(target, 0o755)
                    detail = ""
                    try:
                        if over:  # an earlier artifact written under another umask, then the new one over it
                            earlier = int(rng.choice([m for m in umasks if m != mask]))
                            with umask_set(earlier):
                                write(kind, target)
                            detail = f" over one written under {oct(earlier)}"
                        with umask_set(mask), time_limit(300):
                            path = write(kind, target)
                    except Hang as exc:
                        tally.add(kind, "hang", str(exc))
                        continue
                    except Exception as exc:  # noqa: BLE001
                        tally.add(kind, "traceback", f"{type(exc).__name__}: {exc}")
                        continue
                    if kind == "SavedModel version":
                        check(kind, path, mask, detail)
                    else:
                        check(kind, target, mask, detail)
            mask = int(rng.choice(umasks))
            out = os.path.join(root, f"run-{trial}")
            os.makedirs(out)
            os.chmod(out, 0o755)
            with umask_set(mask):
                code, err, exc = run_cli(["run", "--data", "synthetic", "--rows", "3000", "--model", "deepfm",
                                          "--embedding-dim", "4", "--method", "none,mec", "--epochs", "1",
                                          "--stage1-epochs", "1", "--codewords", "16", "--batch-size", "512",
                                          "--quiet", "--out", out])
            if exc is not None or code != 0:
                tally.add("tfmec run output folder", "traceback", f"rc {code} {exc!r} {err[-300:]}")
            else:
                check("tfmec run output folder", out, mask, "")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def class6_readers_without_bounds(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 6: readers without bounds. Seeded members, in every format (criteo, csv, avazu, libsvm, mind,
    parquet, tfrecord; criteo and csv also gzipped): one cell of random size, from just under the cell
    limit (131,072 characters, accepted as written) to 64 MB, of one- or two-byte characters, at a random
    row and column; values just under the limit through the vocabulary pass and the encoder (8192-row
    chunks); many long cells (a chunk's text budget); one endless line without line breaks (also a gzip
    bomb of it); named pipes, links to pipes, /dev/zero, /dev/urandom and /dev/null, folders, links to
    folders, sockets, a pipe as the second file of a list, a pipe swapped in between two passes, a pipe or
    device as libSVM's field map or MIND's news.tsv; int64 / uint64 values around and far beyond 2**53 as
    Parquet and TFRecord numbers, ids, labels and labels with a threshold, and as text ids and counts;
    TFRecord headers claiming up to 2**64 bytes (checksummed, and garbage), plain, GZIP and ZLIB. Either
    mode of ``on_error``. Each answer is checked against an independent expectation: the rows as written,
    or a DataError naming the file, the right line / row / record and the column; each case runs within a
    time limit (a pipe's writing end is opened after it, so that a reader blocked on it comes back) and a
    memory bound on the process's peak RSS over the case (the kernel's peak mark reset before each case):
    96 MB for the text formats and TFRecord, 64 MB + 5 x the largest cell for Parquet (its library decodes
    the page holding a cell), 100 MB through the vocabulary, 128 MB for many long cells."""
    import ctypes
    import gc
    import gzip as gz
    import socket
    import struct
    import threading
    import zlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tfmec.data.readers.base import MAX_CELL_CHARS, MAX_EXACT_INT, MAX_RECORD_BYTES
    from tfmec.data.readers.tfrecord import _masked_crc

    rng = np.random.default_rng(seed)
    root = os.path.join(workdir, "class6")
    os.makedirs(root)
    counter = [0]
    peaks: dict = {}  # the largest peak per kind of member, reported at the end
    FORMATS6 = ("criteo", "csv", "avazu", "libsvm", "mind", "parquet", "tfrecord", "criteo.gz", "csv.gz")
    LABEL_KW = {"csv": {"label": "label"}, "parquet": {"label": "label"}, "tfrecord": {"label": "label"}}
    MB = 2**20
    TEXT_BOUND = 96 * MB  # text formats and TFRecord, whatever the cell or line holds

    def new_path(tag):
        counter[0] += 1
        folder = os.path.join(root, f"{counter[0]}")
        os.makedirs(folder)
        return os.path.join(folder, tag)

    # --- memory: the process's peak RSS over one case (VmHWM, reset before it)
    def status(field):
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def release():
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        pa.default_memory_pool().release_unused()

    def reset_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return status("VmHWM") is not None
        except OSError:
            return False

    import tracemalloc

    def measured(fn):
        """``(value or exception, peak bytes)`` of ``fn()`` (peak RSS where the kernel mark can be reset,
        else Python/NumPy allocations)."""
        release()
        exact = reset_peak()
        base = status("VmRSS") if exact else 0
        if not exact:
            tracemalloc.start()
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - classified by the caller
            value = exc
        finally:
            if exact:
                peak = status("VmHWM") - base
            else:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        return value, peak

    # --- files: rows of (label, a, b) with a and b categorical
    def columns_of(fmt):
        base = fmt.split(".")[0]
        return {"criteo": ("C1", "C2"), "libsvm": ("f0", "f1"), "mind": ("user_id", "news_id")}.get(base, ("a", "b"))

    def header_lines(fmt):
        return 1 if fmt.split(".")[0] in ("csv", "avazu") else 0

    def line_of(fmt, i, row):
        """Line ``i`` (0-based data row) of a text format for ``row`` = (label, a, b)."""
        y, a, b = row
        base = fmt.split(".")[0]
        if base == "criteo":
            return "\t".join([str(y), *(["3"] * 13), a, b, *(["z"] * 24)])
        if base == "csv":
            return f"{y},{a},{b}"
        if base == "avazu":
            return f"{i},{y},14102113,{a},{b}"
        if base == "libsvm":
            return f"{y} {a}:1 {b}:1"
        return f"{i}\t{a}\t11/11/2019 9:05:58 AM\tN1 N2\t{b}-{y}"  # mind: user_id = a, news_id = b

    def write(fmt, path, rows, binary=False):
        """Writes ``rows`` [(label, a, b)] as ``fmt``; returns the path to read."""
        base = fmt.split(".")[0]
        if base == "parquet":
            typ = pa.binary() if binary else pa.string()
            enc = (lambda s: s.encode()) if binary else (lambda s: s)  # noqa: E731
            pq.write_table(pa.table({"label": pa.array([r[0] for r in rows], pa.int64()),
                                     "a": pa.array([enc(r[1]) for r in rows], typ),
                                     "b": pa.array([enc(r[2]) for r in rows], typ)}), path, use_dictionary=False,
                           write_batch_size=64)
            return path
        if base == "tfrecord":
            with tf.io.TFRecordWriter(path) as writer:
                for y, a, b in rows:
                    writer.write(tf.train.Example(features=tf.train.Features(feature={
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[y])),
                        "a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.encode()])),
                        "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b.encode()]))})).SerializeToString())
            return path
        header = {"csv": ["label,a,b"], "avazu": ["id,click,hour,a,b"]}.get(base, [])
        lines = header + [line_of(fmt, i, row) for i, row in enumerate(rows)]
        data = ("\n".join(lines) + "\n").encode()
        if fmt.endswith(".gz"):
            path += ".gz"
            data = gz.compress(data, 1)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def reader_for(path, fmt, **kw):
        return open_reader(path, fmt.split(".")[0], **{**LABEL_KW.get(fmt.split(".")[0], {}), **kw})

    def read_rows(path, fmt, on_error="raise", chunk_size=8192, **kw):
        reader = reader_for(path, fmt, on_error=on_error, **kw)
        a_col, b_col = columns_of(fmt)
        out = []
        for chunk in reader.chunks(chunk_size):
            a_vals, b_vals = chunk.features[a_col].tolist(), chunk.features[b_col].tolist()
            out += [(int(y), a, b) for y, a, b in zip(chunk.labels.tolist(), a_vals, b_vals)]
        return out, reader.stats

    def judge(kind, fn, *, bound, path, error=None, rows=None, skipped=None, seconds=60, fifo=None):
        """Runs ``fn`` (returning ``(rows, stats)``) and classifies it. ``error``: ``(line, [fragments])``
        of the DataError required (line None: any); otherwise ``rows`` (and with skip mode ``skipped``)
        are the documented answer."""
        rescue = None
        if fifo is not None:  # a reader blocked on the pipe (the bug) gets its writing end: it comes back
            def open_writer():
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            rescue = threading.Timer(seconds, open_writer)
            rescue.daemon = True
            rescue.start()
        t0 = time.monotonic()

        def limited():
            with time_limit(seconds):
                return fn()

        value, peak = measured(limited)
        took = time.monotonic() - t0
        if rescue is not None:
            rescue.cancel()
        where = os.path.basename(path)
        if isinstance(value, Hang) or took > seconds:
            tally.add(kind, "hang", f"{where}: {value}")
            return
        if isinstance(value, DataError):
            msg = str(value)
            ok = error is not None and path in msg and clean_message(msg) and len(msg) < 2000
            if ok and error[0] is not None:
                ok = value.line == error[0] and f"line {error[0]}:" in msg
            ok = ok and all(f in msg for f in error[1]) if error is not None else False
            outcome = "clean" if ok else "silent"
            detail = f"{where}: {msg[:300]} (wanted {error})"
        elif isinstance(value, BaseException):
            outcome, detail = "traceback", f"{where}: {type(value).__name__}: {str(value)[:300]}"
        else:
            got, stats = value
            ok = error is None and got == rows and (skipped is None or stats.skipped == skipped)
            outcome = "answered" if ok else "silent"
            detail = (f"{where}: accepted {len(got)} rows (skipped {stats.skipped}), wanted "
                      f"{'an error ' + str(error) if error is not None else f'{len(rows)} rows, {skipped} skipped'}")
        peaks[kind] = max(peaks.get(kind, 0), peak)
        if outcome in ("clean", "answered") and peak > bound:
            outcome, detail = "unbounded", f"peak {peak / MB:.0f} MB > {bound / MB:.0f} MB: {detail}"
        tally.add(kind, outcome, detail)

    def small_value(fmt, r):
        return str(int(r.integers(10, 10_000))) if fmt.startswith("libsvm") else f"{int(r.integers(0, 16**5)):05x}"

    def table(fmt, r, n):
        return [(int(r.integers(0, 2)), small_value(fmt, r), small_value(fmt, r)) for _ in range(n)]

    # 1. one huge cell ------------------------------------------------------------------------------
    def huge_cell(fmt, r):
        n = int(r.integers(3, 40))
        rows = table(fmt, r, n)
        at, col = int(r.integers(0, n)), int(r.integers(1, 3))
        band = str(r.choice(["under", "over", "huge"]))
        char = "7" if fmt.startswith("libsvm") else str(r.choice(["x", "\u00e9"]))
        extra = 2 if fmt.startswith("libsvm") else 0  # a libSVM cell is the whole "index:1" token
        if band == "under":
            length = int(r.integers(MAX_CELL_CHARS // 2, MAX_CELL_CHARS + 1)) - extra
        elif band == "over":
            length = MAX_CELL_CHARS + int(r.integers(1, 3 * MAX_CELL_CHARS)) - extra
        else:
            length = int(2 ** r.uniform(21, 26))  # 2 MB .. 64 MB
            unit = len(char.encode())
            if abs(length * unit - MAX_RECORD_BYTES) < 4096:  # not within a few bytes of the line limit
                length += 8192 // unit
        row = list(rows[at])
        row[col] = char * length
        rows[at] = tuple(row)
        binary = fmt == "parquet" and bool(r.integers(0, 2))
        path = write(fmt, new_path(f"cell.{fmt.split('.')[0]}"), rows, binary=binary)
        on_error = str(r.choice(["raise", "skip"]))
        base = fmt.split(".")[0]
        cell_bytes = len(row[col].encode())
        line = at + 1 + header_lines(fmt)
        name = columns_of(fmt)[col - 1]
        chars = length + extra
        if base == "tfrecord":
            record_bytes = cell_bytes + 80  # the other features: some 50 bytes
            if record_bytes > MAX_RECORD_BYTES:
                if on_error == "raise" or at == 0:  # the first record unreadable: no features to discover
                    err = (line, ["header claims", "MAX_RECORD_BYTES"])
                    return judge("one huge cell", lambda: read_rows(path, fmt, on_error), bound=TEXT_BOUND, path=path,
                                 error=err)
                return judge("one huge cell", lambda: read_rows(path, fmt, "skip"), bound=TEXT_BOUND, path=path,
                             rows=rows[:at], skipped=1)
        elif base != "parquet":
            line_bytes = len(line_of(fmt, at, row).encode())
            if line_bytes > MAX_RECORD_BYTES:
                frag = ["is longer than", "MAX_RECORD_BYTES"]
                if on_error == "raise" or (base == "libsvm" and at == 0):  # libSVM counts its fields on line 1
                    return judge("one huge cell", lambda: read_rows(path, fmt, on_error), bound=TEXT_BOUND, path=path,
                                 error=(line, frag))
                return judge("one huge cell", lambda: read_rows(path, fmt, "skip"), bound=TEXT_BOUND, path=path,
                             rows=rows[:at] + rows[at + 1:], skipped=1)
        bound = (64 + 5 * cell_bytes / MB) * MB if base == "parquet" else TEXT_BOUND
        if chars <= MAX_CELL_CHARS:
            return judge("one cell just under the limit", lambda: read_rows(path, fmt, on_error), bound=bound,
                         path=path, rows=rows, skipped=0)
        frag = [f"column {name!r}", "MAX_CELL_CHARS"]
        if on_error == "raise":
            return judge("one huge cell", lambda: read_rows(path, fmt), bound=bound, path=path, error=(line, frag))
        return judge("one huge cell", lambda: read_rows(path, fmt, "skip"), bound=bound, path=path,
                     rows=rows[:at] + rows[at + 1:], skipped=1)

    # 2. long values through the vocabulary and the encoder ---------------------------------------
    def through_vocabulary(fmt, r):
        n = 8192 + int(r.integers(0, 3000))
        rows = table(fmt, r, n)
        longs = {}
        for _ in range(int(r.integers(1, 4))):
            at = int(r.integers(0, n))
            value = str(r.choice(["v", "\u00e9"])) * int(r.integers(10_000, MAX_CELL_CHARS + 1))
            rows[at] = (rows[at][0], rows[at][1], value)
            longs[at] = value
        path = write(fmt, new_path(f"vocab.{fmt}"), rows)
        field = columns_of(fmt)[1]

        def run():
            data = load(path, format=fmt, progress=False, min_count=1, fractions=(1.0, 0.0, 0.0), chunk_size=8192,
                        **LABEL_KW.get(fmt, {}))
            vocab = data.encoder.vocabularies[field]
            got, start = [], 0
            for chunk in reader_for(path, fmt).chunks(8192):
                ids = data.encoder.encode(chunk.features)[field]
                got += [(start + i, vocab.token(int(ids[i]))) for i in range(len(ids)) if start + i in longs]
                start += len(ids)
            return [(i, t) for i, t in got], type("S", (), {"skipped": 0})()

        judge("long values through the vocabulary", run, bound=100 * MB, path=path,
              rows=sorted(longs.items()), skipped=0, seconds=300)

    # 3. many long cells: the chunk's text budget ---------------------------------------------------
    def many_long_cells(fmt, r):
        n = int(r.integers(900, 1300))
        alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
        pool = [alphabet[r.integers(0, 26, MAX_CELL_CHARS - 64)].tobytes().decode() for _ in range(8)]
        spec = [(int(r.integers(0, 2)), int(r.integers(0, 8)), int(r.integers(0, 8))) for _ in range(n)]
        row = lambda i: (spec[i][0], pool[spec[i][1]] + str(i), pool[spec[i][2]] + str(i))  # noqa: E731
        path = new_path(f"many.{fmt}")
        with open(path, "w") as fh:  # line by line: the table is never held whole
            if header_lines(fmt):
                fh.write("label,a,b\n")
            for i in range(n):
                fh.write(line_of(fmt, i, row(i)) + "\n")

        def run():
            a_col, b_col = columns_of(fmt)
            reader = reader_for(path, fmt)
            start, same = 0, True
            for chunk in reader.chunks(8192):
                a_vals, b_vals, labels = chunk.features[a_col], chunk.features[b_col], chunk.labels
                for i in range(len(labels)):
                    same = same and (int(labels[i]), a_vals[i], b_vals[i]) == row(start + i)
                start += len(labels)
                del chunk, a_vals, b_vals, labels
            return [start, same], reader.stats

        judge(f"many long cells in {fmt} (a chunk's text budget)", run, bound=128 * MB, path=path, rows=[n, True],
              skipped=0, seconds=300)

    # 4. an endless line ------------------------------------------------------------------------------
    def endless_line(fmt, r):
        base = fmt.split(".")[0]
        path = new_path(f"endless.{base}")
        if fmt.endswith(".gz") or r.integers(0, 3) == 0:
            size = int(r.integers(MAX_RECORD_BYTES + 1, 512 * MB))
            path += ".gz"
            comp = zlib.compressobj(1, zlib.DEFLATED, 31)
            with open(path, "wb") as fh:
                block = bytes([int(r.integers(97, 123))]) * MB
                left = size
                while left > 0:
                    fh.write(comp.compress(block[:min(left, MB)]))
                    left -= MB
                fh.write(comp.flush())
        else:
            size = int(r.integers(MAX_RECORD_BYTES + 1, 64 * MB))
            alphabet = np.frombuffer(b"abcdefghij ,;:|", np.uint8)
            with open(path, "wb") as fh:
                fh.write(alphabet[r.integers(0, len(alphabet), size)].tobytes())
        judge("one endless line (no line breaks)", lambda: read_rows(path, fmt), bound=TEXT_BOUND, path=path,
              error=(1, ["is longer than", "MAX_RECORD_BYTES"]), seconds=120)

    # 5. special files ---------------------------------------------------------------------------------
    SPECIALS = ("FIFO", "link to a FIFO", "link to /dev/zero", "link to /dev/urandom", "link to /dev/null",
                "folder", "link to a folder", "socket", "FIFO second in a list", "FIFO swapped in between passes",
                "FIFO or device as a side file")

    def special(fmt, r):
        base = fmt.split(".")[0]
        what = str(r.choice(SPECIALS))
        if what == "FIFO or device as a side file" and base not in ("libsvm", "mind"):
            what = "FIFO"
        folder = new_path("special")
        os.makedirs(folder)
        real = os.path.realpath
        target = os.path.join(folder, f"data.{base}" + (".gz" if fmt.endswith(".gz") else ""))
        fifo, phrase = None, None
        kw = {}
        good = write(fmt, os.path.join(folder, f"good.{base}"), table(fmt, r, 5))
        if what in ("FIFO", "FIFO second in a list"):
            os.mkfifo(target)
            fifo, phrase = target, "a named pipe (FIFO)"
        elif what == "link to a FIFO":
            fifo = os.path.join(folder, "pipe")
            os.mkfifo(fifo)
            os.symlink(fifo, target)
            phrase = f"a link to {real(fifo)}, which is a named pipe (FIFO)"
        elif what.startswith("link to /dev/"):
            device = what.split()[-1]
            os.symlink(device, target)
            phrase = f"a link to {real(device)}, which is a character device"
        elif what == "folder":
            os.makedirs(target)
            phrase = "a folder"
        elif what == "link to a folder":
            os.symlink(folder, target)
            phrase = f"a link to {real(folder)}, which is a folder"
        elif what == "socket":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(target)
            sock.close()
            phrase = "a socket"
        elif what == "FIFO swapped in between passes":
            target = good
            reader = reader_for(good, fmt)
            sum(len(c) for c in reader.chunks(64))
            os.remove(good)
            os.mkfifo(good)
            fifo, phrase = good, "a named pipe (FIFO)"
            return judge(f"special file: {what}", lambda: (list(reader.chunks(64)), reader.stats), bound=TEXT_BOUND,
                         path=good, error=(None, [phrase, "not a regular file"]), seconds=20, fifo=fifo)
        else:  # side file
            side = os.path.join(folder, "news.tsv" if base == "mind" else "fields.map")
            device = str(r.choice(["fifo", "/dev/zero", "/dev/urandom"]))
            if device == "fifo":
                os.mkfifo(side)
                fifo, phrase = side, "a named pipe (FIFO)"
            else:
                os.symlink(device, side)
                phrase = f"a link to {real(device)}, which is a character device"
            if base == "libsvm":
                kw["field_map"] = side
            target = side
            return judge(f"special file: {what}", lambda: read_rows(good, fmt, **kw), bound=TEXT_BOUND, path=side,
                         error=(None, [phrase, "not a regular file"]), seconds=20, fifo=fifo)
        paths = [good, target] if what == "FIFO second in a list" else target
        return judge(f"special file: {what}", lambda: read_rows(paths, fmt), bound=TEXT_BOUND, path=target,
                     error=(None, [phrase, "not a regular file"]), seconds=20, fifo=fifo)

    # 6. integers around and beyond 2**53 --------------------------------------------------------------
    def big_int(r, unsigned=False):
        pool = [MAX_EXACT_INT, MAX_EXACT_INT + 1, MAX_EXACT_INT + 2 * int(r.integers(1, 2**40)) + 1, 2**63 - 1,
                int(r.integers(0, 2**62)) * 2 + 1]
        if unsigned:
            pool += [2**64 - 1, 2**63 + int(r.integers(0, 2**62))]
        else:
            pool += [-MAX_EXACT_INT, -MAX_EXACT_INT - 1, -(2**63), -int(r.integers(2**53, 2**62))]
        return int(r.choice(np.array(pool, dtype=object)))

    def large_ids(fmt, r):
        base = fmt.split(".")[0]
        n = int(r.integers(3, 30))
        at = int(r.integers(0, n))
        on_error = str(r.choice(["raise", "skip"]))
        if base in ("parquet", "tfrecord"):
            unsigned = base == "parquet" and bool(r.integers(0, 2))
            role = str(r.choice(["number", "id (categorical)", "label", "label with a threshold"]))
            ids = [int(r.integers(0, 1000)) for _ in range(n)]
            labels = [int(r.integers(0, 2)) for _ in range(n)]
            value = big_int(r, unsigned)
            thr = None
            if role.startswith("label"):
                labels[at] = value
                if role == "label with a threshold":
                    thr = float(value + int(r.integers(-3, 4)))
                    if unsigned and thr < 0:
                        thr = 0.0
            else:
                ids[at] = value
            path = new_path(f"ids.{base}")
            if base == "parquet":
                typ = pa.uint64() if unsigned else pa.int64()
                arr = pa.array(ids, typ)
                if r.integers(0, 2):
                    arr = arr.dictionary_encode()
                pq.write_table(pa.table({"label": pa.array(labels, typ), "id": arr,
                                         "c": [f"c{i % 3}" for i in range(n)]}), path)
            else:
                with tf.io.TFRecordWriter(path) as writer:
                    for i in range(n):
                        writer.write(tf.train.Example(features=tf.train.Features(feature={
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
                            "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[ids[i]])),
                            "c": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"c{i % 3}".encode()]))
                        })).SerializeToString())
            kw = {"categorical": ["id"]} if role == "id (categorical)" else {}
            if thr is not None:
                kw["label_threshold"] = thr

            def run():
                reader = open_reader(path, base, label="label", on_error=on_error, **kw)
                out = []
                for chunk in reader.chunks(16):
                    out += list(zip(chunk.labels.tolist(), chunk.features["id"].tolist()))
                return out, reader.stats

            def label_of(v):
                return float(v >= thr) if thr is not None else float(v == 1)

            def id_of(v):
                return str(v) if role == "id (categorical)" else float(v)

            bad = ((role == "number" and abs(value) > MAX_EXACT_INT)
                   or (role == "label" and value not in (0, 1, -1)))
            want = [(label_of(labels[i]), id_of(ids[i])) for i in range(n) if not (bad and i == at)]
            kind = f"{base} int64 beyond 2**53 as {role}"
            if bad and on_error == "raise":
                frag = [f"column 'id': the integer {value}"] if role == "number" else [f"label {value} is not 0/1"]
                return judge(kind, run, bound=TEXT_BOUND, path=path, error=(at + 1, frag))
            return judge(kind, run, bound=TEXT_BOUND, path=path, rows=want, skipped=int(bad))
        # text formats: ids are text (every digit kept); a numeric text column is a decimal -> nearest float64
        rows = table(fmt, r, n)
        value = str(big_int(r, unsigned=bool(r.integers(0, 2))))
        if base == "libsvm":
            value = value.lstrip("-")
        rows[at] = (rows[at][0], rows[at][1], value)
        path = write(fmt, new_path(f"ids.{base}"), rows)
        judge(f"text id beyond 2**53 ({base})", lambda: read_rows(path, fmt, on_error), bound=TEXT_BOUND, path=path,
              rows=rows, skipped=0)
        if base == "csv" and not fmt.endswith(".gz"):
            counts = [(y, a, str(int(r.integers(0, 10**6)))) for y, a, _ in rows]
            counts[at] = (counts[at][0], counts[at][1], value)
            num_path = write(fmt, new_path("counts.csv"), counts)

            def run_numeric():
                reader = open_reader(num_path, "csv", label="label", numeric=["b"], on_error=on_error)
                out = []
                for chunk in reader.chunks(16):
                    out += [(int(y), b) for y, b in zip(chunk.labels.tolist(), chunk.features["b"].tolist())]
                return out, reader.stats

            judge("text count beyond 2**53 (csv numeric: the nearest float64)", run_numeric, bound=TEXT_BOUND,
                  path=num_path, rows=[(y, float(b)) for y, _, b in counts], skipped=0)

    # 7. TFRecord headers claiming huge records ----------------------------------------------------------
    def tfrecord_header(r):
        n = int(r.integers(1, 20))
        at = int(r.integers(0, n + 1))
        compression = str(r.choice(["", "GZIP", "ZLIB"]))
        crafted = bool(r.integers(0, 4))  # else a garbage header

        def record(payload):
            head = struct.pack("<Q", len(payload))
            return head + struct.pack("<I", _masked_crc(head)) + payload + struct.pack("<I", _masked_crc(payload))

        rows = table("tfrecord", r, n)
        payloads = [tf.train.Example(features=tf.train.Features(feature={
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[y])),
            "a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.encode()])),
            "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b.encode()]))})).SerializeToString()
            for y, a, b in rows]
        claimed = int(r.choice(np.array([MAX_RECORD_BYTES + 1, 2**31, 2**40, 2**63, 2**64 - 1], dtype=object)))
        if not crafted:
            claimed = int(r.integers(MAX_RECORD_BYTES + 1, 2**63))
        head = struct.pack("<Q", claimed)
        head += struct.pack("<I", _masked_crc(head) if crafted else int(r.integers(0, 2**32)))
        blob = b"".join(record(p) for p in payloads[:at]) + head + r.bytes(int(r.integers(0, 200)))
        blob += b"".join(record(p) for p in payloads[at:])
        path = new_path("claims.tfrecord")
        if compression == "GZIP":
            blob, path = gz.compress(blob), path + ".gz"
        elif compression == "ZLIB":
            blob = zlib.compress(blob)
        with open(path, "wb") as fh:
            fh.write(blob)
        kw = {"compression": compression} if compression == "ZLIB" else {}
        kind = "TFRecord header claiming a huge record" + ("" if crafted else " (garbage header)")
        frag = ["header claims"] if crafted else []
        if at == 0:  # the first record unreadable: no features to discover, refused in either mode
            on_error = str(r.choice(["raise", "skip"]))
            return judge(kind, lambda: read_rows(path, "tfrecord", on_error, **kw), bound=TEXT_BOUND, path=path,
                         error=(1, frag))
        if r.integers(0, 2):
            return judge(kind, lambda: read_rows(path, "tfrecord", **kw), bound=TEXT_BOUND, path=path,
                         error=(at + 1, frag))
        return judge(kind, lambda: read_rows(path, "tfrecord", "skip", **kw), bound=TEXT_BOUND, path=path,
                     rows=rows[:at], skipped=1)

    for trial in range(trials):
        for fmt in FORMATS6:
            for _ in range(3):
                huge_cell(fmt, rng)
            special(fmt, rng)
            for _ in range(4 if fmt in ("parquet", "tfrecord") else 1):  # numbers, ids, labels, thresholds
                large_ids(fmt, rng)
            if fmt not in ("parquet", "tfrecord"):
                endless_line(fmt, rng)
        for fmt in ("criteo", "csv", "parquet", "tfrecord"):
            through_vocabulary(fmt, rng)
        for fmt in ("criteo", "csv", "mind"):
            many_long_cells(fmt, rng)
        for _ in range(4):
            tfrecord_header(rng)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
    print("class 6 peak memory per kind (MB): " + "; ".join(f"{k}: {v / MB:.0f}" for k, v in sorted(peaks.items())),
          file=sys.stderr)


def class7_loading_bounds(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 7: hostile and careless ``.keras`` files given to ``tfmec.io.load_model``: decompression
    bombs in config.json, metadata.json, assets and weights; config.json with millions of values or deep
    nesting; assets over the bound; tens of thousands of members; duplicated, escaping, encrypted or
    unsupported members; central-directory sizes that lie; HDF5 weights declaring gigabytes, stored
    outside the file or linking elsewhere; truncated or bit-flipped archives; FIFOs, devices, folders and
    empty files. Each must be refused with ``UnsafeModelError`` naming the file, within a memory bound
    (Python allocations below 160 MB, tracemalloc) and a time limit (60 s); controls (the untouched files,
    a re-zipped copy with deflate, a small asset) must load and answer as before."""
    import struct
    import tracemalloc
    import zipfile

    import h5py

    from tfmec.backend import keras as K
    from tfmec.io import UnsafeModelError, save_model
    from tfmec.models import DeepFM

    root = os.path.join(workdir, "class7")
    os.makedirs(root)
    inp = K.Input((3,), name="x")
    dense = K.Model(inp, K.layers.Dense(1, activation="sigmoid", name="d")(inp))
    schema = Schema([Field("I1", NUMERIC), Field("C1", CATEGORICAL, vocab_size=50),
                     Field("C2", CATEGORICAL, vocab_size=9)])
    deepfm = DeepFM(schema, embedding_dim=4, hidden_units=(8,), seed=0)
    bases = {"dense": (save_model(dense, os.path.join(root, "dense.keras")), dense,
                       np.ones((4, 3), np.float32)),
             "deepfm": (save_model(deepfm, os.path.join(root, "deepfm.keras")), deepfm,
                        {"I1": np.ones(4, np.float32), "C1": np.arange(4, dtype=np.int32),
                         "C2": np.arange(4, dtype=np.int32)})}
    MEMORY_BOUND = 160 << 20
    counter = [0]

    def new_path(tag):
        counter[0] += 1
        return os.path.join(root, f"{counter[0]}-{tag}.keras")

    def rebuild(src, replace=None, extra=(), compression=zipfile.ZIP_STORED, tag="x"):
        dst = new_path(tag)
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", compression=compression) as out:
            for name in a.namelist():
                out.writestr(name, (replace or {}).get(name, a.read(name)))
            for name, data in extra:
                out.writestr(name, data)
        return dst

    def patch_central(path, member, offset, fmt, value):
        """Overwrites a field of ``member``'s central-directory entry (offset from the entry's start)."""
        blob = bytearray(open(path, "rb").read())
        at = 0
        while True:
            at = blob.find(b"PK\x01\x02", at)
            if at < 0:
                raise ValueError(member)
            n = struct.unpack_from("<H", blob, at + 28)[0]
            if blob[at + 46: at + 46 + n].decode() == member:
                struct.pack_into(fmt, blob, at + offset, value)
                break
            at += 4
        with open(path, "wb") as fh:
            fh.write(bytes(blob))
        return path

    def weights_edit(src, edit):
        with zipfile.ZipFile(src) as a:
            buf = io.BytesIO(a.read("model.weights.h5"))
        with h5py.File(buf, "a") as h5:
            edit(h5)
        return rebuild(src, {"model.weights.h5": buf.getvalue()}, tag="h5")

    def config_of(src):
        return json.loads(zipfile.ZipFile(src).read("config.json"))

    def hostile(kind, path, harmless=None):
        """``harmless``: ``(model, x)`` when the change may leave every byte read intact (a size field that
        overstates a member: zipfile reads the member's real bytes and checks their CRC); loading with the
        model's predictions is then the right answer."""
        tracemalloc.start()
        try:
            with time_limit(60):
                got = load_model(path)
            if harmless is not None and np.allclose(np.asarray(got(harmless[1])), np.asarray(harmless[0](harmless[1])),
                                                    atol=1e-6):
                outcome, detail = "answered", "loaded with the same predictions (the bytes read were intact)"
            else:
                outcome, detail = "silent", "loaded"
        except Hang as exc:
            outcome, detail = "hang", str(exc)
        except UnsafeModelError as exc:
            outcome, detail = ("clean" if path in str(exc) and clean_message(str(exc)) else "silent"), str(exc)
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if outcome in ("clean", "answered", "silent") and peak > MEMORY_BOUND:
            outcome, detail = "unbounded", f"peak {peak / 2**20:.0f} MB: {detail}"
        tally.add(kind, outcome, f"{os.path.basename(path)}: {detail[:300]}")
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)

    def control(kind, path, model, x):
        try:
            with time_limit(120):
                loaded = load_model(path)
            ok = np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
            tally.add(kind, "answered" if ok else "silent", "different predictions")
        except Exception as exc:  # noqa: BLE001
            tally.add(kind, "silent" if isinstance(exc, UnsafeModelError) else "traceback",
                      f"refused a good file: {type(exc).__name__}: {exc}")

    for trial in range(trials):
        for name, (src, model, x) in bases.items():
            r = np.random.default_rng([seed, trial, len(name)])
            control("control: untouched file", src, model, x)
            control("control: re-zipped with deflate", rebuild(src, compression=zipfile.ZIP_DEFLATED, tag="deflate"),
                    model, x)
            note = r.bytes(int(r.integers(1, 1 << 20)))
            control("control: a small asset", rebuild(src, extra=[("assets/note.txt", note)]), model, x)
            raw = json.dumps(config_of(src)).encode()
            pad = int(r.integers(33, 129)) << 20
            hostile("config.json bomb (deflated blanks)",
                    rebuild(src, {"config.json": raw + b" " * pad}, compression=zipfile.ZIP_DEFLATED, tag="cbomb"))
            hostile("config.json over the bound, stored",
                    rebuild(src, {"config.json": raw + b" " * ((32 << 20) + int(r.integers(1, 1 << 20)))}, tag="cbig"))
            values = int(r.integers(2_000_001, 4_000_000))
            hostile("config.json with millions of values", rebuild(src, {"config.json": b"[" + b"0," * values + b"0]"}))
            depth = int(r.integers(201, 200_000))
            opener, closer = (b"[", b"]") if r.integers(0, 2) else (b'{"a":', b"}")
            hostile("config.json nested deeply",
                    rebuild(src, {"config.json": opener * depth + b"1" + closer * depth}, tag="deep"))
            hostile("metadata.json bomb", rebuild(src, {"metadata.json": b"{" + b" " * (int(r.integers(2, 65)) << 20)
                                                        + b"}"}, compression=zipfile.ZIP_DEFLATED, tag="mbomb"))
            n_assets = int(r.integers(1, 5))
            each = ((64 << 20) // n_assets) + int(r.integers(1 << 10, 8 << 20))
            blob = r.bytes(each)
            hostile("assets over the bound (incompressible)",
                    rebuild(src, extra=[(f"assets/{i}.bin", blob) for i in range(n_assets)], tag="assets"))
            del blob
            hostile("assets bomb (deflated zeros)",
                    rebuild(src, extra=[("assets/z.bin", bytes(int(r.integers(65, 400)) << 20))],
                            compression=zipfile.ZIP_DEFLATED, tag="abomb"))
            members = int(r.integers(10_001, 30_000))
            hostile("tens of thousands of members",
                    rebuild(src, extra=[(f"assets/{i}", b"") for i in range(members)], tag="many"))
            twice = str(r.choice(["config.json", "metadata.json", "model.weights.h5"]))
            with warnings_suppressed():
                dup = rebuild(src, extra=[(twice, b"{}")], tag="dup")
            hostile("a member stored twice", dup)
            escape = str(r.choice(["assets/../../evil.py", "/etc/cron.d/x", "assets/..\\..\\x", "C:/x",
                                   "assets/a/../../../b"]))
            hostile("an escaping member name", rebuild(src, extra=[(escape, b"x")], tag="escape"))
            hostile("weights bomb (deflated)",
                    rebuild(src, {"model.weights.h5": zipfile.ZipFile(src).read("model.weights.h5")
                                  + bytes(int(r.integers(150, 400)) << 20)},
                            compression=zipfile.ZIP_DEFLATED, tag="wbomb"))
            secret = os.path.join(root, "secret.bin")
            with open(secret, "wb") as fh:
                fh.write(b"s" * 4096)
            edits = {
                "HDF5 dataset stored outside the file": lambda h5: h5.create_dataset(
                    f"x{r.integers(100)}", shape=(1024,), dtype="float32", external=[(secret, 0, 4096)]),
                "HDF5 external link": lambda h5: h5.__setitem__("elsewhere", h5py.ExternalLink(secret, "/x")),
                "HDF5 soft link": lambda h5: h5.__setitem__("alias", h5py.SoftLink("/nowhere")),
                "HDF5 dataset declaring gigabytes": lambda h5: h5.create_dataset(
                    "huge", shape=(int(r.integers(1, 64)) << 20, 1024), dtype="float32", chunks=(1024, 1024),
                    compression="gzip"),
                "HDF5 with hundreds of thousands of objects": lambda h5: [h5.create_group(f"g{i}") for i in
                                                                          range(100_001)],
            }
            for kind, edit in edits.items():
                if kind.startswith("HDF5 with hundreds") and trial:  # slow to build: once
                    continue
                hostile(kind, weights_edit(src, edit))
            hostile("weights not HDF5", rebuild(src, {"model.weights.h5": b"\x89HDF\r\n\x1a\n" + r.bytes(
                int(r.integers(10, 5000)))}, tag="garbage"))
            member = str(r.choice(["config.json", "metadata.json", "model.weights.h5"]))
            size = zipfile.ZipFile(src).getinfo(member).file_size
            lie = int(r.choice([1, size // 2, size + 1, size * 1000, 2**32 - 1]))
            hostile("a central directory size that lies", patch_central(rebuild(src, tag="lie"), member, 24, "<I", lie),
                    harmless=(model, x) if lie > size else None)
            hostile("an encrypted member", patch_central(rebuild(src, tag="enc"), member, 8, "<H", 1))
            hostile("an unsupported compression", patch_central(rebuild(src, tag="comp"), member, 10, "<H",
                                                                int(r.choice([1, 6, 97, 98, 99]))))
            blob = open(src, "rb").read()
            cut = new_path("cut")
            with open(cut, "wb") as fh:
                fh.write(blob[: int(r.integers(1, len(blob)))])
            hostile("a truncated archive", cut)
            flipped = bytearray(blob)
            for _ in range(int(r.integers(1, 4))):
                flipped[int(r.integers(0, len(flipped)))] ^= 1 << int(r.integers(0, 8))
            bits = new_path("bits")
            with open(bits, "wb") as fh:
                fh.write(bytes(flipped))
            tracemalloc.start()
            try:  # bit rot may hit a byte nobody reads (zip padding, an unused HDF5 byte): then it loads
                with time_limit(60):
                    got = load_model(bits)
                same = np.allclose(np.asarray(got(x)), np.asarray(model(x)), atol=1e-6)
                tally.add("bit flips", "answered" if same else "silent", "loaded with other predictions")
            except UnsafeModelError as exc:
                tally.add("bit flips", "clean" if bits in str(exc) else "silent", str(exc)[:300])
            except Hang as exc:
                tally.add("bit flips", "hang", str(exc))
            except Exception as exc:  # noqa: BLE001
                tally.add("bit flips", "traceback", f"{type(exc).__name__}: {exc}")
            finally:
                tracemalloc.stop()
        special = os.path.join(root, f"fifo-{trial}.keras")
        os.mkfifo(special)
        hostile("a FIFO", special)
        link = os.path.join(root, f"zero-{trial}.keras")
        os.symlink("/dev/zero", link)
        hostile("a link to /dev/zero", link)
        os.remove(link)
        folder = os.path.join(root, f"folder-{trial}.keras")
        os.makedirs(folder)
        hostile("a folder", folder)
        empty = new_path("empty")
        open(empty, "wb").close()
        hostile("an empty file", empty)


@contextlib.contextmanager
def warnings_suppressed():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def class8_full_disks(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 8: full disks and I/O errors. Simulated: every writer (codes pair, .keras, JSON, report,
    SavedModel export, training and stage-1 checkpoints) fails after a seeded number of bytes with
    ENOSPC, EDQUOT, EIO or EROFS, or with one of TensorFlow's errors inside the write; it must raise one
    line naming the path (``ArtifactWriteError``) and leave the earlier artifact loadable. Real: ``tfmec
    run`` into a tmpfs of seeded size (mounted when the process may mount) holding a complete earlier run;
    it must exit 0 with a complete run or exit 2 with one ``tfmec: error:`` line naming a path on the full
    disk, and every artifact of the earlier run must still load."""
    import builtins
    import errno as E

    from tfmec.atomic import ArtifactWriteError, write_json_atomic
    from tfmec.backend import keras as K
    from tfmec.data import load_vocabularies
    from tfmec.io import save_model
    from tfmec.mec import learn_codes
    from tfmec.mec.codes import CodeSet, FieldCodes
    from tfmec.report import write_report
    from tfmec.training import compile_ctr, fit_early_stopping

    rng = np.random.default_rng(seed)
    root = os.path.join(workdir, "class8")
    os.makedirs(root)
    codes_of = {"ENOSPC": E.ENOSPC, "EDQUOT": E.EDQUOT, "EIO": E.EIO, "EROFS": E.EROFS}

    @contextlib.contextmanager
    def failing_disk(under, budget, code):
        """Writes under ``under`` fail with ``code`` after ``budget`` bytes; fsync fails once it is spent."""
        real_open, real_fsync = builtins.open, os.fsync
        left = [budget]

        class Limited(io.FileIO):
            def write(self, data):
                view = memoryview(data).cast("B")
                if len(view) > left[0]:
                    n = super().write(view[: left[0]]) if left[0] else 0
                    left[0] = 0
                    if n:
                        return n
                    raise OSError(code, os.strerror(code))
                left[0] -= len(view)
                return super().write(data)

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and \
                    os.path.abspath(os.fsdecode(os.fspath(file))).startswith(under):
                raw = Limited(os.fspath(file), mode.replace("b", "").replace("t", ""))
                buffered = io.BufferedWriter(raw)
                return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=kwargs.get("encoding"))
            return real_open(file, mode, *args, **kwargs)

        def fake_fsync(fd):
            if left[0] == 0:
                raise OSError(code, os.strerror(code))
            return real_fsync(fd)

        builtins.open, os.fsync = fake_open, fake_fsync
        try:
            yield
        finally:
            builtins.open, os.fsync = real_open, real_fsync

    tf_errors = [("ResourceExhaustedError", "{{function_node __wrapped__SaveV2}} /x/part-0.tempstate1; No space "
                                            "left on device [Op:SaveV2]"),
                 ("UnknownError", "/x/variables.data-00000-of-00001; Input/output error [Op:SaveV2]"),
                 ("PermissionDeniedError", "/x/ckpt-1.index.tempstate; Permission denied"),
                 ("FailedPreconditionError", "/x; Read-only file system"),
                 ("DataLossError", "writing /x: short write [Op:MergeV2Checkpoints]")]

    def raise_tf(name, message):
        def fail(*args, **kwargs):
            raise getattr(tf.errors, name)(None, None, message)
        return fail

    def expect_error(kind, fault, fn, path_prefix, check_previous):
        """Runs a failing write; classifies its error and whether the earlier artifact survived."""
        try:
            with time_limit(300):
                fn()
            outcome, detail = "answered", "fit"
        except ArtifactWriteError as exc:
            text = str(exc)
            ok = "\n" not in text and text.startswith("cannot write ") and path_prefix in text and clean_message(text)
            outcome, detail = ("clean" if ok else "silent"), text
        except Hang as exc:
            outcome, detail = "hang", str(exc)
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"
        tally.add(kind, outcome, f"{fault}: {detail}"[:300])
        try:
            problem = check_previous()
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            tally.add(kind, "lost", str(problem)[:300])

    inp = K.Input((3,), name="x")
    dense = K.Model(inp, K.layers.Dense(1, activation="sigmoid", name="d")(inp))
    x = np.ones((2, 3), np.float32)
    data = load("synthetic", rows=800, seed=0, batch_size=256, progress=False)
    for trial in range(trials):
        folder = os.path.join(root, f"sim-{trial}")
        os.makedirs(folder)
        r = np.random.default_rng([seed, trial])

        def codes(s):
            g = np.random.default_rng(s)
            return CodeSet({f"t{i}": FieldCodes(f"t{i}", g.integers(0, 8, (int(g.integers(5, 400)), 2)),
                                                g.normal(size=(2, 8, 2))) for i in range(int(g.integers(1, 4)))},
                           config={"seed": int(s)})

        for case in range(10):
            code_name = str(r.choice(list(codes_of)))
            code = codes_of[code_name]
            old, new = codes(int(r.integers(10**6))), codes(int(r.integers(10**6)))
            path = os.path.join(folder, f"codes{case}")
            old.save(path)
            budget = int(r.integers(0, sum(os.path.getsize(path + e) for e in (".npz", ".json")) + 100))

            def previous_codes(path=path, old=old, new=new):
                got = CodeSet.load(path)
                if got.config not in (old.config, new.config):
                    return "the codes pair loads neither the old nor the new codes"
                return None

            with failing_disk(folder, budget, code):
                expect_error("codes pair (CodeSet.save)", code_name, lambda: new.save(path), path, previous_codes)

        for case in range(6):
            code_name = str(r.choice(list(codes_of)))
            path = os.path.join(folder, f"m{case}.keras")
            save_model(dense, path)
            want = np.asarray(dense(x))

            def previous_model(path=path, want=want):
                return None if np.allclose(np.asarray(load_model(path)(x)), want) else "other predictions"

            with failing_disk(folder, int(r.integers(0, os.path.getsize(path))), codes_of[code_name]):
                expect_error("model.keras (save_model)", code_name, lambda: save_model(dense, path), path,
                             previous_model)

        for case in range(6):
            code_name = str(r.choice(list(codes_of)))
            path = os.path.join(folder, f"metrics{case}.json")
            write_json_atomic(path, {"v": 1, "pad": "x" * 500})

            def previous_json(path=path):
                return None if json.load(open(path))["v"] in (1, 2) else "metrics.json changed"

            with failing_disk(folder, int(r.integers(0, 500)), codes_of[code_name]):
                expect_error("metrics / vocabulary JSON", code_name,
                             lambda: write_json_atomic(path, {"v": 2, "pad": "y" * 600}), path, previous_json)

        report_dir = os.path.join(folder, "report")
        metrics = {"dataset": "x", "rows": 1, "runs": [{"method": "baseline", "model": "lr", "test_auc": 0.7,
                                                          "test_logloss": 0.5, "embedding_bytes": 8, "model_bytes": 9}]}
        write_report(metrics, report_dir)
        code_name = str(r.choice(list(codes_of)))
        with failing_disk(report_dir, int(r.integers(0, 2000)), codes_of[code_name]):
            expect_error("report.md and figures", code_name, lambda: write_report(metrics, report_dir), report_dir,
                         lambda: None if os.path.getsize(os.path.join(report_dir, "report.md")) > 0 else "empty report")

        base = os.path.join(folder, "sm")
        first = export.saved_model(dense, base)
        name, message = tf_errors[int(r.integers(0, len(tf_errors)))]
        real_save = tf.saved_model.save
        tf.saved_model.save = raise_tf(name, message)
        try:
            expect_error("SavedModel export (TensorFlow's error)", name, lambda: export.saved_model(dense, base), base,
                         lambda: None if export.existing_versions(base) == [1] and
                         os.path.isfile(os.path.join(first, "saved_model.pb")) and
                         not [n for n in os.listdir(base) if n != "1"] else f"versions {os.listdir(base)}")
        finally:
            tf.saved_model.save = real_save

        code_name = str(r.choice(list(codes_of)))
        with failing_disk(base, int(r.integers(0, 1500)), codes_of[code_name]):  # the Python-written metadata
            expect_error("SavedModel export (metadata)", code_name, lambda: export.saved_model(dense, base), base,
                         lambda: None if 1 in export.existing_versions(base) and
                         os.path.isfile(os.path.join(first, "saved_model.pb")) and
                         all(n.isdigit() for n in os.listdir(base)) else f"versions {os.listdir(base)}")

        for what in ("training checkpoint", "stage-1 checkpoint"):
            name, message = tf_errors[int(r.integers(0, len(tf_errors)))]
            ck = os.path.join(folder, f"ck-{what.split()[0]}")
            real = tf.train.CheckpointManager.save
            tf.train.CheckpointManager.save = raise_tf(name, message)
            try:
                if what == "training checkpoint":
                    model = compile_ctr(__import__("tfmec").models.LR(data.schema, seed=0), 1e-2)
                    fn = (lambda model=model, ck=ck: fit_early_stopping(
                        model, data.train_stream, data.valid, epochs=1, patience=1, verbose=0, checkpoint_dir=ck))
                else:
                    table = {"t": np.random.default_rng(trial).normal(size=(200, 4)).astype(np.float32)}
                    fn = (lambda table=table, ck=ck: learn_codes(table, num_subspaces=2, num_codewords=8, epochs=1,
                                                                 batch_size=128, progress=False, checkpoint_dir=ck))
                expect_error(f"{what} (TensorFlow's error in SaveV2)", name, fn, ck, lambda: None)
            finally:
                tf.train.CheckpointManager.save = real

    # real full disks: tmpfs mounts of seeded sizes
    mount = os.path.join(root, "disk")
    os.makedirs(mount)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], capture_output=True).returncode != 0:
        tally.add("tfmec run on a real full disk (tmpfs)", "clean", "not run: this process may not mount")
        return
    subprocess.run(["umount", mount], check=True)

    def command(out, ck):
        return ["run", "--data", "synthetic", "--rows", "3000", "--model", "deepfm", "--embedding-dim", "4",
                "--method", "none,mec", "--epochs", "1", "--stage1-epochs", "1", "--codewords", "16",
                "--batch-size", "512", "--quiet", "--seed", "0", "--out", out, "--checkpoint-dir", ck]

    reference = os.path.join(root, "reference")
    code, err, exc = run_cli(command(reference, os.path.join(root, "reference-ck")))
    if code != 0:
        tally.add("tfmec run on a real full disk (tmpfs)", "traceback", f"reference run: {exc!r} {err[-300:]}")
        return
    def pages(folder):  # what a folder takes on tmpfs: whole 4 kB pages per file and folder
        return sum(4096 * (1 + sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) for f in fs))
                   for d, _, fs in os.walk(folder))

    run_bytes, ck_bytes = pages(reference), pages(os.path.join(root, "reference-ck"))

    def artifacts_problems(out):
        """What of the earlier (reference) run no longer loads in ``out``."""
        problems = []
        for method in ("baseline", "mec"):
            try:
                load_model(os.path.join(out, method, "model.keras"))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{method}/model.keras: {exc}")
        try:
            CodeSet.load(os.path.join(out, "mec", "codes"))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"codes: {exc}")
        for name in ("metrics.json",):
            try:
                json.load(open(os.path.join(out, name)))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{name}: {exc}")
        try:
            load_vocabularies(os.path.join(out, "vocabulary.json"))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"vocabulary.json: {exc}")
        for method in ("baseline", "mec"):
            sm = os.path.join(out, method, "saved_model")
            if 1 not in export.existing_versions(sm) or not os.path.isfile(os.path.join(sm, "1", "saved_model.pb")):
                problems.append(f"{method}/saved_model/1 missing")
            if any(not n.isdigit() and not n.startswith(".tmp-") for n in os.listdir(sm)):
                problems.append(f"{method}/saved_model: {os.listdir(sm)}")
        return problems

    for trial in range(trials):
        for case in range(3):
            extra = int(rng.uniform(0.0, 1.1) * (run_bytes + ck_bytes))
            size_kb = max(64, (run_bytes + extra) // 1024 + 1)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", mount], check=True)
            try:
                out, ck = os.path.join(mount, "out"), os.path.join(mount, "ck")
                shutil.copytree(reference, out)
                code, err, exc = run_cli(command(out, ck))
                kind = "tfmec run on a real full disk (tmpfs)"
                line = one_error_line(err)
                if isinstance(exc, Hang):
                    tally.add(kind, "hang", str(exc))
                elif exc is not None:
                    tally.add(kind, "traceback", f"{size_kb} kB: {type(exc).__name__}: {exc}")
                elif code == 0:
                    problems = artifacts_problems(out)
                    tally.add(kind, "answered" if not problems else "silent", f"{size_kb} kB: {problems[:2]}")
                elif code == 2 and line and mount in line:
                    tally.add(kind, "clean", line)
                else:
                    tally.add(kind, "silent", f"{size_kb} kB: rc {code}: {err[-400:]}")
                problems = artifacts_problems(out)
                if problems:
                    tally.add(kind, "lost", f"{size_kb} kB: {problems[:3]}")
            finally:
                subprocess.run(["umount", "-l", mount], check=False)


def argparse_refusal(stderr: str) -> bool:
    """True for argparse's own clear refusal of a flag value (``tfmec run: error: argument --x: invalid
    int value: 'inf'``, after the usage), with no traceback."""
    return "Traceback" not in stderr and any(
        line.startswith("tfmec run: error: argument --") for line in stderr.splitlines())


def class1_settings_that_train_garbage(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 1: numeric settings out of type or finiteness, from flags and from ``--config`` alike
    (a seeded numeric setting of ``RunConfig`` each time, with a seeded bad value: inf, -inf, nan, 1e400,
    a number as a string, a list, null, a bool, a dict), and learning rates large enough to turn the loss
    into NaN. Each must end with exit 2 and one ``tfmec: error:`` line naming the flag, before
    metrics.json exists; a run that exits 0 counts as silent unless its metrics are all finite (and it was
    given no bad value)."""
    from tfmec.experiment import RunConfig
    from tfmec.settings import kind as _kind

    rng = np.random.default_rng(seed)
    base = ["run", "--data", "synthetic", "--rows", "1500", "--model", "fm", "--method", "none", "--epochs", "1",
            "--batch-size", "256", "--quiet", "--no-export"]
    skip = {"rows", "epochs", "batch_size", "verbose"}  # set by the base command's flags (--quiet: verbose)
    fields = RunConfig.setting_fields()
    numeric = [name for name, f in fields.items() if _kind(f.type)[0] in ("int", "float")]
    flag_values = ["inf", "-inf", "nan", "1e400", "-1e999", "+inf", "NaN"]
    config_values = [float("inf"), float("-inf"), float("nan"), "12", [1], None, True, "1e-3", {"a": 1}]

    def judge(kind, args, out, flag):
        code, err, exc = run_cli(args, seconds=300)
        if isinstance(exc, Hang):
            tally.add(kind, "hang", " ".join(args))
        elif exc is not None or "Traceback" in err:
            tally.add(kind, "traceback", f"{' '.join(args)}: {exc!r} {err[-300:]}")
        elif code == 2 and (one_error_line(err) or argparse_refusal(err)) and not os.path.exists(
                os.path.join(out, "metrics.json")):
            tally.add(kind, "clean" if (flag is None or flag in err) else "silent", err.strip()[-200:])
        elif code == 0:
            metrics = json.load(open(os.path.join(out, "metrics.json")))
            finite = all(np.isfinite(r.get("test_auc", np.nan)) and np.isfinite(r.get("test_logloss", np.nan))
                         for r in metrics["runs"])
            tally.add(kind, "answered" if finite and flag is None else "silent", f"{' '.join(args)} exited 0")
        else:
            tally.add(kind, "silent", f"{' '.join(args)}: exit {code}: {err[-200:]}")

    for t in range(max(1, trials) * 6):
        name = numeric[int(rng.integers(len(numeric)))]
        flag = "--" + name.replace("_", "-")
        if name not in skip:
            out = os.path.join(workdir, f"c1-flag-{t}")
            value = flag_values[int(rng.integers(len(flag_values)))]
            judge("non-finite flag value", base + ["--out", out, f"{flag}={value}"], out, flag)
        if name in ("rows", "verbose"):  # the config command sets these by flag, which wins over the file
            continue
        out = os.path.join(workdir, f"c1-config-{t}")
        config = os.path.join(workdir, f"c1-config-{t}.json")
        bad = config_values[int(rng.integers(len(config_values)))]
        if bad is None and "| None" in str(fields[name].type):
            bad = "none"  # null is a valid value of an optional setting
        with open(config, "w") as fh:
            fh.write(json.dumps({name: bad}))  # inf and nan as Infinity / NaN, which Python's json reads back
        args = ["run", "--data", "synthetic", "--rows", "1500", "--model", "fm", "--method", "none", "--quiet",
                "--no-export", "--out", out, "--config", config]
        judge("config value of the wrong type", args, out, flag)
    for t in range(max(1, trials)):
        lr = float(10 ** rng.uniform(20, 37))
        out = os.path.join(workdir, f"c1-nan-{t}")
        judge("learning rate that turns the loss into NaN",
              base + ["--out", out, "--learning-rate", f"{lr:.3g}", "--epochs", "2"], out, None)


def class4_two_runs_one_folder(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 4: two ``tfmec run`` into one ``--out`` at once (the second started at a seeded moment while
    the first may hold the folder). The result must be one complete run (its metrics from one seed) and
    one exit 2 naming the folder; both exiting 0 while overlapping, or a folder mixing the runs, is silent.
    A second run that starts after the first has finished may overwrite it, as documented."""
    rng = np.random.default_rng(seed)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for t in range(max(1, trials) * 2):
        out = os.path.join(workdir, f"c4-{t}")
        seeds = (10 + t, 20 + t)
        cmds = [[sys.executable, "-m", "tfmec.cli", "run", "--data", "synthetic", "--rows", "2000", "--model", "fm",
                 "--method", "none", "--epochs", "1", "--batch-size", "256", "--quiet", "--no-export", "--seed",
                 str(s), "--out", out] for s in seeds]
        first = subprocess.Popen(cmds[0], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(float(rng.uniform(0.0, 6.0)))
        second = subprocess.Popen(cmds[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            results = [p.communicate(timeout=600) + (p.returncode,) for p in (first, second)]
        except subprocess.TimeoutExpired:
            for p in (first, second):
                p.kill()
            tally.add("concurrent runs into one --out", "hang", out)
            continue
        codes = sorted(r[2] for r in results)
        errs = [r[1] for r in results]
        if any("Traceback" in e for e in errs):
            tally.add("concurrent runs into one --out", "traceback", " | ".join(e[-300:] for e in errs))
            continue
        metrics_path = os.path.join(out, "metrics.json")
        kept = json.load(open(metrics_path))["seed"] if os.path.exists(metrics_path) else None
        loser_ok = any(r[2] == 2 and "is being written by another tfmec run" in r[1] for r in results)
        winners = [s for s, r in zip(seeds, results) if r[2] == 0]
        if codes == [0, 2] and loser_ok and winners == [kept]:
            tally.add("concurrent runs into one --out", "clean", f"seed {kept} kept")
        elif codes == [0, 0] and kept == seeds[1]:
            tally.add("second run after the first had finished", "answered", "both finished in turn")
        else:
            tally.add("concurrent runs into one --out", "silent", f"exit codes {codes}, metrics of seed {kept}")


def class5_serving_shapes(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 5: requests of the wrong rank or with mismatched batch sizes sent to the exported
    SavedModel's ``serving_default`` (in-graph, as TF Serving passes them) and to ``predict_saved_model``:
    each must be refused naming the input or the batch sizes; an answer with another number of rows
    than the request, or a broadcast field, is silent."""
    from tfmec.models import DeepFM

    rng = np.random.default_rng(seed)
    data = load(SyntheticCTR(rows=600, seed=1, vocab_sizes=[20, 30], num_numeric=1),
                Schema([Field("I1", NUMERIC), Field("C1", CATEGORICAL), Field("C2", CATEGORICAL)]),
                batch_size=128, progress=False)
    model = DeepFM(data.schema, embedding_dim=4, seed=0)
    x, _ = next(iter(data.train))
    model(x)
    version = export.saved_model(model, os.path.join(workdir, "c5-sm"), data.encoder)
    serving = tf.saved_model.load(version).signatures["serving_default"]
    raw = {"I1": np.array([1.5, 2.0, 0.0], np.float32), "C1": np.array(["a", "b", "c"]),
           "C2": np.array(["x", "y", "z"])}
    for _ in range(max(1, trials) * 15):
        n = int(rng.integers(2, 6))
        bad = {k: np.resize(v, n) for k, v in raw.items()}
        name = list(raw)[int(rng.integers(len(raw)))]
        mutation = int(rng.integers(4))
        if mutation == 0:
            bad[name], kind = bad[name].reshape(n, 1), "[n, 1] input to a [batch] signature"
        elif mutation == 1:
            bad[name], kind = np.resize(bad[name], (n, int(rng.integers(2, 4)))), "[n, k] input to a [batch] signature"
        elif mutation == 2:
            bad[name], kind = np.resize(bad[name], n + int(rng.integers(1, 4))), "inputs of different batch sizes"
        else:
            bad[name], kind = bad[name][:1], "a 1-row field beside n-row fields"
        for where in ("signature", "predict_saved_model"):
            try:
                with time_limit(60):
                    if where == "signature":
                        out = serving(**{k: tf.constant(v) for k, v in bad.items()})["probability"].numpy()
                    else:
                        out = export.predict_saved_model(version, bad)
                tally.add(f"{kind} ({where})", "silent", f"answered {np.asarray(out).shape}")
            except Hang as exc:
                tally.add(f"{kind} ({where})", "hang", str(exc))
            except (tf.errors.InvalidArgumentError, ValueError) as exc:
                message = str(exc)
                named = name in message or "batch" in message
                tally.add(f"{kind} ({where})", "clean" if named else "silent", message[:200])
            except Exception as exc:  # noqa: BLE001 - anything else is a traceback for the user
                tally.add(f"{kind} ({where})", "traceback", repr(exc)[:300])


def class9_degenerate_runs(tally: ClassTally, trials: int, seed: int, workdir: str) -> None:
    """Class 9: runs that work but cannot mean what their numbers say: the same file given twice (by path,
    through a link, as a copy) and MEC at a codebook size no table can afford. Each must exit 0 WITH a
    ``warning:`` line and the warning in metrics.json; exit 0 without one is silent."""
    rng = np.random.default_rng(seed)

    def write_csv(path, rows, r, categories):
        a, b = r.integers(0, categories, rows), r.integers(0, categories, rows)
        y = ((a + b) % 3 == 0).astype(int)
        with open(path, "w") as fh:
            fh.write("y,a,b\n" + "".join(f"{yy},a{aa},b{bb}\n" for yy, aa, bb in zip(y, a, b)))
        return path

    common = ["--format", "csv", "--label", "y", "--model", "lr", "--epochs", "1", "--batch-size", "256", "--quiet",
              "--no-export"]
    for t in range(max(1, trials)):
        r = np.random.default_rng(int(rng.integers(1 << 30)))
        data = write_csv(os.path.join(workdir, f"c9-{t}.csv"), int(r.integers(1500, 3000)), r,
                         int(r.integers(300, 3000)))
        link = os.path.join(workdir, f"c9-{t}-link.csv")
        os.symlink(data, link)
        copy = os.path.join(workdir, f"c9-{t}-copy.csv")
        shutil.copyfile(data, copy)
        small = write_csv(os.path.join(workdir, f"c9-{t}-small.csv"), 600, r, int(r.integers(2, 8)))
        cases = [("the same file twice", f"{data},{data}", "none", "given twice"),
                 ("a file and a link to it", f"{data},{link}", "none", "given twice"),
                 ("a file and a copy of it", f"{data},{copy}", "none", "same content"),
                 ("MEC that quantises no table", small, "mec", "quantised no table")]
        for kind, paths, method, expect in cases:
            out = os.path.join(workdir, f"c9-{t}-{kind.replace(' ', '_')}")
            args = ["run", "--data", paths, "--method", method, "--stage1-epochs", "1", "--out", out, *common]
            code, err, exc = run_cli(args, seconds=600)
            if isinstance(exc, Hang):
                tally.add(kind, "hang", paths)
            elif exc is not None or "Traceback" in err:
                tally.add(kind, "traceback", f"{exc!r} {err[-300:]}")
            elif code == 0:
                warnings = json.load(open(os.path.join(out, "metrics.json"))).get("warnings", [])
                ok = "warning: " in err and any(expect in w for w in warnings)
                tally.add(kind, "clean" if ok else "silent", "; ".join(warnings)[:300] or "no warning")
            else:
                tally.add(kind, "silent", f"exit {code}: {err[-200:]}")


ISSUE18_CLASSES = {  # class number -> (title, generator)
    1: ("Settings that train garbage and exit 0", class1_settings_that_train_garbage),
    2: ("Resume against other data", class2_resume_against_other_data),
    3: ("Artifacts that TF Serving cannot read", class3_artifact_modes),
    4: ("Two runs, one folder", class4_two_runs_one_folder),
    5: ("Serving shapes not enforced", class5_serving_shapes),
    6: ("Readers without bounds", class6_readers_without_bounds),
    7: ("Loading before the guards", class7_loading_bounds),
    8: ("Full disks and I/O errors", class8_full_disks),
    9: ("Degenerate runs that look fine", class9_degenerate_runs),
}


def issue18_markdown(result: dict) -> str:
    lines = ["| class | kind of member | cases | clear error | answered as documented | silent wrong | tracebacks | "
             "hangs | lost artifacts | over memory bound |", "|---|---|---|---|---|---|---|---|---|---|"]
    for number, entry in sorted(result["classes"].items(), key=lambda kv: int(kv[0])):
        for kind, c in entry["counts"].items():
            cases = sum(c[k] for k in ISSUE18_OUTCOMES if k != "lost")
            lines.append(f"| {number} | {kind} | {cases:,} | {c['clean']:,} | {c['answered']:,} | {c['silent']} | "
                         f"{c['traceback']} | {c['hang']} | {c['lost']} | {c['unbounded']} |")
        t = entry["totals"]
        lines.append(f"| **{number}** | **{entry['title']}** ({entry['seconds']:.0f}s) | **{t['cases']:,}** | "
                     f"{t['clean']:,} | {t['answered']:,} | **{t['silent']}** | **{t['traceback']}** | "
                     f"**{t['hang']}** | **{t['lost']}** | **{t['unbounded']}** |")
    return "\n".join(lines)


def run_issue18(classes: list, trials: int, seed: int, results: str) -> int:
    """Runs the generators of ``classes`` and merges their numbers into ``results`` (a JSON file shared by
    every class: each run replaces only the classes it ran)."""
    workdir = tempfile.mkdtemp(prefix="tfmec-issue18-")
    ran: dict = {}
    failures = 0
    try:
        for number in classes:
            title, generator = ISSUE18_CLASSES[number]
            tally = ClassTally()
            t0 = time.perf_counter()
            generator(tally, trials, seed + 100 * number, workdir)
            seconds = time.perf_counter() - t0
            totals = tally.totals()
            print(f"class {number}: {totals} ({seconds:.0f}s)", file=sys.stderr, flush=True)
            for example in tally.examples[:10]:
                print(f"  class {number}: {example}", file=sys.stderr)
            failures += sum(totals[k] for k in ("silent", "traceback", "hang", "lost", "unbounded"))
            ran[str(number)] = {"title": title, "counts": tally.counts, "totals": totals,
                                "seconds": round(seconds, 1), "trials": trials, "seed": seed,
                                "keras": KERAS_MODE, "examples": tally.examples}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    for entry in ran.values():
        entry["commit"] = commit.strip()
    try:  # read only now: other classes' runs may have written the file meanwhile
        previous = json.load(open(results)) if os.path.exists(results) else {}
    except (OSError, ValueError):
        previous = {}
    out = {"classes": {**dict(previous.get("classes", {})), **ran}, "commit": commit.strip()}
    os.makedirs(os.path.dirname(results), exist_ok=True)
    with open(results, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)
    print(issue18_markdown(out))
    print(f"\nwrote {results}")
    return 0 if failures == 0 else 1


# ----------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    lines = ["| area | kind of input | inputs tried | clear error | answered as documented | wrong answers |",
             "|---|---|---|---|---|---|"]
    for area, kinds in result["inputs"].items():
        for kind, c in kinds.items():
            tried = sum(c.values())
            lines.append(f"| {area} | {kind} | {tried:,} | {c['error']:,} | {c['answered']:,} | "
                         f"{c['wrong'] + c['crash']} |")
    t = result["totals"]
    lines.append(f"| **all** | | **{t['inputs']:,}** | {t['error']:,} | {t['answered']:,} | "
                 f"**{t['wrong_answers_inputs']}** |")
    lines += ["", "| fault (SIGKILL, then the same command again) | faults injected | models lost | wrong answers |"
                  " what happened |", "|---|---|---|---|---|"]
    for name, f in result["faults"].items():
        lines.append(f"| {name} | {f['injected']} | {f['models_lost']} | {f['wrong_answers']} | {f['detail']} |")
    lines.append(f"| **all** | **{t['faults']}** | **{t['models_lost']}** | **{t['wrong_answers_faults']}** | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="mutated files per format and kind (and scale of "
                                                               "the id and request campaigns)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per training fault")
    parser.add_argument("--write-kills", type=int, default=4, help="SIGKILLs per write fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out the tfmec run kills (the slowest)")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "reliability.json"))
    parser.add_argument("--issue18", default=None, metavar="CLASSES",
                        help="run only the seeded generators of these issue-18 classes (comma-separated, e.g. 2,3,7,8) "
                             "and merge their numbers into bench/results/reliability_issue18.json")
    parser.add_argument("--trials18", type=int, default=2, help="trials per issue-18 generator (default 2)")
    args = parser.parse_args(argv)
    if args.issue18:
        classes = [int(c) for c in args.issue18.split(",") if c.strip()]
        unknown = sorted(set(classes) - set(ISSUE18_CLASSES))
        if unknown:
            parser.error(f"no generator for issue-18 class(es) {unknown}; have {sorted(ISSUE18_CLASSES)}")
        return run_issue18(classes, args.trials18, args.seed,
                           os.path.join(ROOT, "bench", "results", "reliability_issue18.json"))
    t0 = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="tfmec-reliability-")
    tally = Tally()
    timings = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        value = fn(*a)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]}s", file=sys.stderr, flush=True)
        return value

    try:
        timed("readers", campaign_readers, tally, args.trials, args.seed, workdir)
        timed("quantized ids", campaign_quantized_ids, tally, args.trials, args.seed)
        timed("command line", campaign_cli, tally, workdir)
        timed("serving", campaign_serving, tally, args.trials, args.seed, workdir)
        faults = {
            "MEC stage 1, killed at random steps": timed("stage 1 kills", kill_restart_training, "stage1", args.kills,
                                                        args.seed + 1, workdir),
            "MEC stage-2 fit, killed at random steps": timed("stage 2 kills", kill_restart_training, "fit", args.kills,
                                                            args.seed + 2, workdir),
        }
        if not args.skip_pipeline:
            faults["tfmec run --method none,mec --checkpoint-dir, killed at random instants"] = timed(
                "pipeline kills", kill_restart_pipeline, min(args.kills, 2), args.seed + 3, workdir)
        faults["SavedModel export, killed inside a version"] = timed(
            "export kills", kill_writes, "savedmodel", args.write_kills, args.seed + 4, workdir)
        faults["model.keras + vocabulary.json + metrics.json, killed inside a write"] = timed(
            "file kills", kill_writes, "files", args.write_kills, args.seed + 5, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    counts = tally.counts
    flat = [c for kinds in counts.values() for c in kinds.values()]
    totals = {"inputs": sum(sum(c.values()) for c in flat), "error": sum(c["error"] for c in flat),
              "answered": sum(c["answered"] for c in flat),
              "wrong_answers_inputs": sum(c["wrong"] + c["crash"] for c in flat),
              "faults": sum(f["injected"] for f in faults.values()),
              "models_lost": sum(f["models_lost"] for f in faults.values()),
              "wrong_answers_faults": sum(f["wrong_answers"] for f in faults.values())}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    result = {"keras": KERAS_MODE, "commit": commit.strip(), "seed": args.seed, "trials": args.trials,
              "kills": args.kills, "write_kills": args.write_kills, "seconds": round(time.perf_counter() - t0, 1),
              "timings": timings, "inputs": counts, "faults": faults, "totals": totals,
              "wrong_examples": tally.examples}
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(markdown(result))
    print(f"\n{totals['inputs']:,} inputs, {totals['faults']} faults in {result['seconds']:.0f}s; wrote {args.results}")
    for example in tally.examples[:20]:
        print("WRONG:", example, file=sys.stderr)
    return 0 if totals["wrong_answers_inputs"] + totals["wrong_answers_faults"] + totals["models_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
