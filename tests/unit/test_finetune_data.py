"""Training data readers: FlagEmbedding JSONL and scored shards; every malformed line is named."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputContractError
from pipeline.finetune.config import DataConfig
from pipeline.finetune.data import load_queries, parse_jsonl_line
from pipeline.io import Storage

STORAGE = Storage()


def data_config(uri: str, **kw) -> DataConfig:
    return DataConfig(train_uri=uri, **kw)


def test_jsonl_lines_with_prompts_and_teacher_scores(tmp_path):
    lines = [
        {"query": "q1", "pos": ["p"], "neg": ["n1", "n2"]},
        {"query": "q2", "pos": ["p"], "neg": ["n"], "prompt": "P", "pos_scores": [2.0], "neg_scores": [-1]},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")  # blank lines are fine
    queries = load_queries(STORAGE, str(path), data_config(str(path)))
    assert [q.query for q in queries] == ["q1", "q2"]
    assert queries[0].neg == ("n1", "n2") and not queries[0].has_teacher
    assert queries[1].prompt == "P" and queries[1].pos_scores == (2.0,) and queries[1].neg_scores == (-1.0,)
    assert queries[1].source.endswith("train.jsonl:2")


def test_every_malformed_line_is_named_with_its_problem(tmp_path):
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    bad = [
        "{not json",
        json.dumps({"query": "q", "pos": [], "neg": ["n"]}),
        json.dumps({"query": "", "pos": ["p"], "neg": ["n"]}),
        json.dumps({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [1, 2]}),
        json.dumps({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]}),
        json.dumps(["q", "p"]),
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([good, *bad]) + "\n")
    with pytest.raises(InputContractError) as err:
        load_queries(STORAGE, str(path), data_config(str(path)))
    text = str(err.value)
    assert "6 problem(s)" in text
    for line, what in [
        (2, "not valid JSON"),
        (3, "'pos' must be a non-empty list"),
        (4, "'query' must be a non-empty string"),
        (5, "'neg_scores' has 2 scores for 1 passages"),
        (6, "must be given together"),
        (7, "must be a JSON object"),
    ]:
        assert f"{path} line {line}: " in text and what in text, (line, what, text)
    assert "line 1:" not in text


def test_parse_rejects_non_finite_scores():
    with pytest.raises(ValueError, match="finite numbers"):
        parse_jsonl_line('{"query":"q","pos":["p"],"neg":["n"],"pos_scores":[NaN],"neg_scores":[1]}', "x")


def test_scored_shards_make_the_teacher_top_candidate_the_positive(tmp_path):
    table = pa.table(
        {
            "query_id": ["a", "a", "a", "b", "b"],
            "query": ["qa"] * 3 + ["qb"] * 2,
            "doc_id": ["1", "2", "3", "4", "5"],
            "passage": ["low", "top", "mid", "x", "y"],
            "score": [0.1, 3.0, 1.0, -1.0, 2.0],
            "rank": [3, 1, 2, 2, 1],
        }
    )
    (tmp_path / "out").mkdir()
    pq.write_table(table, tmp_path / "out" / "part-0.parquet")
    queries = load_queries(STORAGE, str(tmp_path / "out"), data_config(str(tmp_path / "out")))
    a, b = queries
    assert (a.query, a.pos, a.neg, a.pos_scores, a.neg_scores) == (
        "qa",
        ("top",),
        ("mid", "low"),
        (3.0,),
        (1.0, 0.1),
    )
    assert b.pos == ("y",) and b.neg == ("x",) and b.has_teacher


def test_scored_shards_name_missing_columns_and_single_candidate_queries(tmp_path):
    (tmp_path / "a").mkdir()
    pq.write_table(
        pa.table({"query_id": ["a"], "query": ["q"], "passage": ["p"]}), tmp_path / "a" / "s.parquet"
    )
    with pytest.raises(InputContractError, match=r"no column\(s\) \['score'\]"):
        load_queries(STORAGE, str(tmp_path / "a"), data_config(str(tmp_path / "a")))
    (tmp_path / "b").mkdir()
    one = pa.table({"query_id": ["a"], "query": ["q"], "passage": ["p"], "score": [1.0]})
    pq.write_table(one, tmp_path / "b" / "s.parquet")
    with pytest.raises(InputContractError, match="query_id 'a': one candidate"):
        load_queries(STORAGE, str(tmp_path / "b"), data_config(str(tmp_path / "b")))


def test_empty_data_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(InputContractError, match="no training queries"):
        load_queries(STORAGE, str(path), data_config(str(path)))


def test_a_path_that_does_not_exist_is_named_as_such(tmp_path):
    for missing in (tmp_path / "nope.jsonl", tmp_path / "nope"):
        with pytest.raises(InputContractError, match=f"{str(missing)!r} does not exist"):
            load_queries(STORAGE, str(missing), data_config(str(missing)))
    (tmp_path / "empty").mkdir()  # there, but holding nothing: that message stays
    with pytest.raises(InputContractError, match="no training queries"):
        load_queries(STORAGE, str(tmp_path / "empty"), data_config(str(tmp_path / "empty")))
