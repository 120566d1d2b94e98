"""Tests of MovieLensReader (``--format movielens``): both layouts, histories, side files, errors, and the
real ml-100k sample (CPU only, fast)."""
from __future__ import annotations

import gzip
import os
import sys

import numpy as np
import pytest

from tfmec.data.errors import DataError
from tfmec.data.readers import MovieLensReader, open_reader

# user, movie, rating, timestamp in file order (user 1 has a tie at t=100 and a cap to test)
RATINGS = [
    (1, 10, 5, 100),
    (1, 20, 3, 50),
    (2, 10, 4, 70),
    (1, 30, 4, 100),  # same second as movie 10: neither is in the other's history
    (1, 40, 2, 200),
    (3, 99, 1, 10),  # movie 99 is not in the movies file, user 3 not in the users file
    (2, 20, 5, 60),
    (1, 50, 4, 300),
]
# expected history of each row (oldest first)
HISTORIES = ["20", "", "20", "20", "20 10 30", "", "", "20 10 30 40"]
LABELS = [1, 0, 1, 1, 0, 0, 1, 1]

MOVIES_DAT = ("10::Am\xe9lie (2001)::Comedy|Romance\n20::Toy Story (1995)::Animation|Children's|Comedy\n"
              "30::Heat (1995)::Action|Crime|Thriller\n40::X (2000)::Drama\n50::Y (2000)::Film Noir|Sci-Fi\n")
USERS_DAT = "1::F::1::10::48067\n2::M::56::16::70072\n"


def write_dat(folder, ratings=RATINGS, extra="", gz=False, movies=True, users=True):
    text = "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings) + extra
    path = folder / ("ratings.dat.gz" if gz else "ratings.dat")
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    if movies:
        (folder / "movies.dat").write_bytes(MOVIES_DAT.encode("latin-1"))
    if users:
        (folder / "users.dat").write_text(USERS_DAT)
    return path


def write_atomic(folder, ratings=RATINGS, extra=""):
    # columns in another order than RecBole's, plus a column the reader ignores
    lines = ["timestamp:float\trating:float\titem_id:token\tuser_id:token\tsource:token\n"]
    lines += [f"{t}\t{r}.0\t{m}\t{u}\tweb\n" for u, m, r, t in ratings]
    path = folder / "ml-tiny.inter"
    path.write_text("".join(lines) + extra)
    (folder / "ml-tiny.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tAmelie\t2001\tComedy Romance\n20\tToy Story\t1995\tAnimation Children's Comedy\n"
        "30\tHeat\t1995\tAction Crime Thriller\n40\tX\t2000\tDrama\n50\tY\t2000\tFilm-Noir Sci-Fi\n")
    (folder / "ml-tiny.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tF\ttechnician\t85711\n2\t53\tM\tother\t94043\n")
    return path


def read_all(reader, chunk_size=8192):
    chunks = list(reader.chunks(chunk_size))
    feats = {name: np.concatenate([c.features[name] for c in chunks]) for name in reader.column_names}
    labels = np.concatenate([c.labels for c in chunks])
    rows = np.concatenate([c.row_index for c in chunks])
    return feats, labels, rows, len(chunks)


def reference_histories(ratings, length):
    """Brute force: per row, the user's movies rated strictly earlier, oldest first (ties in file order)."""
    out = []
    for u, _, _, t in ratings:
        earlier = sorted((tt, k, m) for k, (uu, m, _, tt) in enumerate(ratings) if uu == u and tt < t)
        out.append(" ".join(str(m) for _, _, m in earlier[-length:]) if length else "")
    return out


# --------------------------------------------------------------------------------------------------
def test_dat_layout_rows_histories_and_side_columns(tmp_path):
    reader = MovieLensReader(write_dat(tmp_path))
    assert reader.column_names == ["user_id", "movie_id", "gender", "age", "occupation", "zip", "genres", "history"]
    kinds = dict(reader.columns)
    assert kinds["genres"] == "list" and kinds["history"] == "list" and kinds["user_id"] == "categorical"
    assert reader.shared_tables == {"history": "movie_id"} and reader.label == "label"
    assert "movies.dat" in reader.description and "users.dat" in reader.description
    feats, labels, rows, n_chunks = read_all(reader, chunk_size=3)
    assert n_chunks == 3
    np.testing.assert_array_equal(rows, np.arange(len(RATINGS)))
    np.testing.assert_array_equal(labels, LABELS)
    assert labels.dtype == np.float32
    assert list(feats["user_id"]) == [str(r[0]) for r in RATINGS]  # file order
    assert list(feats["movie_id"]) == [str(r[1]) for r in RATINGS]
    assert list(feats["history"]) == HISTORIES == reference_histories(RATINGS, 100)
    assert list(feats["gender"]) == ["F", "F", "M", "F", "F", "", "M", "F"]
    assert list(feats["age"]) == ["1", "1", "56", "1", "1", "", "56", "1"]
    assert list(feats["occupation"])[2] == "16" and list(feats["zip"])[:3] == ["48067", "48067", "70072"]
    assert list(feats["genres"]) == ["Comedy Romance", "Animation Children's Comedy", "Comedy Romance",
                                     "Action Crime Thriller", "Drama", "", "Animation Children's Comedy",
                                     "Film_Noir Sci-Fi"]  # whitespace inside a genre name -> "_"
    for chunk in reader.chunks(4):
        assert all(v.dtype == object for v in chunk.features.values())


def test_history_length_caps_to_the_most_recent(tmp_path):
    path = write_dat(tmp_path)
    feats, _, _, _ = read_all(MovieLensReader(path, history_length=2))
    assert list(feats["history"]) == ["20", "", "20", "20", "10 30", "", "", "30 40"]
    assert list(feats["history"]) == reference_histories(RATINGS, 2)
    feats, _, _, _ = read_all(MovieLensReader(path, history_length=0))
    assert set(feats["history"]) == {""}
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="history_length"):
            MovieLensReader(path, history_length=bad)
    with pytest.raises(ValueError, match="threshold"):
        MovieLensReader(path, threshold=float("nan"))


def test_threshold(tmp_path):
    _, labels, _, _ = read_all(MovieLensReader(write_dat(tmp_path), threshold=5))
    np.testing.assert_array_equal(labels, [1, 0, 0, 0, 0, 0, 1, 0])


def test_random_histories_match_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    ratings = [(int(rng.integers(1, 6)), int(rng.integers(1, 30)), int(rng.integers(1, 6)), int(rng.integers(0, 40)))
               for _ in range(400)]  # many ties
    path = write_dat(tmp_path, ratings, movies=False, users=False)
    for length in (1, 7, 100):
        feats, _, _, _ = read_all(MovieLensReader(path, history_length=length), chunk_size=37)
        assert list(feats["history"]) == reference_histories(ratings, length)


def test_atomic_layout(tmp_path):
    reader = MovieLensReader(write_atomic(tmp_path))
    # the .user file's columns in the reader's order (gender, age, occupation, zip from zip_code)
    assert reader.column_names == ["user_id", "movie_id", "gender", "age", "occupation", "zip", "genres", "history"]
    assert reader.movies_path.endswith("ml-tiny.item") and reader.users_path.endswith("ml-tiny.user")
    feats, labels, _, _ = read_all(reader)
    np.testing.assert_array_equal(labels, LABELS)
    assert list(feats["movie_id"]) == [str(r[1]) for r in RATINGS]
    assert list(feats["history"]) == HISTORIES
    assert list(feats["gender"]) == ["F", "F", "M", "F", "F", "", "M", "F"]
    assert list(feats["age"])[:3] == ["24", "24", "53"] and list(feats["zip"])[2] == "94043"
    assert list(feats["genres"])[:2] == ["Comedy Romance", "Animation Children's Comedy"]
    assert list(feats["genres"])[5] == ""


def test_side_files_optional_and_explicit(tmp_path):
    path = write_dat(tmp_path, movies=False, users=False)
    reader = MovieLensReader(path)
    assert reader.column_names == ["user_id", "movie_id", "history"] and reader.movies_path is None
    (tmp_path / "movies.dat").write_bytes(MOVIES_DAT.encode("latin-1"))
    assert MovieLensReader(path, movies=None).column_names == ["user_id", "movie_id", "history"]
    assert MovieLensReader(path).column_names == ["user_id", "movie_id", "genres", "history"]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "people.dat").write_text(USERS_DAT)
    reader = MovieLensReader(path, movies=None, users=other / "people.dat")
    assert reader.column_names == ["user_id", "movie_id", "gender", "age", "occupation", "zip", "history"]
    with pytest.raises(FileNotFoundError):
        MovieLensReader(path, users=tmp_path / "missing.dat")
    (tmp_path / "users.dat").write_text("1::F::1::10\n")
    with pytest.raises(DataError, match=r"users\.dat, line 1: expected 5"):
        MovieLensReader(path)


def test_gzip_ratings_and_open_reader(tmp_path):
    path = write_dat(tmp_path, gz=True)
    reader = open_reader(path, "MovieLens")
    assert isinstance(reader, MovieLensReader) and reader.movies_path.endswith("movies.dat")
    feats, _, _, _ = read_all(reader)
    assert list(feats["history"]) == HISTORIES
    with pytest.raises(ValueError, match="always 'label'"):
        open_reader(path, "movielens", label="click")
    assert open_reader(path, "movielens", history_length=1, users=None).history_length == 1


def test_several_files_share_histories_and_long_histories_end_chunks(tmp_path, monkeypatch):
    import tfmec.data.readers.movielens as movielens

    first = write_dat(tmp_path, RATINGS[:4])
    second = tmp_path / "more.dat"
    second.write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in RATINGS[4:]))
    reader = MovieLensReader([first, second])
    feats, _, rows, _ = read_all(reader)
    np.testing.assert_array_equal(rows, np.arange(len(RATINGS)))
    assert list(feats["history"]) == HISTORIES  # user 1's history carries over into the second file
    monkeypatch.setattr(movielens, "MAX_CHUNK_CHARS", 5)  # "20 10 30" alone is over the limit
    chunks = list(reader.chunks(100))
    assert sum(len(c) for c in chunks) == len(RATINGS) and len(chunks) > 1
    assert [h for c in chunks for h in c.features["history"]] == HISTORIES


@pytest.mark.parametrize(
    "line, message",
    [
        ("1::60::4\n", "expected 4 ::-separated columns"),
        ("1::60::good::400\n", "rating 'good' is not a number"),
        ("1::60::4::noon\n", "timestamp 'noon' is not a number"),
        ("1::60::inf::400\n", "rating 'inf' is not a finite number"),
        ("::60::4::400\n", "empty user id"),
    ],
)
def test_dat_bad_lines(tmp_path, line, message):
    path = write_dat(tmp_path, RATINGS[:4], extra=line + "1::70::4::500\n")
    with pytest.raises(DataError, match=f"{path}, line 5: ") as info:
        read_all(MovieLensReader(path))
    assert message in str(info.value)
    reader = MovieLensReader(path, on_error="skip")
    feats, _, rows, _ = read_all(reader)
    assert reader.stats.skipped == 1 and reader.stats.rows == 5
    np.testing.assert_array_equal(rows, np.arange(5))
    assert list(feats["movie_id"]) == ["10", "20", "10", "30", "70"]
    assert feats["history"][-1] == "20 10 30"  # the skipped rating of movie 60 is in no history


def test_atomic_bad_lines_and_header(tmp_path):
    path = write_atomic(tmp_path, RATINGS[:3], extra="x\t4\t60\t1\tweb\n500\t4\t70\t1\n")
    with pytest.raises(DataError, match=r"ml-tiny\.inter, line 5: timestamp 'x' is not a number"):
        read_all(MovieLensReader(path))
    reader = MovieLensReader(path, on_error="skip")
    feats, _, _, _ = read_all(reader)
    assert reader.stats.skipped == 2 and len(feats["movie_id"]) == 3
    assert "line 6: expected 5 tab-separated columns" in reader.stats.examples[1]
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(DataError, match="no 'timestamp' column"):
        MovieLensReader(bad)
    unknown = tmp_path / "ratings.csv"
    unknown.write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match="cannot tell the MovieLens layout"):
        MovieLensReader(unknown)


def test_load_gives_a_din_ready_schema(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tfmec.data import load

    rng = np.random.default_rng(1)
    ratings = [(int(rng.integers(1, 9)), int(rng.choice([10, 20, 30, 40, 50])), int(rng.integers(1, 6)), k)
               for k in range(300)]
    path = write_dat(tmp_path, ratings)
    data = load(str(path), format="movielens", batch_size=32, min_count=1, progress=False)
    schema = data.schema
    history = schema["history"]
    assert history.max_length == 50 and history.shares == "movie_id"
    assert history.is_categorical and history.is_list and history.separator is None
    assert schema["genres"].max_length == 50 and schema["genres"].shares is None
    assert schema["user_id"].max_length is None
    features, labels = next(iter(data.train))
    assert tuple(features["history"].shape) == (32, 50) and features["history"].dtype == tf.int32
    assert tuple(features["genres"].shape) == (32, 50) and tuple(labels.shape) == (32,)
    assert sum(data.rows.values()) == 300


# --------------------------------------------------------------------------------------------------
# the real ml-100k sample (../shared/data; a CI=true run fails without it)
def test_real_movielens_100k(shared_data):
    folder = shared_data / "movielens-100k"
    inter = folder / "ml-100k.inter"
    with open(inter, encoding="utf-8") as fh:
        lines = [ln.rstrip("\n").split("\t") for ln in fh][1:]  # below the header
    reader = MovieLensReader(inter)
    assert reader.column_names == ["user_id", "movie_id", "gender", "age", "occupation", "zip", "genres", "history"]
    feats, labels, _, _ = read_all(reader, chunk_size=50_000)
    assert len(labels) == len(lines) == 100_000
    assert int(labels.sum()) == sum(float(r) >= 4 for _, _, r, _ in lines)
    assert list(feats["movie_id"][:3]) == ["242", "302", "377"]
    assert feats["genres"][0] == "Comedy" and feats["gender"][0] == "M" and feats["occupation"][0] == "writer"
    assert feats["history"][0] == ""  # user 196's first rating: nothing before it
    by_user: dict = {}
    for k, (u, m, _, t) in enumerate(lines):
        by_user.setdefault(u, []).append((float(t), k, m))
    for k in (0, 1, 2, 999, 54_321, 99_999):
        u, _, _, t = lines[k]
        earlier = sorted(e for e in by_user[u] if e[0] < float(t))
        expected = [m for _, _, m in earlier][-100:]
        got = feats["history"][k].split()
        assert got == expected, k
        assert len(got) <= 100
    # histories are capped at 100, and every user's first rating has an empty one
    lengths = np.array([h.count(" ") + 1 if h else 0 for h in feats["history"]])
    assert lengths.max() == 100 and (lengths == 0).sum() >= len(by_user)


def test_real_samples_through_the_run_flags(shared_data):
    """The bench entry ``movielens-100k-din`` of bench/real_data.CLI_DATA_ARGS loads through ``tfmec run``'s
    data flags."""
    pytest.importorskip("tensorflow")
    from tfmec.cli import build_parser, run_config_from_args
    from tfmec.experiment import load_for

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    try:
        from real_data import CLI_DATA_ARGS, cli_data_args
    finally:
        sys.path.pop(0)
    assert CLI_DATA_ARGS["movielens-1m-din"] == ["--data", "movielens-1m-part/ratings.dat.gz", "--format", "movielens"]
    argv = ["run", *cli_data_args("movielens-100k-din", shared_data), "--quiet"]
    cfg = run_config_from_args(build_parser().parse_args(argv), argv[1:])
    cfg.validate()
    data = load_for(cfg)
    assert sum(data.rows.values()) == 100_000
    assert data.schema["history"].shares == "movie_id" and data.schema["history"].max_length == 50
