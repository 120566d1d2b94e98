"""Issue 18, class 6: readers without bounds.

Memory stays bounded by the chunk size whatever a cell holds (object arrays all the way to the
vocabulary, a maximum cell length, a maximum line / record length, a per-chunk text budget); a named
pipe, a device, a socket or a folder is refused before it is opened (also behind a link, also when it
replaces a file after the reader was built); typed integers beyond 2**53 and every other bad record are
refused naming the file, the record (line / row) and the column.
"""
from __future__ import annotations

import gzip
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tfmec.data import DataError, Vocabulary, open_reader
from tfmec.data.readers import base as readers_base
from tfmec.data.readers import parquet as parquet_module
from tfmec.data.readers import text as text_module
from tfmec.data.readers.base import MAX_CELL_CHARS, MAX_EXACT_INT, MAX_RECORD_BYTES
from tfmec.data.readers.tfrecord import _masked_crc

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORMATS = ("criteo", "csv", "avazu", "libsvm", "mind", "parquet", "tfrecord")
LABELLED = {"csv": {"label": "label"}, "parquet": {"label": "label"}, "tfrecord": {"label": "label"}}
BIG = 2**53 + 1  # the first integer float64 cannot hold


# ----------------------------------------------------------------------------------- writers
def criteo_line(label="1", cats=None) -> str:
    cats = ["68fd1e64"] * 26 if cats is None else cats
    return "\t".join([label, *(["3"] * 13), *cats])


def write_format(fmt: str, path, rows: int = 20, cell: str | None = None, at: int = 5) -> str:
    """A small valid ``fmt`` file of ``rows`` rows (at most 3 different values per column); with ``cell``,
    row ``at`` (0-based) holds ``cell`` as its second categorical value. Returns the path (for MIND the
    behaviors file, with no news.tsv next to it)."""
    path = pathlib.Path(path)
    v = lambda i: cell if (cell is not None and i == at) else f"v{i % 3}"  # noqa: E731
    if fmt == "criteo":
        text = "\n".join(criteo_line(str(i % 2), ["a"] + [v(i)] + ["b"] * 24) for i in range(rows))
    elif fmt == "csv":
        text = "\n".join(["label,a,b"] + [f"{i % 2},a,{v(i)}" for i in range(rows)])
    elif fmt == "avazu":
        text = "\n".join(["id,click,hour,C1,site_id"] + [f"{i},{i % 2},14102113,a,{v(i)}" for i in range(rows)])
    elif fmt == "libsvm":
        # the cell of a libSVM file is the whole "index:value" token
        digits = lambda i: ("7" * (len(cell) - 2)) if (cell is not None and i == at) else str(10 + i % 3)  # noqa: E731
        text = "\n".join(f"{i % 2} 1:1 {digits(i)}:1" for i in range(rows))
    elif fmt == "mind":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "behaviors.tsv"
        text = "\n".join(f"{i}\t{v(i)}\t11/11/2019 9:05:58 AM\tN1 N2\tN3-{i % 2}" for i in range(rows))
    elif fmt == "parquet":
        pq.write_table(pa.table({"label": [i % 2 for i in range(rows)], "a": ["a"] * rows,
                                 "b": [v(i) for i in range(rows)]}), path)
        return str(path)
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(rows):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                    "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[v(i).encode()]))})).SerializeToString())
        return str(path)
    else:  # pragma: no cover
        raise ValueError(fmt)
    path.write_text(text + "\n")
    return str(path)


def read(path, fmt, chunk_size=64, **kw):
    reader = open_reader(path, fmt, **{**LABELLED.get(fmt, {}), **kw})
    chunks = list(reader.chunks(chunk_size))
    return reader, chunks


def mind_reader(path, **kw):
    return open_reader(path, "mind", **kw)


# ----------------------------------------------------------------------------------- (a) memory
MEMORY_CHILD = r'''
import gc, json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from tfmec.data import load, open_reader

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None

def release():
    """Hands freed memory back to the system (glibc, arrow's pool), so that one case's leftovers do not
    hide the next case's allocations from the RSS peak."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        import pyarrow
        pyarrow.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass

def reset_peak():
    """Resets the kernel's peak-RSS mark (VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return status("VmHWM") is not None
    except OSError:
        return False

def read(path, fmt, kw):
    reader = open_reader(path, fmt, on_error="skip", **kw)
    rows = sum(len(c) for c in reader.chunks(8192))
    return {"rows": rows, "skipped": reader.stats.skipped, "examples": reader.stats.examples[:2]}

def vocabulary(path, fmt, kw):
    data = load(path, format=fmt, progress=False, min_count=1, fractions=(1.0, 0.0, 0.0), chunk_size=8192)
    ids = []
    for chunk in open_reader(path, fmt).chunks(8192):
        ids.append(int(data.encoder.encode(chunk.features)["C2"].max()))
    return {"rows": sum(data.rows.values()), "vocab": data.encoder.vocabularies["C2"].size, "max_id": max(ids)}

cases = json.loads(sys.argv[1])
out = {}
for name, (kind, path, warm, fmt, kw) in cases.items():
    run = read if kind == "read" else vocabulary
    run(warm, fmt, kw)  # imports, first-call allocations
    release()
    exact = reset_peak()
    base = status("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = run(path, fmt, kw)
    peak = status("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out[name] = dict(result, peak_mb=round(peak - base, 1), exact=exact)
print("RESULT " + json.dumps(out))
'''

#: Peak memory over the baseline allowed for reading a file with one 50 MB cell, per format. Text
#: readers read at most MAX_RECORD_BYTES (16 MiB) of a line before refusing it and then read past it in
#: 1 MiB pieces; the TFRecord reader refuses the record from its header and never reads it. A Parquet
#: cell can only be reached through the Parquet library, which decompresses and decodes the page that
#: holds it (about 4 x 50 MB); tfmec refuses the cell before making a Python string of it. Before the
#: fix, the categorical value went into a fixed-width NumPy array of rows x longest value (8192 x 50 MB x 4
#: bytes = 1.6 TB asked for: MemoryError).
BOUND_50MB_MB = {"criteo": 100, "criteo .gz": 100, "csv": 100, "avazu": 100, "libsvm": 100, "mind": 100,
                 "tfrecord": 100, "parquet": 300}
#: Peak memory allowed for building the vocabulary of, and encoding, 10,000 Criteo rows of which one holds
#: a 100,000-character value (just under MAX_CELL_CHARS): before the fix an 8192-row chunk became a
#: fixed-width array of 8192 x 100,000 x 4 bytes = 3.3 GB; now the values stay Python strings.
BOUND_VOCABULARY_MB = 100


def test_peak_memory_on_a_file_with_one_50mb_cell_stays_within_the_stated_bound(tmp_path):
    cell = "x" * (50 * 2**20)
    cases = {}
    for fmt in FORMATS:
        big = write_format(fmt, tmp_path / f"big-{fmt}", rows=30, cell=cell)
        warm = write_format(fmt, tmp_path / f"warm-{fmt}", rows=30)
        cases[fmt] = ("read", big, warm, fmt, LABELLED.get(fmt, {}))
    gz = tmp_path / "big.txt.gz"
    gz.write_bytes(gzip.compress(pathlib.Path(cases["criteo"][1]).read_bytes(), 6))
    cases["criteo .gz"] = ("read", str(gz), cases["criteo"][2], "criteo", {})
    lines = [criteo_line(str(i % 2), ["a", "v" * 100_000 if i == 7 else f"k{i % 50}"] + ["b"] * 24)
             for i in range(10_000)]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(lines) + "\n")
    cases["vocabulary"] = ("vocabulary", str(vocab_file), cases["criteo"][2], "criteo", {})

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(cases)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line[len("RESULT "):])
    print("peak MB over the baseline:", {name: r["peak_mb"] for name, r in got.items()})  # shown with -s
    for name, bound in BOUND_50MB_MB.items():
        r = got[name]
        assert r["peak_mb"] < bound, (name, r)
        if name == "tfrecord":  # a record whose header claims too much ends the file (rows before it kept)
            assert r["rows"] == 5 and r["skipped"] == 1, (name, r)
        else:  # the one bad row skipped, every other row read
            assert r["rows"] == 29 and r["skipped"] == 1, (name, r)
        assert "MAX_" in r["examples"][0] and ("line 6" in r["examples"][0] or "line 7" in r["examples"][0]), r
    v = got["vocabulary"]
    assert v["peak_mb"] < BOUND_VOCABULARY_MB, v
    assert v["rows"] == 10_000 and v["vocab"] == 52 and v["max_id"] == 51, v  # 50 keys, the long value, OOV


def test_vocabulary_counts_and_looks_up_long_values_without_a_fixed_width_copy():
    import tracemalloc

    values = np.array([f"k{i % 7}" for i in range(8192)], dtype=object)
    values[3] = "v" * 100_000
    vocab = Vocabulary("C", min_count=1)
    tracemalloc.start()
    try:
        vocab.update(values)
        vocab.finalize()
        ids = vocab.lookup(values)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # a fixed-width copy would be 8192 x 100,000 x 4 bytes = 3.3 GB
    assert vocab.size == 9 and vocab.token(int(ids[3])) == "v" * 100_000
    assert [vocab.token(int(i)) for i in ids[:8]] == list(values[:8])
    # non-string values become text as numpy's astype(str) makes it (bytes decoded, numbers as str)
    odd = np.array([b"ab", 5, 1.5, None, np.int64(7)], dtype=object)
    v2 = Vocabulary("o", min_count=1)
    v2.update(odd)
    v2.finalize()
    assert sorted(v2.tokens) == sorted(odd.astype(str).tolist())
    assert (v2.lookup(odd.astype(str)) == v2.lookup(odd)).all()


# ----------------------------------------------------------------------------------- (a) cell and line limits
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_cell_over_the_limit_is_a_bad_row_naming_file_line_and_column(fmt, tmp_path):
    ok = write_format(fmt, tmp_path / "ok", cell="y" * MAX_CELL_CHARS)  # exactly the limit: read as written
    reader, chunks = read(ok, fmt)
    col = {"libsvm": "f1", "mind": "user_id", "avazu": "site_id", "criteo": "C2"}.get(fmt, "b")
    values = [v for c in chunks for v in c.features[col]]
    want = "7" * (MAX_CELL_CHARS - 2) if fmt == "libsvm" else "y" * MAX_CELL_CHARS
    assert values[5] == want and len(values) == 20

    bad = write_format(fmt, tmp_path / "bad", cell="y" * (MAX_CELL_CHARS + 1))
    where = {"csv": 7, "avazu": 7}.get(fmt, 6)  # a header line first
    column = {"libsvm": "f1", "mind": "user_id", "avazu": "site_id", "criteo": "C2"}.get(fmt, "b")
    pattern = (rf"{bad}, line {where}: column '{column}': the value holds 131,073 characters; "
               r"a cell may hold at most 131,072")
    with pytest.raises(DataError, match=pattern):
        read(bad, fmt)
    reader, chunks = read(bad, fmt, on_error="skip")
    assert sum(len(c) for c in chunks) == 19 and reader.stats.skipped == 1


def test_the_cell_limit_holds_when_the_process_raised_the_csv_field_limit(tmp_path):
    """csv.field_size_limit is process-wide: a program that raised it still gets the documented limit."""
    import csv

    bad = write_format("csv", tmp_path / "bad", cell="y" * (MAX_CELL_CHARS + 1))
    previous = csv.field_size_limit(2**30)
    try:
        with pytest.raises(DataError, match=rf"{bad}, line 7: column 'b': the value holds 131,073 characters"):
            read(bad, "csv")
    finally:
        csv.field_size_limit(previous)


@pytest.mark.parametrize("fmt", ["criteo", "csv", "avazu", "libsvm", "mind"])
def test_a_line_over_the_record_limit_is_refused_without_reading_it_whole(fmt, tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "MAX_RECORD_BYTES", 2000)
    monkeypatch.setattr(text_module, "_DRAIN", 64)
    bad = write_format(fmt, tmp_path / "bad", cell="z" * 5000)
    where = 7 if fmt in ("csv", "avazu") else 6
    with pytest.raises(DataError, match=rf"{bad}, line {where}: the line is longer than 2,000 bytes"):
        read(bad, fmt)
    reader, chunks = read(bad, fmt, on_error="skip")
    assert sum(len(c) for c in chunks) == 19 and reader.stats.skipped == 1
    # a line without any line break (a file of one endless line) is refused the same way
    endless = tmp_path / f"endless-{fmt}"
    endless.write_bytes(b"q" * 100_000)
    if fmt == "mind":
        with pytest.raises(DataError, match=rf"{endless}, line 1: the line is longer than 2,000 bytes"):
            list(mind_reader(str(endless)).chunks(8))
    elif fmt in ("csv", "avazu", "libsvm"):
        with pytest.raises(DataError, match=rf"{endless}, line 1: (cannot read the header: )?the line is longer"):
            read(str(endless), fmt)
    else:
        with pytest.raises(DataError, match=rf"{endless}, line 1: the line is longer than 2,000 bytes"):
            read(str(endless), fmt)


def test_a_csv_record_running_over_many_lines_is_bounded_too(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "MAX_RECORD_BYTES", 2000)
    path = tmp_path / "quote.csv"
    body = ["label,a", "1,x", '0,"never closed'] + ["more text of the quoted field, line after line"] * 200
    path.write_text("\n".join(body + ["1,y"]) + "\n")
    with pytest.raises(DataError, match=rf"{path}, line 3: the record is longer than 2,000 bytes"):
        read(str(path), "csv")
    reader, chunks = read(str(path), "csv", on_error="skip")
    assert [v for c in chunks for v in c.features["a"]][0] == "x" and reader.stats.skipped >= 1


def test_chunks_end_early_at_the_text_budget_and_rows_stay_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "MAX_CHUNK_CHARS", 5000)
    monkeypatch.setattr(text_module, "LONG_RECORD", 10)  # every record counts (normally those over 4096 chars)
    monkeypatch.setattr(parquet_module, "MAX_CHUNK_CHARS", 5000)
    for fmt in ("criteo", "parquet"):
        path = write_format(fmt, tmp_path / f"budget-{fmt}", rows=300, cell="w" * 3000, at=10)
        reader, chunks = read(path, fmt, chunk_size=1000)
        assert len(chunks) > 1, fmt
        rows = np.concatenate([c.row_index for c in chunks])
        assert (rows == np.arange(300)).all(), fmt
        col = "C2" if fmt == "criteo" else "b"
        values = [v for c in chunks for v in c.features[col]]
        assert values[10] == "w" * 3000 and values[11] == "v2", fmt


def test_error_messages_do_not_echo_a_long_cell(tmp_path):
    path = tmp_path / "label.txt"
    path.write_text(criteo_line(label="9" * 100_000) + "\n")
    with pytest.raises(DataError, match=rf"{path}, line 1: label '9+'\.\.\. \(100,000 characters\) is not 0/1") as info:
        read(str(path), "criteo")
    assert len(str(info.value)) < 300


# ----------------------------------------------------------------------------------- (b) special files
def _rescue_after(fifo: str, seconds: float) -> threading.Timer:
    """If a reader blocks opening ``fifo`` (the bug), opens its writing end after ``seconds`` so that the
    reader gets an empty file instead of hanging the test run forever."""
    def rescue():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    timer = threading.Timer(seconds, rescue)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_fifo_is_refused_at_once_never_waited_on(fmt, tmp_path):
    fifo = str(tmp_path / "data.fifo")
    os.mkfifo(fifo)
    link = str(tmp_path / "link-to-fifo")
    os.symlink(fifo, link)
    for path, what in ((fifo, r"a named pipe \(FIFO\)"), (link, rf"a link to {fifo}, which is a named pipe \(FIFO\)")):
        timer = _rescue_after(fifo, 20)
        t0 = time.monotonic()
        try:
            with pytest.raises(DataError, match=rf"{path}: the data path is {what}, not a regular file"):
                read(path, fmt) if fmt != "mind" else list(mind_reader(path).chunks(8))
        finally:
            timer.cancel()
        assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_link_to_dev_zero_a_folder_and_a_socket_are_refused(fmt, tmp_path):
    zero = str(tmp_path / "zero")
    os.symlink("/dev/zero", zero)
    folder = str(tmp_path / "folder")
    os.mkdir(folder)
    sock_path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    try:
        for path, what in ((zero, "a link to /dev/zero, which is a character device"), (folder, "a folder"),
                           (sock_path, "a socket")):
            with pytest.raises(DataError, match=rf"{path}: the data path is {what}, not a regular file"):
                read(path, fmt) if fmt != "mind" else list(mind_reader(path).chunks(8))
    finally:
        sock.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_special_file_swapped_in_after_the_reader_was_built_is_refused(fmt, tmp_path):
    """The check runs again when each pass opens the file: a FIFO put in the file's place between two
    passes is refused without blocking (text files are opened non-blocking and checked on the open file)."""
    path = write_format(fmt, tmp_path / "swap")
    if fmt == "mind":
        path_reader = mind_reader(path)
    else:
        path_reader = open_reader(path, fmt, **LABELLED.get(fmt, {}))
    assert sum(len(c) for c in path_reader.chunks(8)) == 20
    os.remove(path)
    os.mkfifo(path)
    timer = _rescue_after(path, 20)
    try:
        with pytest.raises(DataError, match=rf"{path}: the data path is a named pipe \(FIFO\)"):
            list(path_reader.chunks(8))
    finally:
        timer.cancel()


def test_open_regular_checks_the_opened_descriptor(tmp_path, monkeypatch):
    """Even when the path check is fooled (a FIFO appearing between os.stat and open), the open does not
    block and the descriptor's own type is refused."""
    fifo = str(tmp_path / "race.fifo")
    os.mkfifo(fifo)
    monkeypatch.setattr(text_module, "check_regular", lambda p: None)
    timer = _rescue_after(fifo, 20)
    try:
        with pytest.raises(DataError, match=rf"{fifo}: the data path is a named pipe"):
            text_module.open_regular(fifo)
    finally:
        timer.cancel()


def test_side_files_are_checked_too(tmp_path):
    """libSVM's field map and MIND's news.tsv (given, or found by news="auto") go through the same check."""
    svm = tmp_path / "d.svm"
    svm.write_text("1 3:1 7:1\n")
    fmap = str(tmp_path / "fields.map")
    os.mkfifo(fmap)
    with pytest.raises(DataError, match=rf"{fmap}: the data path is a named pipe"):
        open_reader(str(svm), "libsvm", field_map=fmap)
    behaviors = write_format("mind", tmp_path / "mind")
    news = str(pathlib.Path(behaviors).parent / "news.tsv")
    os.symlink("/dev/zero", news)
    with pytest.raises(DataError, match=rf"{news}: the data path is a link to /dev/zero"):
        mind_reader(behaviors)  # news="auto" finds it: refused, not silently left out
    assert mind_reader(behaviors, news=None).news is None


# ----------------------------------------------------------------------------------- (c) large ids
def test_parquet_int64_ids_beyond_2_53_are_refused_naming_file_column_and_row(tmp_path):
    path = str(tmp_path / "ids.parquet")
    pq.write_table(pa.table({"label": [0, 1, 1, 0], "id": pa.array([5, 6, BIG, -BIG], pa.int64()),
                             "c": ["a", "b", "c", "d"]}), path)
    with pytest.raises(DataError, match=rf"{path}, line 3: column 'id': the integer {BIG} lies beyond \+-2\*\*53.*"
                                        r"read it as categorical \(categorical=\['id'\]\)"):
        read(path, "parquet")
    reader, chunks = read(path, "parquet", on_error="skip")
    assert reader.stats.skipped == 2 and f"line 4: column 'id': the integer {-BIG}" in reader.stats.examples[1]
    assert list(chunks[0].features["id"]) == [5.0, 6.0]
    # read as categorical: every digit kept (also dictionary-encoded, also uint64)
    reader, (chunk,) = read(path, "parquet", categorical=["id"])
    assert list(chunk.features["id"]) == ["5", "6", str(BIG), str(-BIG)]
    pq.write_table(pa.table({"label": [0, 1], "id": pa.array([2**64 - 1, 3], pa.uint64()).dictionary_encode()}),
                   path)
    reader, (chunk,) = read(path, "parquet", categorical=["id"])
    assert list(chunk.features["id"]) == [str(2**64 - 1), "3"]
    with pytest.raises(DataError, match=rf"{path}, line 1: column 'id': the integer {2**64 - 1} lies beyond"):
        read(path, "parquet")
    # exactly 2**53 is still exact: read as a number
    pq.write_table(pa.table({"label": [0], "id": pa.array([MAX_EXACT_INT], pa.int64())}), path)
    reader, (chunk,) = read(path, "parquet")
    assert chunk.features["id"][0] == float(2**53)


def test_parquet_integer_labels_are_compared_exactly(tmp_path):
    path = str(tmp_path / "labels.parquet")
    pq.write_table(pa.table({"label": pa.array([0, BIG, 1, 2**64 - 1], pa.uint64()), "c": ["a", "b", "c", "d"]}), path)
    with pytest.raises(DataError, match=rf"{path}, line 2: label {BIG} is not 0/1"):
        read(path, "parquet")
    reader, (chunk,) = read(path, "parquet", on_error="skip")
    assert list(chunk.features["c"]) == ["a", "c"] and reader.stats.skipped == 2
    # with a threshold, beyond 2**53: float64 would round 2**53 + 3 up to the threshold 2**53 + 4
    pq.write_table(pa.table({"label": pa.array([2**53 + 3, 2**53 + 4, 2**53 + 5], pa.int64()), "c": ["a", "b", "c"]}),
                   path)
    reader, (chunk,) = read(path, "parquet", label_threshold=2**53 + 4)
    assert list(chunk.labels) == [0.0, 1.0, 1.0]


def test_parquet_library_errors_name_the_file_and_the_first_row_not_read(tmp_path):
    path = tmp_path / "broken.parquet"
    table = pa.table({"label": [i % 2 for i in range(2000)], "c": [f"value-{i}" for i in range(2000)]})
    pq.write_table(table, path, row_group_size=1000, compression="snappy", use_dictionary=False)
    blob = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata.row_group(1).column(1)
    start = meta.data_page_offset + 40
    blob[start:start + 200] = bytes(200)  # the second row group's values: zeroed
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=rf"{path}, line 1001: cannot read as Parquet from row 1001 on: "):
        read(str(path), "parquet", chunk_size=500)
    with pytest.raises(DataError, match=rf"{path}, line 1001: cannot read as Parquet"):  # not a bad row: raised
        read(str(path), "parquet", chunk_size=500, on_error="skip")


def test_tfrecord_int64_beyond_2_53_and_long_bytes_are_refused_naming_file_record_and_feature(tmp_path):
    path = str(tmp_path / "ids.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for label, ident, text in ((1, 5, b"a"), (0, BIG, b"b"), (1, 7, b"c" * (MAX_CELL_CHARS + 1)), (BIG, 8, b"d")):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[ident])),
                "t": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text]))})).SerializeToString())
    with pytest.raises(DataError, match=rf"{path}, line 2: column 'id': the integer {BIG} lies beyond"):
        read(path, "tfrecord")
    reader, (chunk,) = read(path, "tfrecord", on_error="skip")
    assert list(chunk.features["id"]) == [5.0] and reader.stats.skipped == 3
    assert "line 3: column 't': the value holds 131,073 characters" in reader.stats.examples[1]
    assert f"line 4: label {BIG} is not 0/1" in reader.stats.examples[2]
    reader, (chunk,) = read(path, "tfrecord", categorical=["id"], on_error="skip")
    assert list(chunk.features["id"]) == ["5", str(BIG)]


def test_tfrecord_header_claiming_a_huge_record_is_refused_before_tensorflow_allocates_it(tmp_path):
    example = tf.train.Example(features=tf.train.Features(feature={
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
        "a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))})).SerializeToString()

    def record(payload: bytes) -> bytes:
        head = struct.pack("<Q", len(payload))
        return head + struct.pack("<I", _masked_crc(head)) + payload + struct.pack("<I", _masked_crc(payload))

    written = tmp_path / "w.tfrecord"
    with tf.io.TFRecordWriter(str(written)) as writer:
        writer.write(example)
    assert written.read_bytes() == record(example)  # the framing as TensorFlow writes it
    head = struct.pack("<Q", 2**40)
    hostile = record(example) * 3 + head + struct.pack("<I", _masked_crc(head)) + b"x" * 64
    for name, data, kw in (("h.tfrecord", hostile, {}), ("h.tfrecord.gz", gzip.compress(hostile), {}),
                           ("h.zlib", zlib.compress(hostile), {"compression": "ZLIB"})):
        path = str(tmp_path / name)
        pathlib.Path(path).write_bytes(data)
        with pytest.raises(DataError, match=rf"{path}, line 4: the record's header claims 1,099,511,627,776 bytes, "
                                            rf"more than the {MAX_RECORD_BYTES:,} a record may hold"):
            read(path, "tfrecord", **kw)
        reader, (chunk,) = read(path, "tfrecord", on_error="skip", **kw)
        assert len(chunk) == 3 and reader.stats.skipped == 1


def test_readers_base_documents_the_bounds():
    doc = readers_base.__doc__
    for name in ("MAX_CELL_CHARS", "MAX_RECORD_BYTES", "MAX_CHUNK_CHARS", "regular files"):
        assert name in doc, name
