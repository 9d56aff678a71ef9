"""The quality gate's figures: qrels loading (formats, every refusal), first-stage positions, and
per-query nDCG@10 / MRR@10 / Recall@100 checked against ir_measures run directly and by hand."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ir_measures import RR, R, nDCG

from pipeline.errors import RerankError
from pipeline.io import Storage
from pipeline.rerank.compare.qrels import Qrels, judged_query_hashes, load_qrels
from pipeline.rerank.compare.quality import (
    MEASURES,
    first_stage_positions,
    quality_summary,
    shard_quality,
)
from pipeline.rerank.input.split_queries import query_id_hashes

STORAGE = Storage()

# 1: graded; 2: its one relevant doc (d5) is not among the candidates; 3: relevant doc 2nd first,
# 1st reranked; 5: judged but in another shard. The shard's query 4 is not judged.
QRELS_TEXT = """# query iter doc relevance
1 0 d1 2
1 0 d3 1
1 0 d9 0

2 0 d5 1
2 0 d4 0
3\t0\td7\t1
5 0 d1 1
"""
# query, doc, first-stage score, reranked rank
SHARD = [
    (1, "d1", 5.0, 1),
    (1, "d2", 9.0, 3),
    (1, "d3", 1.0, 2),
    (2, "d4", 3.0, 2),
    (2, "d6", 2.0, 1),
    (3, "d7", 1.0, 1),
    (3, "d8", 2.0, 2),
    (4, "x", 1.0, 1),
    (4, "y", 2.0, 2),
]


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def shard_tables(qrels: Qrels) -> pa.Table:
    qid, doc, bm25, rank = (list(c) for c in zip(*SHARD))
    table = pa.table({"qid": qid, "docid": doc, "bm25": bm25})
    positions = first_stage_positions(table, query_id="qid", column="bm25")
    ranked = pa.table({"qid": qid, "docid": doc, "rank": rank})
    first_stage = pa.table({"qid": qid, "docid": doc, "position": positions})
    return shard_quality(ranked, first_stage, qrels, query_id="qid", doc_id="docid")


def test_figures_match_ir_measures_run_directly(tmp_path):
    uri = write(tmp_path, "qrels.txt", QRELS_TEXT)
    per_query = shard_tables(load_qrels(STORAGE, uri))
    assert per_query["query_id"].to_pylist() == ["1", "2", "3"]  # 4 unjudged, 5 not in the shard
    shard_qrels = {"1": {"d1": 2, "d3": 1, "d9": 0}, "2": {"d5": 1, "d4": 0}, "3": {"d7": 1}}  # as QRELS_TEXT
    runs = {
        "first_stage": {"1": {"d2": 3, "d1": 2, "d3": 1}, "2": {"d4": 2, "d6": 1}, "3": {"d8": 2, "d7": 1}},
        "reranked": {"1": {"d1": 3, "d3": 2, "d2": 1}, "2": {"d6": 2, "d4": 1}, "3": {"d7": 2, "d8": 1}},
    }
    measures = {"ndcg10": nDCG @ 10, "mrr10": RR @ 10, "recall100": R @ 100}
    summary = quality_summary(per_query)
    assert summary["queries"] == 3
    for order, run in runs.items():
        expected = ir_measures.calc_aggregate(list(measures.values()), shard_qrels, run)
        for name, measure in measures.items():
            assert summary[order][name] == pytest.approx(expected[measure], abs=1e-6)
        for metric in ir_measures.iter_calc(list(measures.values()), shard_qrels, run):
            name = next(n for n, m in measures.items() if m == metric.measure)
            row = per_query["query_id"].to_pylist().index(metric.query_id)
            assert per_query[f"{name}_{order}"][row].as_py() == pytest.approx(metric.value)


def test_figures_by_hand(tmp_path):
    per_query = shard_tables(load_qrels(STORAGE, write(tmp_path, "qrels.txt", QRELS_TEXT))).to_pylist()
    by_query = {row["query_id"]: row for row in per_query}
    assert by_query["3"]["mrr10_first_stage"] == 0.5  # d7 2nd by bm25
    assert by_query["3"]["mrr10_reranked"] == 1.0
    assert by_query["1"]["ndcg10_reranked"] == pytest.approx(1.0)  # d1 (2), d3 (1): the ideal order
    assert by_query["2"]["recall100_first_stage"] == by_query["2"]["recall100_reranked"] == 0.0
    assert by_query["1"]["recall100_first_stage"] == 1.0


def test_no_judged_query_gives_an_empty_table_and_no_means(tmp_path):
    qrels = load_qrels(STORAGE, write(tmp_path, "qrels.txt", "99 0 d1 1\n"))
    per_query = shard_tables(qrels)
    assert per_query.num_rows == 0 and per_query.column_names[0] == "query_id"
    summary = quality_summary(per_query)
    assert summary == {
        "queries": 0,
        "first_stage": dict.fromkeys(MEASURES),
        "reranked": dict.fromkeys(MEASURES),
    }


def test_first_stage_positions_in_input_order():
    table = pa.table({"q": ["a", "b", "a", "a", "b", None, None]})
    positions = first_stage_positions(table, query_id="q", column=None)
    assert positions.tolist() == [1, 1, 2, 3, 2, 1, 2]
    empty = first_stage_positions(table.slice(0, 0), query_id="q", column=None)
    assert empty.dtype == np.int64 and len(empty) == 0


def test_first_stage_positions_by_score_ties_and_nulls_in_input_order():
    table = pa.table(
        {
            "q": [1, 1, 1, 1, 2, 2, 3, 3, 3],
            "s": [1.0, None, 3.0, 1.0, None, 2.0, math.nan, None, -5.0],
        }
    )
    positions = first_stage_positions(table, query_id="q", column="s")
    assert positions.tolist() == [2, 4, 1, 3, 2, 1, 2, 3, 1]
    ints = pa.table({"q": ["a", "a", "a"], "s": pa.array([2, 7, 2], pa.int32())})
    assert first_stage_positions(ints, query_id="q", column="s").tolist() == [2, 1, 3]


def test_trec_text_with_comments_blank_lines_and_a_repeated_judgment(tmp_path):
    text = "# header\n\n  q2 0 b 1\r\nq1 Q0 a 0\n   # indented comment\nq2 0 b 1\nq1\t0\tc\t3\n"
    qrels = load_qrels(STORAGE, write(tmp_path, "qrels", text))
    assert qrels.table.schema.types == [pa.string(), pa.string(), pa.int32()]
    assert qrels.table.to_pylist() == [
        {"query_id": "q1", "doc_id": "a", "relevance": 0},
        {"query_id": "q1", "doc_id": "c", "relevance": 3},
        {"query_id": "q2", "doc_id": "b", "relevance": 1},
    ]
    assert qrels.queries == 2 and len(qrels.digest) == 16
    same = load_qrels(STORAGE, write(tmp_path, "same", "q1 0 c 3\nq2 0 b 1\nq1 0 a 0\n"))
    other = load_qrels(STORAGE, write(tmp_path, "other", "q1 0 c 2\nq2 0 b 1\nq1 0 a 0\n"))
    assert same.digest == qrels.digest != other.digest


def test_parquet_with_integer_ids_by_name_and_by_magic(tmp_path):
    table = pa.table(
        {"query_id": [7, 7, 12], "doc_id": [100, 101, 100], "relevance": [1.0, 0.0, 2.0], "x": [1, 2, 3]}
    )
    pq.write_table(table, tmp_path / "qrels.parquet")
    pq.write_table(table, tmp_path / "qrels.bin")
    for name in ("qrels.parquet", "qrels.bin"):
        qrels = load_qrels(STORAGE, str(tmp_path / name))
        assert qrels.table.column_names == ["query_id", "doc_id", "relevance"]
        assert qrels.table["query_id"].to_pylist() == ["12", "7", "7"]
        assert qrels.table["relevance"].type == pa.int32() and qrels.queries == 2
    text = load_qrels(STORAGE, write(tmp_path, "qrels.txt", "7 0 100 1\n7 0 101 0\n12 0 100 2\n"))
    assert text.digest == qrels.digest


def test_a_missing_file_names_it_and_the_formats(tmp_path):
    uri = str(tmp_path / "nope.txt")
    with pytest.raises(RerankError, match="no such file") as e:
        load_qrels(STORAGE, uri)
    assert uri in str(e.value) and "TREC qrels file (qid 0 docid rel)" in str(e.value)
    with pytest.raises(RerankError, match="no such file"):
        load_qrels(STORAGE, str(tmp_path / "nope.parquet"))


def test_wrong_parquet_columns_name_what_is_there_and_what_is_needed(tmp_path):
    pq.write_table(pa.table({"qid": ["1"], "doc_id": ["a"], "rel": [1]}), tmp_path / "q.parquet")
    with pytest.raises(RerankError) as e:
        load_qrels(STORAGE, str(tmp_path / "q.parquet"))
    message = str(e.value)
    assert "no column(s) query_id, relevance" in message and "found: qid, doc_id, rel" in message
    assert "needs query_id, doc_id, relevance" in message


def test_fractional_or_null_parquet_relevance_is_refused(tmp_path):
    pq.write_table(
        pa.table({"query_id": ["1", "1"], "doc_id": ["a", "b"], "relevance": [1.0, 0.5]}),
        tmp_path / "f.parquet",
    )
    with pytest.raises(
        RerankError, match=r"1 non-integer value\(s\), e.g. 0.5; store relevance grades as integers"
    ):
        load_qrels(STORAGE, str(tmp_path / "f.parquet"))
    pq.write_table(
        pa.table({"query_id": ["1"], "doc_id": ["a"], "relevance": pa.array([None], pa.int64())}),
        tmp_path / "n.parquet",
    )
    with pytest.raises(RerankError, match=r"relevance has 1 null"):
        load_qrels(STORAGE, str(tmp_path / "n.parquet"))


def test_bad_lines_name_the_first_and_count_the_rest(tmp_path):
    text = "1 0 a 1\n1 0 b\n1 0 c 1 extra\n1 0 d 1\n"
    with pytest.raises(RerankError) as e:
        load_qrels(STORAGE, write(tmp_path, "q.txt", text))
    message = str(e.value)
    assert "line 2: 3 field(s), expected 4 (qid iter docid rel): '1 0 b'" in message
    assert "(and 1 more bad line(s))" in message and "TREC qrels file" in message
    with pytest.raises(RerankError, match=r"line 1: relevance '0.5' is not an integer: '1 0 a 0.5'"):
        load_qrels(STORAGE, write(tmp_path, "r.txt", "1 0 a 0.5\n"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_no_judgments_is_refused(tmp_path, text):
    with pytest.raises(RerankError, match="no judgments") as e:
        load_qrels(STORAGE, write(tmp_path, "q.txt", text))
    assert "TREC qrels file" in str(e.value)


def test_a_pair_judged_twice_differently_is_named(tmp_path):
    text = "1 0 a 1\n1 0 a 2\n2 0 b 0\n2 0 b 1\n"
    with pytest.raises(RerankError) as e:
        load_qrels(STORAGE, write(tmp_path, "q.txt", text))
    message = str(e.value)
    assert "query '1' doc 'a' is judged more than once with different relevance (1 and 2)" in message
    assert "(and 1 more such pair(s))" in message and "keep one judgment per (query, doc)" in message


def test_judged_query_hashes_meet_integer_and_string_corpus_ids(tmp_path):
    qrels = load_qrels(STORAGE, write(tmp_path, "q.txt", "1 0 a 1\n7 0 a 1\n08 0 a 1\nabc 0 a 1\n-3 0 a 1\n"))
    judged = judged_query_hashes(qrels)
    assert judged.dtype == np.uint64 and list(judged) == sorted(set(judged))
    as_int = np.intersect1d(judged, query_id_hashes(pa.array([1, 7, 8, 99, -3])))
    np.testing.assert_array_equal(as_int, query_id_hashes(pa.array([1, 7, -3])))  # "08" is not 8
    as_text = np.intersect1d(judged, query_id_hashes(pa.array(["08", "abc", "7", "x"])))
    np.testing.assert_array_equal(as_text, query_id_hashes(pa.array(["08", "abc", "7"])))
    assert len(np.intersect1d(judged, query_id_hashes(pa.array([2, 3])))) == 0


def test_qrels_on_object_storage(s3):
    fs, endpoint = s3
    fs.mkdir("qrels-bucket")
    fs.pipe("qrels-bucket/q.txt", b"1 0 a 1\n2 0 b 0\n")
    storage = Storage.from_settings(endpoint_url=endpoint)
    qrels = load_qrels(storage, "s3://qrels-bucket/q.txt")
    assert qrels.queries == 2 and qrels.uri == "s3://qrels-bucket/q.txt"
    with pytest.raises(RerankError, match="--qrels s3://qrels-bucket/none.txt: no such file"):
        load_qrels(storage, "s3://qrels-bucket/none.txt")
