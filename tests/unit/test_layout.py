"""The nested layout without Ray: flattened when read, checked before scoring, nested again when
published (re-sorted lists with the output fields, top-k per list, rejected candidates long)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ModelConfig
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.input.discovery import contract_problems, read_facts
from pipeline.rerank.input.layout import (
    QUERY_ROW,
    candidate_count,
    flat_schema,
    flatten_candidates,
    read_pairs,
)
from pipeline.rerank.output import checkpoint
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.tokenize import TokenizeShard
from pipeline.rerank.stages.write import WriteSettings, publish_shard
from tests.helpers import nest_pairs, pairs_table, unnest_output

STORAGE = Storage()
NESTED = InputConfig(uri="x", layout="nested")
CAND = pa.struct([("doc_id", pa.string()), ("passage", pa.string()), ("bm25", pa.float64())])


def nested_shard() -> pa.Table:
    """q0: three candidates; q1: a null list; q2: an empty list; q3: a null passage, a null
    struct and a good candidate. `lang` is a query-level column that passes through."""
    c = lambda d, p, s: {"doc_id": d, "passage": p, "bm25": s}  # noqa: E731
    return pa.table(
        {
            "query_id": ["q0", "q1", "q2", "q3"],
            "lang": ["en", "de", "fr", "en"],
            "query": ["red apple", "blue sky", "green tea", "old town"],
            "candidates": pa.array(
                [
                    [c("a", "apples are red", 1.0), c("b", "the sky", 2.0), c("c", "red apple pie", 3.0)],
                    None,
                    [],
                    [c("d", None, 5.0), None, c("e", "an old town square", 4.0)],
                ],
                pa.list_(CAND),
            ),
        }
    )


def write(tmp_path, table, name="in/part-0.parquet", **kwargs):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kwargs)
    return STORAGE.list_shards(str(path.parent))[0]


def test_flatten_gives_one_row_per_candidate_in_list_order():
    flat = flatten_candidates(nested_shard(), NESTED)
    assert flat.column_names == ["query_id", "lang", "query", "doc_id", "passage", "bm25", QUERY_ROW]
    assert flat.column("doc_id").to_pylist() == ["a", "b", "c", "d", None, "e"]
    assert flat.column(QUERY_ROW).to_pylist() == [0, 0, 0, 3, 3, 3]
    assert flat.column("lang").to_pylist() == ["en"] * 3 + ["en"] * 3
    assert flat.column("passage").to_pylist()[3:5] == [None, None]  # a null struct: null fields


def test_flat_schema_and_the_nested_contract():
    schema = nested_shard().schema
    flat, problems = flat_schema("s.parquet", schema, NESTED)
    assert problems == []
    assert flat.names == ["query_id", "lang", "query", "doc_id", "passage", "bm25"]
    _, problems = flat_schema(
        "s.parquet", schema, InputConfig(uri="x", layout="nested", candidates_column="c")
    )
    assert "has no column 'c'" in problems[0] and "--candidates-column" in problems[0]
    bad = schema.set(3, pa.field("candidates", pa.list_(pa.string())))
    (problem,) = flat_schema("s.parquet", bad, NESTED)[1]
    assert "not a list of structs" in problem
    cfg = InputConfig(uri="x", layout="nested", doc_id_column="docno")
    (problem,) = flat_schema("s.parquet", schema, cfg)[1]
    assert "no field 'docno'" in problem and "--doc-id-column" in problem
    clash = pa.schema([*schema, pa.field("bm25", pa.float64())])
    (problem,) = flat_schema("s.parquet", clash, NESTED)[1]
    assert "['bm25']" in problem and "query-level" in problem


def test_contract_checks_struct_fields_like_columns():
    shard = ShardFile("s.parquet", "s.parquet", 1, "v")
    assert contract_problems(shard, nested_shard().schema, NESTED, ["score"]) == []
    text = pa.struct([("doc_id", pa.string()), ("passage", pa.int64())])
    schema = pa.schema([("query_id", pa.string()), ("query", pa.string()), ("candidates", pa.list_(text))])
    (problem,) = contract_problems(shard, schema, NESTED, ["score"])
    assert "'passage' is int64, not text" in problem
    scored = pa.struct([("doc_id", pa.string()), ("passage", pa.string()), ("score", pa.float32())])
    schema = schema.set(2, pa.field("candidates", pa.list_(scored)))
    (problem,) = contract_problems(shard, schema, NESTED, ["score"])
    assert "'score'" in problem and "--previous-prefix" in problem
    prefixed = InputConfig(uri="x", layout="nested", previous_prefix="stage1_")
    assert contract_problems(shard, schema, prefixed, ["score"]) == []


@pytest.mark.parametrize("name", ["candidates", "cands"])
def test_nested_input_without_layout_nested_is_named_as_such(name):
    shard = ShardFile("s.parquet", "s.parquet", 1, "v")
    schema = nested_shard().rename_columns(["query_id", "lang", "query", name]).schema
    (problem,) = contract_problems(shard, schema, InputConfig(uri="x"), ["score"])
    assert "'s.parquet' looks nested" in problem and f"column {name!r} is a list<struct>" in problem
    assert "'doc_id', 'passage'" in problem  # what the long layout looked for
    fix = "--layout nested" + ("" if name == "candidates" else f" --candidates-column {name}")
    assert problem.endswith(f"pass {fix}")
    flat = pa.schema([("query_id", pa.string()), ("query", pa.string()), ("doc_id", pa.string())])
    (problem,) = contract_problems(shard, flat, InputConfig(uri="x"), ["score"])
    assert "no column 'passage'" in problem and "nested" not in problem  # a plain missing column


def test_candidates_are_counted_from_one_leaf_or_the_whole_column(tmp_path):
    table = nested_shard()
    for legacy in (False, True):  # list.element (standard) and the older list.item naming
        shard = write(tmp_path, table, f"in{legacy}/a.parquet", use_compliant_nested_type=not legacy)
        schema, _ = STORAGE.read_parquet_schema(shard.uri)
        assert candidate_count(STORAGE, shard.uri, schema, NESTED) == 6
        assert read_facts(STORAGE, shard, NESTED, ["score"]).num_rows == 6


def test_read_pairs_flattens_each_row_group(tmp_path):
    shard = write(tmp_path, nested_shard(), row_group_size=2)
    groups = list(read_pairs(STORAGE, shard.uri, NESTED))
    assert [g.num_rows for g in groups] == [3, 3]
    assert pa.concat_tables(groups).column("doc_id").to_pylist() == ["a", "b", "c", "d", None, "e"]


def test_nested_and_long_tokenize_to_the_same_rows(tmp_path, tiny_bert):
    long = pairs_table(3, 4, seed=3)
    long_shard = write(tmp_path, long, "long/a.parquet", row_group_size=5)
    nested_shard_ = write(tmp_path, nest_pairs(long), "nested/a.parquet", row_group_size=2)
    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    tables = [
        pa.concat_tables(TokenizeShard(model, cfg, STORAGE).tokenize(0, shard.uri)).sort_by("row")
        for cfg, shard in ((InputConfig(uri="x"), long_shard), (NESTED, nested_shard_))
    ]
    assert tables[0].to_pylist() == tables[1].to_pylist()


def _publish(tmp_path, table, scores, ranking: RankingConfig | None = None, columns=NESTED):
    shard = write(tmp_path, table)
    scored = ShardScores.empty(len(scores))
    scored.scores[:, 0] = scores
    flat = flatten_candidates(table, columns) if columns.layout == "nested" else table
    for row, passage in enumerate(flat.column("passage").to_pylist()):
        if passage is None:
            scored.rejected[row] = "null passage"
    out = str(tmp_path / "out")
    stats = publish_shard(
        shard, scored, WriteSettings(STORAGE, out, columns, ranking or RankingConfig(), "dg")
    )
    published = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    rejected_uri = checkpoint.rejected_uri(out, shard.relpath)
    rejected = (
        STORAGE.read_table(rejected_uri) if STORAGE.list_files(str(tmp_path / "out" / "_rejected")) else None
    )
    return published, rejected, stats


def test_publish_nests_each_list_best_first_with_scores(tmp_path):
    scores = np.array([0.1, 0.9, 0.5, np.nan, np.nan, 0.3], np.float32)
    published, rejected, stats = _publish(tmp_path, nested_shard(), scores, RankingConfig(normalize=True))
    assert published.column_names == ["query_id", "lang", "query", "candidates"]
    assert published.column("query_id").to_pylist() == ["q0", "q1", "q2", "q3"]  # one row per input row
    assert published.column("lang").to_pylist() == ["en", "de", "fr", "en"]
    lists = published.column("candidates").to_pylist()
    assert [c["doc_id"] for c in lists[0]] == ["b", "c", "a"]
    assert [c["rank"] for c in lists[0]] == [1, 2, 3]
    assert lists[0][0] == {
        "doc_id": "b",
        "passage": "the sky",
        "bm25": 2.0,
        "score": pytest.approx(0.9),
        "rank": 1,
        "score_norm": pytest.approx(1 / (1 + np.exp(-0.9))),
    }
    assert lists[1] is None and lists[2] == []  # a null list stays null, an empty one empty
    assert [c["doc_id"] for c in lists[3]] == ["e"]  # the rejected candidates left their list
    assert rejected.column_names == [
        "query_id",
        "lang",
        "query",
        "doc_id",
        "passage",
        "bm25",
        "reject_reason",
    ]
    assert rejected.column("query_id").to_pylist() == ["q3", "q3"]
    assert rejected.column("reject_reason").to_pylist() == ["null passage"] * 2
    assert (stats["rows_in"], stats["rows_out"], stats["rows_rejected"], stats["rows_dropped_top_k"]) == (
        6,
        4,
        2,
        0,
    )


def test_top_k_cuts_each_list(tmp_path):
    scores = np.array([0.1, 0.9, 0.5, np.nan, np.nan, 0.3], np.float32)
    published, _, stats = _publish(tmp_path, nested_shard(), scores, RankingConfig(top_k=2))
    lists = published.column("candidates").to_pylist()
    assert [c["doc_id"] for c in lists[0]] == ["b", "c"]
    assert [len(x or []) for x in lists] == [2, 0, 0, 1]
    assert stats["rows_out"] + stats["rows_rejected"] + stats["rows_dropped_top_k"] == stats["rows_in"]


def test_nested_publish_equals_long_publish_on_the_same_scores(tmp_path):
    long = pairs_table(4, 5, seed=1)
    scores = np.random.default_rng(0).normal(size=long.num_rows).astype(np.float32)
    ranking = RankingConfig(top_k=3, normalize=True)
    from_long, _, _ = _publish(tmp_path / "l", long, scores, ranking, InputConfig(uri="x"))
    from_nested, _, _ = _publish(tmp_path / "n", nest_pairs(long), scores, ranking)
    assert unnest_output(from_nested).to_pylist() == from_long.to_pylist()
