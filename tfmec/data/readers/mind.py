"""Reader for MIND (Microsoft News Dataset) impression logs, exploded to one CTR row per shown article."""
from __future__ import annotations

import datetime
import os
from typing import Iterator

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.schema import LIST
from tfmec.data.readers.base import MAX_CELL_CHARS, MAX_CHUNK_CHARS, Chunk, cell_too_long, shown
from tfmec.data.readers.text import FileReader, RowBuffer, iter_split_records, iter_text_lines, resolve_paths

MIND_LABEL = "click"
MIND_BASE_COLUMNS = ("user_id", "news_id", "hour", "weekday")
MIND_NEWS_COLUMNS = ("category", "subcategory")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


@tfmec_export("tfmec.data.readers.load_news_categories")
def load_news_categories(path) -> dict[str, tuple[str, str]]:
    """Reads a MIND ``news.tsv`` (``news_id \\t category \\t subcategory \\t title ...``) into
    ``{news_id: (category, subcategory)}``. Raises DataError for a line with fewer than 3 columns."""
    (path,) = resolve_paths(path)
    out: dict[str, tuple[str, str]] = {}
    for lineno, text, problem in iter_text_lines(path):
        if text is None:
            raise DataError(problem, path, lineno)
        if not text.strip():
            continue
        parts = text.split("\t")
        if len(parts) < 3:
            raise DataError(f"expected 'news_id<TAB>category<TAB>subcategory<TAB>...', got {len(parts)} column(s)",
                            path, lineno)
        for name, value in zip(("news_id", "category", "subcategory"), parts):
            if len(value) > MAX_CELL_CHARS:
                raise DataError(cell_too_long(name, len(value)), path, lineno)
        out[parts[0]] = (parts[1], parts[2])
    return out


@tfmec_export("tfmec.data.MindReader", "tfmec.data.readers.MindReader")
class MindReader(FileReader):
    """MIND ``behaviors.tsv`` files, one row per article shown in an impression.

    A behaviors line is ``impression_id \\t user_id \\t time \\t history \\t impressions`` with the time
    as ``M/D/YYYY h:mm:ss AM/PM``, the history a space-separated list of clicked news ids, and the
    impressions space-separated ``NewsID-label`` pairs (1 = clicked, 0 = shown only). Each pair becomes
    one row with label ``click`` and the categorical columns ``user_id``, ``news_id``, ``hour``
    (``"0".."23"``), ``weekday`` (``"0".."6"``, Monday = 0), then ``category`` and ``subcategory`` of
    the shown article when a news file is used (``""`` for an article it does not list),
    ``history_len`` (``floor(log2(len(history) + 1))`` as a string) and ``history``: the reader's click
    history as read (space-separated news ids, oldest first), a ``"list"`` column that shares
    ``news_id``'s table (:attr:`shared_tables`), so the default schema makes it
    ``Field("history", max_length=50, shares="news_id")``: the 50 most recent clicks, most recent first.

    Args:
        paths: one ``behaviors.tsv`` path or a list of them, read in order (``.gz`` decompressed).
        news: the ``news.tsv`` giving each article's category and subcategory. ``"auto"`` (default)
            uses ``news.tsv`` in the folder of the first behaviors file when it exists (it must then be
            a regular file), else none; ``None`` uses none (no category columns).
        on_error: ``"raise"`` or ``"skip"`` for malformed lines (wrong column count, bad time, an
            impression without ``-0`` / ``-1``). A skipped line drops all of its impressions.
    """

    def __init__(self, paths, news="auto", on_error: str = "raise"):
        super().__init__(paths, on_error)
        if isinstance(news, str) and news == "auto":
            candidate = os.path.join(os.path.dirname(os.path.abspath(self.paths[0])), "news.tsv")
            news = candidate if os.path.lexists(candidate) else None  # a pipe or device there is refused
        self.news_path = None if news is None else resolve_paths(news)[0]
        self.news = load_news_categories(self.news_path) if self.news_path else None
        names = list(MIND_BASE_COLUMNS) + (list(MIND_NEWS_COLUMNS) if self.news is not None else []) + ["history_len"]
        self.columns = [(c, "categorical") for c in names] + [("history", LIST)]
        self.shared_tables = {"history": "news_id"}
        self.label = MIND_LABEL
        if self.news_path:
            self.description = f"{self.description} (+ {self.news_path})"

    def _parse_line(self, fields: list, path: str, lineno: int):
        """``(context values, [(news_id, label), ...])`` of one behaviors line; DataError if malformed."""
        if len(fields) != 5:
            raise DataError(f"expected 5 tab-separated columns (impression_id, user_id, time, history, "
                            f"impressions), got {len(fields)}", path, lineno)
        _, user, when, history, impressions = fields
        if len(user) > MAX_CELL_CHARS:
            raise DataError(cell_too_long("user_id", len(user)), path, lineno)
        try:
            t = datetime.datetime.strptime(when.strip(), TIME_FORMAT)
        except ValueError:
            raise DataError(f"time {shown(when)} is not 'M/D/YYYY h:mm:ss AM/PM'", path, lineno) from None
        pairs = []
        for item in impressions.split():
            news_id, dash, lab = item.rpartition("-")
            if not dash or not news_id or lab not in ("0", "1"):
                raise DataError(f"impression {shown(item)} is not 'NewsID-0' or 'NewsID-1'", path, lineno)
            if len(news_id) > MAX_CELL_CHARS:
                raise DataError(cell_too_long("news_id", len(news_id)), path, lineno)
            pairs.append((news_id, float(lab)))
        if not pairs:
            raise DataError("the line lists no impressions", path, lineno)
        clicks = history.split()
        for news_id in clicks:
            if len(news_id) > MAX_CELL_CHARS:
                raise DataError(cell_too_long("history", len(news_id)), path, lineno)
        bucket = str((len(clicks) + 1).bit_length() - 1)  # floor(log2(hist + 1))
        return (user, str(t.hour), str(t.weekday()), bucket, " ".join(clicks)), pairs

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        buf = RowBuffer(self.columns)
        news = self.news
        size = 0  # characters of the lines behind the buffered rows (a chunk ends at MAX_CHUNK_CHARS)
        for path in self.paths:
            for lineno, fields, problem in iter_split_records(path, "\t", cells=False):  # cells checked below
                if fields is None:
                    self._bad_row(problem, path, lineno)
                    continue
                try:
                    (user, hour, weekday, hist_bucket, clicks), pairs = self._parse_line(fields, path, lineno)
                except DataError as err:
                    self._reject(err)
                    continue
                size += sum(map(len, fields))
                for news_id, y in pairs:
                    if news is None:
                        buf.add([user, news_id, hour, weekday, hist_bucket, clicks], y)
                    else:
                        cat, sub = news.get(news_id, ("", ""))
                        buf.add([user, news_id, hour, weekday, cat, sub, hist_bucket, clicks], y)
                    if len(buf) >= chunk_size or size >= MAX_CHUNK_CHARS:
                        yield buf.flush()
                        size = 0
        if len(buf):
            yield buf.flush()
