"""Cascades without Ray: an earlier run's columns renamed (--previous-prefix), the prefilter's
selection and ranking (--prefilter-column / --prefilter-top-k), their checks and fingerprint."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, RankingConfig, reserved_columns
from pipeline.rerank.input.cascade import (
    NOT_SCORED,
    UNSCORED_COLUMN,
    group_codes,
    input_prefilter_column,
    mark_not_scored,
    name_problems,
    output_prefilter_column,
    prefilter_selection,
    previous_renames,
)
from pipeline.rerank.input.discovery import contract_problems
from pipeline.rerank.input.layout import read_pairs
from pipeline.rerank.output import checkpoint
from pipeline.rerank.output.fingerprint import fingerprint
from pipeline.rerank.output.ranking import rank_table
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import WriteSettings, publish_shard
from tests.helpers import job, nest_pairs

STORAGE = Storage()
SHARD = ShardFile("s.parquet", "s.parquet", 1, "v")
PREFIX = InputConfig(uri="x", previous_prefix="stage1_")


def test_previous_output_columns_are_renamed_with_the_prefix():
    names = [
        "query_id",
        "score",
        "rank",
        "score_norm",
        "score_l28",
        "score_l28_norm",
        "chunks",
        "best_chunk_char",
    ]
    renames = previous_renames(names, "stage1_")
    assert renames == {n: f"stage1_{n}" for n in names[1:]}
    assert previous_renames(names, None) == {}
    every = reserved_columns(["score_l28", "score_l40"])  # whatever the job writes, it can rename
    assert previous_renames(every, "p_") == {n: f"p_{n}" for n in every}


def test_without_the_prefix_an_output_column_is_refused_naming_the_flag():
    (problem,) = name_problems("s.parquet", ["query_id", "score"], ["score"], None)
    assert "already has a column 'score'" in problem and "--previous-prefix" in problem
    assert name_problems("s.parquet", ["query_id", "score", "rank"], ["score"], "stage1_") == []
    (clash,) = name_problems("s.parquet", ["score", "stage1_score"], ["score"], "stage1_")
    assert "choose another prefix" in clash
    (helper,) = name_problems("s.parquet", ["__rerank_x"], ["score"], None)
    assert "'__rerank_x'" in helper


def test_prefilter_column_named_before_or_after_renaming():
    given = InputConfig(
        uri="x", previous_prefix="stage1_", prefilter_column="stage1_score", prefilter_top_k=2
    )
    assert input_prefilter_column(["score", "bm25"], given) == "score"
    assert output_prefilter_column(["stage1_score"], given) == "stage1_score"
    plain = InputConfig(uri="x", previous_prefix="stage1_", prefilter_column="score", prefilter_top_k=2)
    assert input_prefilter_column(["score"], plain) == "score"
    assert output_prefilter_column(["stage1_score"], plain) == "stage1_score"
    assert input_prefilter_column(["bm25"], plain) is None


def test_prefilter_checks_the_column_before_scoring():
    schema = pa.schema([(c, pa.string()) for c in ("query_id", "query", "doc_id", "passage")])
    cfg = InputConfig(uri="x", prefilter_column="bm25", prefilter_top_k=3)
    (missing,) = contract_problems(SHARD, schema, cfg, ["score"])
    assert "no column 'bm25'" in missing and "--prefilter-column" in missing
    (text,) = contract_problems(SHARD, schema.append(pa.field("bm25", pa.string())), cfg, ["score"])
    assert "not a number" in text
    assert contract_problems(SHARD, schema.append(pa.field("bm25", pa.int64())), cfg, ["score"]) == []


def test_prefilter_flags_come_together_and_enter_the_fingerprint(tmp_path):
    with pytest.raises(ConfigError, match="--prefilter-top-k N"):
        job(tmp_path, tmp_path / "o", "m", input={"uri": "i", "prefilter_column": "bm25"})
    with pytest.raises(ConfigError, match="--prefilter-column COL"):
        job(tmp_path, tmp_path / "o", "m", input={"uri": "i", "prefilter_top_k": 3})
    with pytest.raises(ConfigError, match="previous_prefix"):
        job(tmp_path, tmp_path / "o", "m", input={"uri": "i", "previous_prefix": ""})
    base = fingerprint(job("i", "o", "m"), "float32")
    assert not {"layout", "previous_prefix", "prefilter"} & set(base)  # unchanged without the flags
    variants = [
        {"layout": "nested"},
        {"layout": "nested", "candidates_column": "cands"},
        {"previous_prefix": "stage1_"},
        {"prefilter_column": "bm25", "prefilter_top_k": 3},
        {"prefilter_column": "bm25", "prefilter_top_k": 4},
    ]
    prints = [fingerprint(job("i", "o", "m", input={"uri": "i", **v}), "float32") for v in variants]
    assert len({str(sorted(p.items())) for p in [base, *prints]}) == len(variants) + 1


def test_selection_per_query_ties_in_input_order_nulls_last_rejects_take_no_place():
    groups = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    values = pa.array([1.0, 3.0, None, 3.0, 2.0, None, 5.0, 9.0])
    eligible = np.array([True, True, True, True, True, True, True, False])
    selected = prefilter_selection(groups, values, eligible, 2)
    assert selected.tolist() == [False, True, False, True, False, True, True, False]
    assert prefilter_selection(groups, values, eligible, 4)[:5].tolist() == [True, True, False, True, True]
    ints = pa.array([2**62 + 1, 2**62, 2**62 + 1], pa.int64())  # exact, not through float64
    assert prefilter_selection(np.zeros(3, int), ints, np.ones(3, bool), 1).tolist() == [True, False, False]


def test_group_codes_number_dictionary_values_by_first_appearance_nulls_included():
    ids = pa.DictionaryArray.from_arrays(pa.array([2, None, 2, 0, None], pa.int32()), ["q2", "q1", "q0"])
    assert group_codes(pa.chunked_array([ids])).tolist() == [0, 1, 0, 2, 1]


def test_rank_table_puts_unscored_rows_last_in_the_given_order():
    table = pa.table({"q": ["a"] * 5})
    scores = np.array([np.nan, 0.2, np.nan, 0.9, np.nan], np.float32)
    ranked = rank_table(
        table.append_column("i", pa.array(range(5))), scores, "q", unscored_order=np.array([5, 0, 1, 0, 0])
    )
    assert ranked.column("i").to_pylist() == [3, 1, 4, 2, 0]
    assert ranked.column("rank").to_pylist() == [1, 2, 3, 4, 5]


def _long_shard(tmp_path, row_group_size=3):
    table = pa.table(
        {
            "query_id": ["a"] * 5 + ["b"] * 3,
            "query": ["x"] * 8,
            "doc_id": [f"d{i}" for i in range(8)],
            "passage": ["p", "p", None, "p", "p", "p", "p", "p"],
            "bm25": [1.0, 4.0, 9.0, 3.0, 2.0, None, 1.0, 1.0],
        }
    )
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return STORAGE.list_shards(str(path.parent))[0], table


PREFILTER = InputConfig(uri="x", prefilter_column="bm25", prefilter_top_k=2)


def test_read_pairs_chooses_over_whole_queries_across_row_groups(tmp_path):
    shard, _ = _long_shard(tmp_path)
    pairs = pa.concat_tables(read_pairs(STORAGE, shard.uri, PREFILTER))
    # a: d2 is rejected (null passage) and takes no place: d1 (4.0) and d3 (3.0); b: d6, d7 (tie, null last)
    assert pairs.column(UNSCORED_COLUMN).to_pylist() == [True, False, False, False, True, True, False, False]
    reasons = mark_not_scored([None] * 2 + ["null passage"] + [None] * 5, pairs)
    assert reasons == [NOT_SCORED, None, "null passage", None, NOT_SCORED, NOT_SCORED, None, None]


def test_publish_puts_unscored_after_scored_with_null_scores(tmp_path):
    shard, table = _long_shard(tmp_path)
    pairs = pa.concat_tables(read_pairs(STORAGE, shard.uri, PREFILTER))
    scored = ShardScores.empty(8)
    scored.scores[:, 0] = [np.nan, 0.1, np.nan, 0.7, np.nan, np.nan, 0.3, 0.5]
    scored.rejected = {2: "null passage"} | {
        i: NOT_SCORED for i, skip in enumerate(pairs.column(UNSCORED_COLUMN).to_pylist()) if skip
    }
    out = str(tmp_path / "out")
    stats = publish_shard(
        shard, scored, WriteSettings(STORAGE, out, PREFILTER, RankingConfig(normalize=True), "dg")
    )
    ranked = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    assert ranked.column("doc_id").to_pylist() == ["d3", "d1", "d4", "d0", "d7", "d6", "d5"]
    assert ranked.column("rank").to_pylist() == [1, 2, 3, 4, 1, 2, 3]
    assert ranked.column("score").null_count == 3 and ranked.column("score_norm").null_count == 3
    assert ranked.column("score").to_pylist()[2:4] == [None, None]
    assert stats["rows_not_scored"] == 3 and stats["rows_rejected"] == 1
    assert stats["rows_in"] == stats["rows_out"] + stats["rows_rejected"] + stats["rows_dropped_top_k"]
    top = publish_shard(
        shard, scored, WriteSettings(STORAGE, out, PREFILTER, RankingConfig(top_k=3), "dg")
    )  # then top-k
    ranked = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    assert ranked.column("doc_id").to_pylist() == ["d3", "d1", "d4", "d7", "d6", "d5"]
    assert (top["rows_out"], top["rows_dropped_top_k"], top["rows_not_scored"]) == (6, 1, 3)
    # the row --top-k dropped is d0, unscored: of the 3 unscored rows, 2 are published, 1 dropped
    assert (stats["rows_not_scored_dropped_top_k"], top["rows_not_scored_dropped_top_k"]) == (0, 1)


def test_a_previous_stage_is_renamed_and_prefiltered_in_the_nested_layout(tmp_path):
    stage1 = pa.table(
        {
            "query_id": ["a"] * 3,
            "query": ["x"] * 3,
            "doc_id": ["d0", "d1", "d2"],
            "passage": ["p"] * 3,
            "score": pa.array([2.0, 1.0, 0.5], pa.float32()),
            "rank": pa.array([1, 2, 3], pa.int32()),
        }
    )
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(nest_pairs(stage1), path)
    shard = STORAGE.list_shards(str(path.parent))[0]
    cfg = InputConfig(
        uri="x",
        layout="nested",
        previous_prefix="stage1_",
        prefilter_column="stage1_score",
        prefilter_top_k=2,
    )
    pairs = pa.concat_tables(read_pairs(STORAGE, shard.uri, cfg))
    assert pairs.column(UNSCORED_COLUMN).to_pylist() == [False, False, True]
    scored = ShardScores.empty(3)
    scored.scores[:, 0] = [0.1, 0.8, np.nan]
    scored.rejected = {2: NOT_SCORED}
    publish_shard(shard, scored, WriteSettings(STORAGE, str(tmp_path / "out"), cfg, RankingConfig(), "dg"))
    (lst,) = STORAGE.read_table(str(tmp_path / "out" / "a.parquet")).column("candidates").to_pylist()
    assert [(c["doc_id"], c["stage1_score"], c["stage1_rank"], c["score"], c["rank"]) for c in lst] == [
        ("d1", 1.0, 2, pytest.approx(0.8), 1),
        ("d0", 2.0, 1, pytest.approx(0.1), 2),
        ("d2", 0.5, 3, None, 3),
    ]
