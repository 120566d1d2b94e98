"""The fault campaign of issue 10: bad input everywhere it enters, and SIGKILLs everywhere state is written.

    python bench/reliability.py                      # ~10 minutes on 2 CPU cores
    python bench/reliability.py --trials 3 --kills 1 # a quick pass

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
    args = parser.parse_args(argv)
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
