"""Vocabulary, numeric statistics and schema behaviour."""
import json

import numpy as np
import pytest

from tfmec.data.schema import Field, Schema, safe_name
from tfmec.data.vocabulary import OOV_ID, NumericStats, Vocabulary, load_vocabularies, save_vocabularies


def _obj(values):
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def test_vocabulary_counts_min_count_and_order():
    v = Vocabulary("c", min_count=2)
    v.update(_obj(["a", "b", "a", "c", ""]))
    v.update(_obj(["b", "a", "", "d"]))
    v.finalize()
    # a:3, b:2, "":2 kept (ties by value), c:1, d:1 -> OOV
    assert v.tokens == ["a", "", "b"]
    assert v.counts.tolist() == [2, 3, 2, 2]
    assert v.size == 4
    ids = v.lookup(_obj(["a", "b", "c", "zzz", ""]))
    assert ids.dtype == np.int32
    assert ids.tolist() == [1, 3, OOV_ID, OOV_ID, 2]
    assert v.token(1) == "a" and v.token(OOV_ID) is None


def test_vocabulary_json_round_trip(tmp_path):
    v = Vocabulary("x", 1)
    v.update(_obj(["p", "q", "q"]))
    v.finalize()
    s = NumericStats("n")
    s.update(np.array([1.0, 2.0, np.nan, 3.0]))
    path = tmp_path / "vocab.json"
    save_vocabularies(str(path), {"x": v}, {"n": s})
    text = path.read_text()
    assert json.loads(text)["format"] == "tfmec-vocabulary"
    vocabs, numeric = load_vocabularies(str(path))
    assert vocabs["x"].tokens == v.tokens
    np.testing.assert_array_equal(vocabs["x"].counts, v.counts)
    assert numeric["n"].mean == pytest.approx(2.0)
    assert numeric["n"].std == pytest.approx(np.std([1.0, 2.0, 3.0]))


def test_vocabulary_refuses_use_before_finalize_and_bad_min_count():
    v = Vocabulary("c")
    with pytest.raises(RuntimeError, match="not finalized"):
        v.lookup(_obj(["a"]))
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary("c", min_count=0)


def test_numeric_stats_streaming_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=10_000)
    s = NumericStats("n")
    for part in np.array_split(data, 7):
        s.update(part)
    assert s.mean == pytest.approx(data.mean())
    assert s.std == pytest.approx(data.std())


def test_schema_presets_and_json():
    criteo = Schema.criteo()
    assert len(criteo) == 39 and len(criteo.categorical) == 39 and not criteo.numeric
    assert criteo["I1"].transform == "log_square"
    again = Schema.from_json(criteo.to_json())
    assert again.names == criteo.names and again.label == "label"
    with pytest.raises(ValueError, match="duplicate"):
        Schema([Field("a"), Field("a")])
    with pytest.raises(ValueError, match="kind"):
        Field("a", kind="text")
    with pytest.raises(ValueError, match="sequence"):
        Field("a", kind="sequence")
    with pytest.raises(KeyError, match="no field"):
        criteo["nope"]
    assert safe_name("user_id:token") == "user_id"
    assert safe_name("1st col") == "f_1st_col"
