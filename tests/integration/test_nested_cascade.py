"""The nested layout and cascades end to end on local Ray: nested scores equal the long layout's on
the same pairs, a nested run killed after its first publish resumes to the same output, and a
stage-1 output feeds a stage 2 (--previous-prefix, --prefilter-column / --prefilter-top-k). The
nested layout's cascade (struct fields renamed, each list prefiltered) is tested without Ray, in
tests/unit/test_cascade.py: four runs here are what the suite can afford."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage
from tests.helpers import (
    assert_reconciled,
    done_markers,
    nest_pairs,
    pairs_table,
    read_output,
    tables_equal,
    unnest_output,
)

pytestmark = pytest.mark.integration

STORAGE = Storage()


def _flags(model: str) -> list[str]:
    return ["--model", model, "--max-length", "128", "--rows-per-call", "24"]  # a call per shard


@pytest.fixture(scope="module")
def runs(ray_address, tmp_path_factory, tiny_bert) -> SimpleNamespace:
    """The same pairs as 3 long and 3 nested shards (one null passage). The long layout runs
    uninterrupted; the nested run's driver is killed right after its first publish (a test crash
    point) and the run resumed. One golden then shows both that nested scores equal the long
    layout's and that a resumed nested run equals an uninterrupted run (a run less for the suite)."""
    root = tmp_path_factory.mktemp("layouts")
    for s in range(3):
        table = pairs_table(4, 6, seed=s, prefix=f"s{s}q")
        if s == 0:
            passages = table.column("passage").to_pylist()
            passages[7] = None  # quarantined in both layouts
            table = table.set_column(3, "passage", pa.array(passages, pa.string()))
        for layout, data, group_rows in (("long", table, 7), ("nested", nest_pairs(table), 2)):
            path = root / f"{layout}-in" / f"part-{s}.parquet"
            path.parent.mkdir(exist_ok=True)
            pq.write_table(data, path, row_group_size=group_rows)
    ns = SimpleNamespace(root=root, model=tiny_bert, long=root / "long-out", nested=root / "nested-out")
    assert main(["run", str(root / "long-in"), str(ns.long), *_flags(tiny_bert)]) == 0
    args = ["run", str(root / "nested-in"), str(ns.nested), *_flags(tiny_bert), "--layout", "nested"]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": "publish_in_flight"}
    ns.killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], env=env, capture_output=True, timeout=300
    )
    ns.markers_after_kill = len(done_markers(ns.nested / "_rerank" / "done"))
    ns.success_after_kill = (ns.nested / "_SUCCESS").exists()
    ns.resumed = main(args)
    return ns


def _unnested(output: Path) -> dict[str, pa.Table]:
    return {rel: unnest_output(t) for rel, t in read_output(output).items()}


@pytest.mark.timeout(600)
def test_nested_run_killed_and_resumed_equals_the_long_run(runs):
    assert runs.killed.returncode == -signal.SIGKILL, runs.killed.stderr[-2000:]
    assert runs.markers_after_kill < 3 and not runs.success_after_kill
    assert runs.resumed == 0
    long, nested = read_output(runs.long), read_output(runs.nested)
    assert set(nested) == set(long) == {f"part-{s}.parquet" for s in range(3)}
    for table in nested.values():
        assert table.column_names == ["query_id", "query", "candidates"]
        assert table.num_rows == 4  # one row per query, as in the input
        fields = [f.name for f in table.schema.field("candidates").type.value_type]
        assert fields == ["doc_id", "passage", "extra", "score", "rank"]
    tables_equal(_unnested(runs.nested), long)  # same rows, order, ranks; scores within fp32 rounding
    long_rejected, nested_rejected = (
        STORAGE.read_table(str(out / "_rejected" / "part-0.parquet")) for out in (runs.long, runs.nested)
    )
    assert nested_rejected.to_pylist() == long_rejected.to_pylist()  # long rows, with reject_reason
    assert nested_rejected.num_rows == 1
    for out in (runs.long, runs.nested):
        manifest = STORAGE.read_json(str(out / "_SUCCESS"))
        assert (manifest["totals"]["rows_in"], manifest["totals"]["rows_rejected"]) == (72, 1)
        assert manifest["totals"]["reconciled"] is True
    assert_reconciled_nested(runs.root / "nested-in", runs.nested)
    assert not [p for p in runs.nested.rglob("*") if p.name.startswith(".tmp-")]


def assert_reconciled_nested(input_dir: Path, out: Path) -> None:
    manifest = STORAGE.read_json(str(out / "_SUCCESS"))
    for entry in manifest["shards"]:
        lists = pq.read_table(input_dir / entry["path"]).column("candidates")
        assert entry["rows_in"] == sum(len(x) for x in lists.to_pylist())
        assert entry["rows_out"] == len(unnest_output(pq.read_table(out / entry["path"])))
        assert entry["rows_in"] == entry["rows_out"] + entry["rows_rejected"] + entry["rows_dropped_top_k"]


def test_stage_one_output_feeds_stage_two(runs, tmp_path, caplog):
    stage2 = tmp_path / "stage2"
    args = ["run", str(runs.long), str(stage2), *_flags(runs.model)]
    assert main(args) == 2  # stage 1's score and rank: refused, naming the flag
    assert "already has a column 'score'" in caplog.text and "--previous-prefix" in caplog.text
    cascade = ["--previous-prefix", "stage1_", "--prefilter-column", "stage1_score", "--prefilter-top-k", "3"]
    assert main([*args, *cascade, "--top-k", "5"]) == 0
    stage1 = read_output(runs.long)
    for rel, table in read_output(stage2).items():
        assert table.column_names == [
            *stage1[rel].column_names[:-2],
            "stage1_score",
            "stage1_rank",
            "score",
            "rank",
        ]
        for q in dict.fromkeys(table.column("query_id").to_pylist()):
            rows = table.filter(pc.equal(table.column("query_id"), q)).to_pylist()
            before = [r for r in stage1[rel].to_pylist() if r["query_id"] == q]
            assert [r["rank"] for r in rows] == list(range(1, min(5, len(before)) + 1))
            scored, unscored = rows[:3], rows[3:]
            assert {r["doc_id"] for r in scored} == {r["doc_id"] for r in before[:3]}  # stage 1's best 3
            assert all(r["score"] is not None for r in scored)
            assert [r["score"] for r in scored] == sorted((r["score"] for r in scored), reverse=True)
            assert [r["doc_id"] for r in unscored] == [r["doc_id"] for r in before[3:5]]  # in stage-1 order
            assert all(r["score"] is None for r in unscored)
    manifest = assert_reconciled(runs.long, stage2)
    assert [s["rows_not_scored"] for s in manifest["shards"]] == [4 * 3 - 1, 4 * 3, 4 * 3]  # 6 a query but 1
    assert manifest["totals"]["rows_not_scored"] == 3 * 4 * 3 - 1
    assert manifest["last_run"]["pairs_scored"] == 3 * 4 * 3
    # every figure counts pairs by one rule: not the prefilter's unscored rows, not the quarantined one
    assert sum(n["pairs"] for n in manifest["last_run"]["nodes"].values()) == 3 * 4 * 3
    report = STORAGE.read_json(str(stage2 / "_rerank" / "report.json"))
    assert report["pairs_scored"] == report["summary"]["pairs_scored"] == 3 * 4 * 3
    assert report["nodes"] == report["summary"]["nodes"] == manifest["last_run"]["nodes"]
    node_lines = [r for r in caplog.records if r.getMessage().startswith("node ")]
    assert sum(r.args[2] for r in node_lines) == 3 * 4 * 3  # the summary's "node N: A actor(s), P pairs"
    # of the 35 unscored rows --top-k 5 dropped one a query (6 candidates: 3 scored, 3 not), but
    # none of the query that lost a row to stage 1's quarantine (5 candidates)
    assert manifest["totals"]["rows_not_scored_dropped_top_k"] == 4 * 3 - 1
    assert (
        "35 candidate(s) lay outside --prefilter-top-k and were not scored: 24 published after the "
        "scored ones (null scores), 11 dropped by --top-k"
    ) in caplog.text
