"""Reader for MovieLens ratings, one CTR row per rating with the user's earlier movies as a history list.

Two layouts, told apart by the first non-blank line of each ratings file:

* MovieLens 1M ``ratings.dat`` (also ``.gz``): ``user::movie::rating::timestamp`` lines, no header;
  side files ``movies.dat`` (``movie::title::Genre1|Genre2``, latin-1) and ``users.dat``
  (``user::gender::age::occupation::zip``) beside it;
* RecBole atomic files (``ml-100k.inter``): tab-separated with a typed header
  (``user_id:token  item_id:token  rating:float  timestamp:float``, in any order, more columns
  allowed); side files ``<stem>.item`` (header with ``item_id`` and ``class``: space-separated
  genres) and ``<stem>.user`` (header with ``user_id`` and any of ``gender``, ``age``,
  ``occupation``, ``zip_code``) beside it.

The side files' own layout is told the same way (a ``::`` line, or a tab-separated header).
"""
from __future__ import annotations

import math
import os
from array import array
from typing import Iterator

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.data.errors import DataError
from tfmec.data.readers.base import MAX_CELL_CHARS, MAX_CHUNK_CHARS, Chunk, cell_too_long, shown
from tfmec.data.readers.text import (
    FileReader,
    LongCell,
    first_line,
    iter_split_records,
    iter_text_lines,
    resolve_paths,
)
from tfmec.data.schema import CATEGORICAL, LIST

MOVIELENS_LABEL = "label"
#: The user columns a users file can give, in column order (``zip`` is RecBole's ``zip_code``).
MOVIELENS_USER_COLUMNS = ("gender", "age", "occupation", "zip")
DAT, ATOMIC = "dat", "atomic"
_RATING_FIELDS = ("user_id", "movie_id", "rating", "timestamp")
_HEADER_ALIASES = {"item_id": "movie_id", "zip_code": "zip", "class": "genres", "genre": "genres"}
_BLOCK = 65_536  # history ids joined per block while building the one history text


def _header_names(text: str) -> list[str]:
    """The column names of a RecBole header (``name:type`` cells), lower-cased, aliases mapped."""
    names = [cell.split(":", 1)[0].strip().lower() for cell in text.split("\t")]
    return [_HEADER_ALIASES.get(n, n) for n in names]


def _is_atomic_header(text: str) -> bool:
    cells = text.split("\t")
    return len(cells) > 1 and all(":" in c for c in cells)


def detect_layout(path: str, side: bool = False) -> tuple[str, int, list[str]]:
    """``(layout, header_line, names)`` of a MovieLens file from its first non-blank line: ``("dat", 0,
    [])`` for ``::`` lines, ``("atomic", line, column names)`` for a RecBole tab-separated typed header
    (names before the ``:``, ``item_id`` read as ``movie_id``, ``zip_code`` as ``zip``, ``class`` as
    ``genres``). ``side``: a movies or users file (latin-1 lines allowed). Raises DataError for an empty
    file or an unknown layout."""
    if side:
        lines = _side_lines(path)
        try:
            first = next(lines, None)
        finally:
            lines.close()
        first = None if first is None else (*first, None)
    else:
        first = first_line(path)
    if first is None:
        raise DataError("the file is empty", path)
    lineno, text, problem = first
    if text is None:
        raise DataError(problem, path, lineno)
    if "::" in text:
        return DAT, 0, []
    if _is_atomic_header(text):
        return ATOMIC, lineno, _header_names(text)
    raise DataError(f"cannot tell the MovieLens layout from the first line {shown(text)}: expected "
                    f"'::'-separated lines (MovieLens 1M .dat files) or a tab-separated RecBole header "
                    f"such as 'user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float'",
                    path, lineno)


def _side_lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of each non-blank line of a side file, decoded as UTF-8 or, failing that,
    latin-1 (MovieLens 1M's ``movies.dat``). DataError for a line over MAX_RECORD_BYTES or a corrupt .gz."""
    for lineno, text, problem in iter_text_lines(path, fallback_encoding="latin-1"):
        if text is None:
            raise DataError(problem, path, lineno)
        if text.strip():
            yield lineno, text


def _checked(value: str, name: str, path: str, lineno: int) -> str:
    if len(value) > MAX_CELL_CHARS:
        raise DataError(cell_too_long(name, len(value)), path, lineno)
    return value


def _side_records(path: str, dat_columns: int, required: tuple[str, ...]):
    """``(names, records)``: a side file's column names and an iterator of ``(line, fields)`` with
    ``len(fields) == len(names)`` (DataError otherwise, naming file and line). ``dat_columns`` is the
    column count of the ``::`` layout, whose names are ``required`` followed by ``#k`` placeholders."""
    layout, header_line, names = detect_layout(path, side=True)
    if layout == DAT:
        names = list(required) + [f"#{k}" for k in range(len(required), dat_columns)]
        sep = "::"
    else:
        missing = [n for n in required if n not in names]
        if missing:
            raise DataError(f"the header has no {' or '.join(repr(m) for m in missing)} column "
                            f"(columns: {names})", path, header_line)
        sep = "\t"

    def records():
        for lineno, text in _side_lines(path):
            if lineno <= header_line:
                continue
            fields = text.split(sep)
            if len(fields) != len(names):
                raise DataError(f"expected {len(names)} {'::' if sep == '::' else 'tab'}-separated columns, "
                                f"got {len(fields)}", path, lineno)
            yield lineno, fields

    return layout, names, records()


def _genre_token(name: str) -> str:
    return "_".join(name.split())


@tfmec_export("tfmec.data.readers.load_movie_genres")
def load_movie_genres(path) -> dict[str, str]:
    """``{movie_id: "Genre1 Genre2 ..."}`` from a MovieLens movies file: MovieLens 1M ``movies.dat``
    (``movie::title::Genre1|Genre2``, latin-1) or a RecBole ``.item`` file (a header with ``item_id``
    and ``class``, the genres space-separated). Genres are space-joined, whitespace inside a genre
    name replaced by ``_``. Raises DataError (file and line) for a malformed line."""
    (path,) = resolve_paths(path)
    layout, names, records = _side_records(path, 3, ("movie_id",))
    out: dict[str, str] = {}
    if layout == DAT:
        for lineno, fields in records:
            mid = _checked(fields[0].strip(), "movie_id", path, lineno)
            genres = [_genre_token(g) for g in fields[2].split("|")]
            out[mid] = _checked(" ".join(g for g in genres if g), "genres", path, lineno)
        return out
    if "genres" not in names:
        raise DataError(f"the header has no genre column ('class' or 'genres'; columns: {names})", path)
    i, j = names.index("movie_id"), names.index("genres")
    for lineno, fields in records:
        mid = _checked(fields[i].strip(), "movie_id", path, lineno)
        out[mid] = _checked(" ".join(fields[j].split()), "genres", path, lineno)
    return out


@tfmec_export("tfmec.data.readers.load_user_table")
def load_user_table(path) -> tuple[list[str], dict[str, tuple]]:
    """``(columns, {user_id: values})`` from a MovieLens users file: MovieLens 1M ``users.dat``
    (``user::gender::age::occupation::zip``, all four columns) or a RecBole ``.user`` file (a header
    with ``user_id`` and those of ``gender``, ``age``, ``occupation``, ``zip_code`` it has, in
    :data:`MOVIELENS_USER_COLUMNS` order). Values are kept as written. Raises DataError (file and line)
    for a malformed line."""
    (path,) = resolve_paths(path)
    layout, names, records = _side_records(path, 5, ("user_id",))
    if layout == DAT:
        names = ["user_id", "gender", "age", "occupation", "zip"]
    columns = [c for c in MOVIELENS_USER_COLUMNS if c in names]
    idx = [names.index(c) for c in columns]
    k = names.index("user_id")
    out: dict[str, tuple] = {}
    for lineno, fields in records:
        uid = _checked(fields[k].strip(), "user_id", path, lineno)
        out[uid] = tuple(_checked(fields[j].strip(), c, path, lineno) for c, j in zip(columns, idx))
    return columns, out


def _beside(path: str, names: list[str]):
    folder = os.path.dirname(os.path.abspath(path))
    for name in names:
        candidate = os.path.join(folder, name)
        if os.path.lexists(candidate):  # a pipe or device there is refused by resolve_paths
            return candidate
    return None


def _side_path(arg, ratings_path: str, layout: str, which: str):
    if arg is None:
        return None
    if isinstance(arg, str) and arg == "auto":
        if layout == DAT:
            stem = "movies.dat" if which == "movies" else "users.dat"
        else:
            base = os.path.basename(ratings_path)
            for ext in (".gz", ".inter"):
                if base.lower().endswith(ext):
                    base = base[: -len(ext)]
            stem = f"{base}.{'item' if which == 'movies' else 'user'}"
        arg = _beside(ratings_path, [stem, stem + ".gz"])
        if arg is None:
            return None
    return resolve_paths(arg)[0]


@tfmec_export("tfmec.data.MovieLensReader", "tfmec.data.readers.MovieLensReader")
class MovieLensReader(FileReader):
    """MovieLens ratings, one row per rating, in file order, with label ``label`` (``rating >=
    threshold``).

    Columns (categorical unless said otherwise):

    * ``user_id``, ``movie_id``;
    * with a users file: those of ``gender``, ``age``, ``occupation``, ``zip`` it gives (all four for
      MovieLens 1M; values as written, ``""`` for a user it does not list);
    * with a movies file: ``genres``, a ``"list"`` column: the movie's genres, space-separated (``""``
      when the movies file does not list the movie);
    * ``history``, a ``"list"`` column that shares ``movie_id``'s table (:attr:`shared_tables`): the
      movies the user rated *strictly before* this rating's timestamp (ratings at the same second are
      left out, whatever their order in the file), oldest first, at most the ``history_length`` most
      recent ones, as space-separated movie ids. Every kept rating counts, whatever its value; a
      skipped (malformed) line is neither a row nor part of any history.

    The default schema makes ``history`` ``Field("history", max_length=50, shares="movie_id")`` (the
    50 most recent, most recent first) and ``genres`` a list field of its own.

    Histories need the whole file: each pass first reads every rating (user and movie as int codes,
    timestamp, label: NumPy arrays, a few bytes per rating), sorts them by (user, timestamp) stably and
    builds the history windows, then emits the rows in file order, chunk by chunk.

    Example: the ratings (file order) ``1::10::5::100``, ``1::20::3::50``, ``1::30::4::100``,
    ``1::40::2::200`` give the rows (movie, label, history): ``10, 1.0, "20"``; ``20, 0.0, ""``;
    ``30, 1.0, "20"``; ``40, 0.0, "20 10 30"``.

    Args:
        paths: the ratings file (or a list, read in order, histories across all of them; ``.gz``
            decompressed): MovieLens 1M ``ratings.dat`` or a RecBole ``.inter`` file (see the module
            docstring).
        movies: the movies file giving the genres. ``"auto"`` (default): ``movies.dat`` (1M layout) or
            ``<stem>.item`` (RecBole layout) beside the first ratings file when it exists (also with
            ``.gz``), else none; ``None``: none (no ``genres`` column).
        users: the users file, ``"auto"`` (``users.dat`` or ``<stem>.user`` beside it) or ``None``.
        threshold: ratings at or above it are positives (default 4).
        history_length: the most movies a history holds (default 100; 0 gives empty histories).
        on_error: ``"raise"`` or ``"skip"`` for a malformed ratings line (wrong column count, a rating
            or timestamp that is not a finite number, an empty id). A malformed line in a movies or
            users file always raises.
    """

    def __init__(self, paths, movies="auto", users="auto", threshold: float = 4.0,
                 history_length: int = 100, on_error: str = "raise"):
        super().__init__(paths, on_error)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        if isinstance(history_length, bool) or not isinstance(history_length, (int, np.integer)) or history_length < 0:
            raise ValueError(f"history_length must be an integer >= 0, got {history_length!r}")
        self.threshold = float(threshold)
        self.history_length = int(history_length)
        self.layouts = [self._ratings_layout(p) for p in self.paths]
        first_layout = self.layouts[0][0]
        self.movies_path = _side_path(movies, self.paths[0], first_layout, "movies")
        self.users_path = _side_path(users, self.paths[0], first_layout, "users")
        self.genres = load_movie_genres(self.movies_path) if self.movies_path else None
        if self.users_path:
            self.user_columns, self.users = load_user_table(self.users_path)
        else:
            self.user_columns, self.users = [], None
        self.columns = ([("user_id", CATEGORICAL), ("movie_id", CATEGORICAL)]
                        + [(c, CATEGORICAL) for c in self.user_columns]
                        + ([("genres", LIST)] if self.genres is not None else [])
                        + [("history", LIST)])
        self.shared_tables = {"history": "movie_id"}
        self.label = MOVIELENS_LABEL
        extra = [p for p in (self.movies_path, self.users_path) if p]
        if extra:
            self.description = f"{self.description} (+ {', '.join(extra)})"

    @staticmethod
    def _ratings_layout(path: str) -> tuple[str, int, list[int], int]:
        """``(layout, header_line, [user, movie, rating, timestamp] column positions, column count)``."""
        layout, header_line, names = detect_layout(path)
        if layout == DAT:
            return DAT, 0, [0, 1, 2, 3], 4
        missing = [n for n in _RATING_FIELDS if n not in names]
        if missing:
            raise DataError(f"the header has no {', '.join(repr(m) for m in missing)} column(s) "
                            f"(columns: {names}; expected user_id, item_id, rating, timestamp)", path, header_line)
        return ATOMIC, header_line, [names.index(n) for n in _RATING_FIELDS], len(names)

    # --- first pass: every rating as int codes ------------------------------------------------------
    def _index(self):
        """Reads every ratings line: ``(user codes, movie codes, timestamps, labels, user names, movie
        names)``; malformed lines raise or are skipped (recorded in ``self.stats``)."""
        user_codes: dict[str, int] = {}
        movie_codes: dict[str, int] = {}
        users, movies, stamps, labels = array("i"), array("i"), array("d"), array("b")
        threshold = self.threshold
        for path, (layout, header_line, (iu, im, ir, it), ncols) in zip(self.paths, self.layouts):
            sep = "::" if layout == DAT else "\t"
            names = [f"#{k + 1}" for k in range(ncols)]
            for n, k in zip(_RATING_FIELDS, (iu, im, ir, it)):
                names[k] = n
            for lineno, fields, problem in iter_split_records(path, sep):
                if lineno <= header_line:
                    continue
                if fields is None:
                    if isinstance(problem, LongCell):
                        problem = cell_too_long(names[problem.index], problem.length)
                    self._bad_row(problem, path, lineno)
                    continue
                if len(fields) != ncols:
                    self._bad_row(f"expected {ncols} {'::' if layout == DAT else 'tab'}-separated columns "
                                  f"(user, movie, rating, timestamp{', ...' if ncols > 4 else ''}), got {len(fields)}",
                                  path, lineno)
                    continue
                user, movie = fields[iu].strip(), fields[im].strip()
                if not user or not movie:
                    self._bad_row(f"empty {'user' if not user else 'movie'} id", path, lineno)
                    continue
                try:
                    rating = float(fields[ir])
                    stamp = float(fields[it])
                except ValueError:
                    self._bad_row(self._number_problem(fields[ir], fields[it]), path, lineno)
                    continue
                if rating - rating != 0.0 or stamp - stamp != 0.0:  # NaN or inf
                    self._bad_row(self._number_problem(fields[ir], fields[it]), path, lineno)
                    continue
                u = user_codes.get(user)
                if u is None:
                    u = user_codes[user] = len(user_codes)
                m = movie_codes.get(movie)
                if m is None:
                    m = movie_codes[movie] = len(movie_codes)
                users.append(u)
                movies.append(m)
                stamps.append(stamp)
                labels.append(rating >= threshold)
        return (np.frombuffer(users, np.int32), np.frombuffer(movies, np.int32), np.frombuffer(stamps, np.float64),
                np.frombuffer(labels, np.int8), list(user_codes), list(movie_codes))

    @staticmethod
    def _number_problem(rating: str, stamp: str) -> str:
        for name, text in (("rating", rating), ("timestamp", stamp)):
            try:
                v = float(text)
            except ValueError:
                return f"{name} {shown(text.strip())} is not a number"
            if not math.isfinite(v):
                return f"{name} {shown(text.strip())} is not a finite number"
        return "bad rating or timestamp"  # pragma: no cover - one of them failed

    def _histories(self, users, movies, stamps, movie_names):
        """``(text, begin, end)``: one text of every rating's movie id sorted by (user, timestamp),
        space-separated, and per row (file order) the character span of its history in it."""
        n = len(users)
        order = np.lexsort((stamps, users))  # stable: by user, then timestamp, then file order
        su, st = users[order], stamps[order]
        new_user = np.ones(n, bool)
        new_user[1:] = su[1:] != su[:-1]
        new_run = new_user.copy()
        new_run[1:] |= st[1:] != st[:-1]
        del su, st
        pos = np.arange(n, dtype=np.int64)
        first = np.maximum.accumulate(np.where(new_user, pos, 0))  # the user's first rating
        del new_user
        run_start = np.maximum.accumulate(np.where(new_run, pos, 0))  # the first rating at this second
        del new_run, pos
        np.maximum(first, run_start - self.history_length, out=first)  # the window's first rating
        sorted_movies = movies[order]
        lengths = np.fromiter((len(s) for s in movie_names), np.int64, len(movie_names))
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths[sorted_movies] + 1, out=offsets[1:])  # each id plus its separating space
        pieces = [" ".join(map(movie_names.__getitem__, sorted_movies[a:a + _BLOCK].tolist()))
                  for a in range(0, n, _BLOCK)]
        del sorted_movies
        text = " ".join(pieces)
        del pieces
        begin = np.empty(n, np.int64)
        begin[order] = offsets[first]
        del first
        end = np.empty(n, np.int64)
        end[order] = offsets[run_start] - 1  # without the trailing space
        np.maximum(end, begin, out=end)  # an empty history: the empty slice at begin
        return text, begin, end

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        users, movies, stamps, labels, user_names, movie_names = self._index()
        n = len(users)
        if n == 0:
            return
        text, begin, end = self._histories(users, movies, stamps, movie_names)
        del stamps
        user_arr = np.empty(len(user_names), dtype=object)
        user_arr[:] = user_names
        movie_arr = np.empty(len(movie_names), dtype=object)
        movie_arr[:] = movie_names
        side = {}
        if self.users is not None:
            empty = ("",) * len(self.user_columns)
            rows = [self.users.get(u, empty) for u in user_names]
            for j, c in enumerate(self.user_columns):
                side[c] = np.empty(len(user_names), dtype=object)
                side[c][:] = [r[j] for r in rows]
        genre_arr = None
        if self.genres is not None:
            genre_arr = np.empty(len(movie_names), dtype=object)
            genre_arr[:] = [self.genres.get(m, "") for m in movie_names]
        a = 0
        while a < n:
            b = min(n, a + chunk_size)
            spans = end[a:b] - begin[a:b]
            if spans.sum() > MAX_CHUNK_CHARS:  # long histories: end the chunk early
                b = a + max(1, int(np.searchsorted(np.cumsum(spans), MAX_CHUNK_CHARS)))
            u, m = users[a:b], movies[a:b]
            feats = {"user_id": user_arr[u], "movie_id": movie_arr[m]}
            for c in self.user_columns:
                feats[c] = side[c][u]
            if genre_arr is not None:
                feats["genres"] = genre_arr[m]
            hist = np.empty(b - a, dtype=object)
            hist[:] = [text[x:y] for x, y in zip(begin[a:b].tolist(), end[a:b].tolist())]
            feats["history"] = hist
            yield Chunk(feats, labels[a:b].astype(np.float32), np.zeros(0, np.int64))
            a = b
