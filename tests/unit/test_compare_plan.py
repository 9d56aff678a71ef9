"""Planning a comparison (pipeline/rerank/compare/previous.py, shard.py, gate.py): which earlier
shards each shard reads, when a done shard's comparison is stale, and the gate's checks."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pyarrow as pa
import pytest

from pipeline.io import Storage
from pipeline.rerank.compare.gate import gate_checks, verdict
from pipeline.rerank.compare.previous import (
    PreviousRun,
    by_owner,
    holders,
    open_previous,
    plan_reads,
    routing_digest,
    row_hashes,
)
from pipeline.rerank.compare.shard import Comparison, stale
from pipeline.rerank.config import CompareConfig
from pipeline.rerank.input.split_queries import decode_hashes, query_id_hashes


def hashes(*ids: str) -> np.ndarray:
    return query_id_hashes(pa.array(list(ids)))


def previous_run(shards: dict[str, list[str]]) -> PreviousRun:
    relpaths = sorted(shards)
    parts = [hashes(*shards[r]) for r in relpaths]
    owner = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)])
    flat = np.concatenate(parts)
    order = np.argsort(flat, kind="stable")
    return PreviousRun("mem://prev", relpaths, flat[order], owner[order])


def test_holders_finds_every_shard_of_a_query():
    prev = previous_run({"a": ["q1", "q2"], "b": ["q3"], "c": ["q2"]})  # q2 split in the earlier run
    assert holders(prev, hashes("q2")).tolist() == [0, 2]
    assert holders(prev, hashes("q3", "nope")).tolist() == [1]
    assert holders(prev, hashes("nope")).tolist() == []


def test_plan_reads_follows_moved_queries_and_routes_gone_ones():
    prev = previous_run({"a": ["q1", "q2"], "b": ["q3", "q4"], "c": ["q5"]})
    current = {"a": hashes("q1", "q3"), "d": hashes("q2")}  # q3 moved to a; q4, q5 gone; b, c gone
    reads, orphans = plan_reads(prev, current)
    assert [r.relpath for r in reads["a"]] == ["a", "b"]
    assert [r.relpath for r in reads["d"]] == ["a"]
    assert all(not r.gone for r in reads["a"] + reads["d"])  # a's earlier queries are all still here
    assert [(o.relpath, sorted(decode_hashes(o.gone).tolist())) for o in orphans] == [
        ("b", sorted(hashes("q4").tolist())),
        ("c", sorted(hashes("q5").tolist())),
    ]


def test_gone_queries_go_to_the_shard_of_their_old_path():
    prev = previous_run({"a": ["q1", "q2"]})
    reads, orphans = plan_reads(prev, {"a": hashes("q1")})  # q2 gone; this run still has a
    assert orphans == []
    (read,) = reads["a"]
    assert decode_hashes(read.gone).tolist() == hashes("q2").tolist()
    reads, _ = plan_reads(prev, {"a": hashes("q9")})  # none of a's queries here: a reads it anyway
    assert [r.relpath for r in reads["a"]] == ["a"]


def test_by_owner_groups_in_one_sort():
    grouped = by_owner(np.array([5, 3, 9, 1], np.uint64), np.array([1, 0, 1, 0], np.int32))
    assert {k: v.tolist() for k, v in grouped.items()} == {0: [1, 3], 1: [5, 9]}
    assert by_owner(np.zeros(0, np.uint64), np.zeros(0, np.int32)) == {}


@pytest.mark.parametrize(
    "column",
    [
        pa.chunked_array([pa.array(["q1", "q2", None, "q1"])]),
        pa.chunked_array([pa.array(["q1", "q2", None, "q1"]).dictionary_encode()]),
    ],
)
def test_row_hashes_pick_the_rows_of_the_given_queries(column):
    assert np.isin(row_hashes(column), hashes("q1")).tolist() == [True, False, False, True]
    assert np.isin(row_hashes(column), hashes()).tolist() == [False] * 4
    assert row_hashes(column)[2] == 0  # a null id hashes to 0


def test_row_hashes_integer_ids():
    column = pa.chunked_array([pa.array([7, 8, 7])])
    assert np.isin(row_hashes(column), query_id_hashes(pa.array([7]))).tolist() == [True, False, True]


def test_routing_digest_changes_with_the_queries():
    prev = previous_run({"a": ["q1"]})
    one = routing_digest(prev, {"a": hashes("q1"), "b": hashes("q2")})
    assert one == routing_digest(prev, {"b": hashes("q2"), "a": hashes("q1")})
    assert one != routing_digest(prev, {"a": hashes("q1")})


def test_open_previous_without_success_or_hashes(tmp_path, caplog):
    storage = Storage()
    caplog.set_level(logging.WARNING)
    assert open_previous(storage, str(tmp_path / "none"), str(tmp_path / "out")) is None
    assert "no _SUCCESS" in caplog.text
    prev = tmp_path / "prev"
    storage.write_json_atomic(str(prev / "_SUCCESS"), {"digest": "d", "shards": [{"path": "a.parquet"}]})
    storage.write_json_atomic(
        str(prev / "_rerank/done/a.parquet.json"),
        {"shard": "a.parquet", "digest": "d", "input": {"size": 1, "version": "v"}},
    )
    assert open_previous(storage, str(prev), str(tmp_path / "out")) is None
    assert "keeps no query-id hashes" in caplog.text
    assert open_previous(storage, str(prev), str(prev) + "/") is None  # its own OUTPUT


def test_stale_comparisons():
    cmp = Comparison(against="s3://prev", epsilon=0.0, routing="r1", qrels_uri="q.txt", qrels_digest="abc")
    current = {
        "changes": {"against": "s3://prev", "epsilon": 0.0, "routing": "r1", "added": 1},
        "quality": {"qrels": "abc", "first_stage_column": None, "queries": 3},
    }
    assert not stale(current, cmp)
    assert stale({}, cmp)
    assert stale({**current, "changes": {**current["changes"], "epsilon": 0.1}}, cmp)
    assert stale({**current, "changes": {**current["changes"], "routing": "r2"}}, cmp)
    assert stale({**current, "quality": {**current["quality"], "qrels": "other"}}, cmp)
    assert not stale({}, Comparison())  # nothing asked for: nothing stale


def test_comparison_travels_without_its_qrels():
    cmp = Comparison(qrels_uri="q.txt", qrels_digest="abc")
    cmp._qrels = object()  # type: ignore[assignment]
    copy = pickle.loads(pickle.dumps(cmp))
    assert copy._qrels is None and copy.qrels_digest == "abc"


SUMMARY = {"queries": 10, "first_stage": {"ndcg10": 0.50}, "reranked": {"ndcg10": 0.60}}


def test_gate_min_ndcg():
    (check,) = gate_checks(CompareConfig(qrels="q", min_ndcg=0.55), SUMMARY, None, None)
    assert check["passed"] and check["value"] == 0.60
    (check,) = gate_checks(CompareConfig(qrels="q", min_ndcg=0.65), SUMMARY, None, None)
    assert not check["passed"] and "0.6000" in check["what"] and "0.65" in check["what"]


def test_gate_drop_against_first_stage_and_the_previous_run():
    previous = {"reranked": {"ndcg10": 0.70}}
    checks = gate_checks(CompareConfig(qrels="q", max_ndcg_drop=0.05), SUMMARY, previous, "s3://prev")
    assert [(c["against"], c["passed"]) for c in checks] == [("first_stage", True), ("previous_run", False)]
    assert checks[1]["value"] == pytest.approx(0.10) and "s3://prev" in checks[1]["what"]
    result = verdict(checks, SUMMARY, "q")
    assert not result["passed"] and result["failed"] == [checks[1]]


def test_gate_with_no_judged_query_fails():
    empty = {"queries": 0, "first_stage": None, "reranked": None}
    (check,) = gate_checks(CompareConfig(qrels="q", min_ndcg=0.1), empty, None, None)
    assert not check["passed"] and "n/a" in check["what"]
    assert verdict([], empty, "q")["passed"]  # no threshold: nothing to fail
