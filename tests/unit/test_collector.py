"""One collector, one counting rule: blocks fed as the runner feeds them (the assembler says which
rows count, the collector adds them up), with quarantined and prefilter-unscored rows, a block
delivered twice and a retried call; the console's pairs, the summary's pairs per node and actor,
and report.json's figures all equal `pairs_scored`. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.models.windows import WINDOW_FIELDS
from pipeline.rerank.input.cascade import NOT_SCORED
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.console import Snapshot
from pipeline.rerank.report.html import render_html
from pipeline.rerank.report.run_report import report_data
from pipeline.rerank.stages.score import scored_schema
from pipeline.rerank.stream.assembly import ShardAssembler
from pipeline.rerank.stream.chunk_scores import Aggregate

T0 = 1_800_000_000.0


class LastSnapshot:
    """A console that keeps what it was last shown."""

    def __init__(self) -> None:
        self.last: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> None:
        self.last = snapshot

    def close(self) -> None:
        """Nothing to end."""


def block(
    rows: list[tuple[int, int]],
    *,
    node: str,
    actor: int,
    start: float,
    rejects: dict[tuple[int, int], str] | None = None,
    windows: list[tuple[int, int]] | None = None,
) -> pa.Table:
    """One scoring call's block of (shard, row) pairs, 10 tokens each (none if rejected); in chunk
    mode `windows` gives each pair's (window, windows of its row)."""
    rejects = rejects or {}
    reject = [rejects.get(r) for r in rows]
    tokens = np.array([0 if why else 10 for why in reject], np.int32)
    n = len(rows)
    table = pa.Table.from_pydict(
        {
            "shard": np.array([s for s, _ in rows], np.int32),
            "row": np.array([r for _, r in rows], np.int64),
            "score": np.arange(n, dtype=np.float32),
            "tokens": tokens,
            "padded_tokens": tokens + np.int32(2) * (tokens > 0),
            "error": [None] * n,
            "reject": reject,
            "node": [node] * n,
            "actor": np.full(n, actor, np.int32),
            "call_start": np.full(n, start),
            "call_end": np.full(n, start + 1.0),
        },
        schema=scored_schema(["score"]),
    )
    if windows is None:
        return table
    extra = {"window": [w for w, _ in windows], "windows": [k for _, k in windows]}
    extra |= {"window_char": [0] * n, "windows_not_scored": [0] * n}
    for f in WINDOW_FIELDS:
        table = table.append_column(f, pa.array(extra[f.name], f.type))
    return table


def run_blocks(
    blocks: list[pa.Table], expected: dict[int, int], aggregate: Aggregate | None = None
) -> tuple[RunCollector, LastSnapshot, int]:
    """Feeds the blocks as `runner.stream_scores` does; returns the collector, its console and
    the pairs the assembler counted."""
    collector = RunCollector(started_at=T0, max_length=64, score_columns=["score"])
    collector.plan_started(1.0)
    console = LastSnapshot()
    collector.show_progress(console, shards_total=len(expected), pairs_total=sum(expected.values()))
    assembler = ShardAssembler(expected, ["score"], aggregate)
    pairs = 0
    for b in blocks:
        added = assembler.add(b)
        collector.add(b, scored=added.scored, fresh=added.fresh)
        collector.completed([f"part-{s}.parquet" for s in added.complete])
        for s in added.complete:
            assembler.take(s)
            collector.published({"shard": f"part-{s}.parquet", "rows_out": expected[s]})
        pairs += added.pairs
    return collector, console, pairs


def report_json(collector: RunCollector) -> dict:
    """report.json as the runner writes it (through JSON), with the collector's summary."""
    data = report_data(
        collector=collector,
        output="/out",
        outcome="complete",
        shards={"total": 2, "skipped": 0, "published": 2, "failed": 0},
        failed={},
        summary=collector.summary(),
        config={},
        fingerprint={},
        digest="d",
        ended_at=T0 + 60.0,
    )
    return json.loads(json.dumps(data))


def assert_every_figure_is(pairs: int, collector: RunCollector, console: LastSnapshot) -> dict:
    assert console.last is not None and console.last.pairs_done == pairs  # the bar / progress line
    summary = collector.summary()  # the summary lines (jobs/rerank.py) and _SUCCESS's last_run
    assert summary["pairs_scored"] == pairs
    assert sum(n["pairs"] for n in summary["nodes"].values()) == pairs
    data = report_json(collector)
    assert data["summary"]["pairs_scored"] == data["pairs_scored"] == pairs
    assert data["nodes"] == summary["nodes"]
    assert sum(a["pairs"] for a in data["actors"].values()) == pairs
    tp = data["throughput"]
    assert sum(tp["pairs_per_s"]) * tp["bin_s"] == pytest.approx(pairs)
    assert sum(sum(n["pairs"]) for n in tp["nodes"].values()) * tp["bin_s"] == pytest.approx(pairs)
    assert sum(sum(a["pairs"]) for a in tp["actors"].values()) * tp["bin_s"] == pytest.approx(pairs)
    return data


def test_quarantined_unscored_and_repeated_rows_are_no_pairs_in_any_figure():
    rejects = {(0, 2): "empty passage", (0, 4): NOT_SCORED, (1, 3): "null query_id"}
    first = block([(0, r) for r in range(4)], node="n1", actor=1, start=T0 + 10, rejects=rejects)
    blocks = [
        first,
        first,  # the same block delivered twice
        block([(1, r) for r in range(4)], node="n2", actor=2, start=T0 + 11, rejects=rejects),
        block([(0, 0), (0, 1)], node="n2", actor=3, start=T0 + 12),  # a retried call: rows seen
        block([(0, 4), (0, 5)], node="n2", actor=3, start=T0 + 13, rejects=rejects),
    ]
    collector, console, pairs = run_blocks(blocks, {0: 6, 1: 4})
    assert pairs == 10 - 3  # 10 rows: 2 quarantined, 1 left unscored by the prefilter
    data = assert_every_figure_is(pairs, collector, console)
    assert data["nodes"] == {"n1": {"pairs": 3, "scoring_actors": 1}, "n2": {"pairs": 4, "scoring_actors": 2}}
    assert {k: a["pairs"] for k, a in data["actors"].items()} == {"n1:1": 3, "n2:2": 3, "n2:3": 1}
    assert data["actors"]["n2:3"]["calls"] == 2 and data["actors"]["n1:1"]["calls"] == 1
    assert data["scores"]["score"]["count"] == data["token_lengths"]["tokens"]["count"] == pairs
    assert data["summary"]["tokens"] == pairs * 10 == sum(a["tokens"] for a in data["actors"].values())
    assert data["rejects"] == {"empty passage": 1, NOT_SCORED: 1, "null query_id": 1}
    assert console.last is not None and console.last.shards_done == 2
    assert '>n1</td><td class="n">1</td><td class="n">3</td>' in render_html(data)  # node table


def test_in_chunk_mode_a_row_is_one_pair_on_the_call_that_completed_it():
    # shard 0: row 0 has 2 windows, row 1 has 3, row 2 is quarantined (its one window unscored)
    def windows(items, **call):
        return block(
            [(0, r) for r, _ in items],
            windows=[(w, {0: 2, 1: 3, 2: 1}[r]) for r, w in items],
            rejects={(0, 2): "empty passage"},
            **call,
        )

    first = windows([(0, 0), (1, 0), (2, 0)], node="n1", actor=1, start=T0 + 10)
    blocks = [
        first,
        windows([(0, 1), (1, 1)], node="n2", actor=2, start=T0 + 11),  # completes row 0
        first,  # delivered again
        windows([(1, 2), (1, 0)], node="n1", actor=1, start=T0 + 12),  # completes row 1
    ]
    collector, console, pairs = run_blocks(blocks, {0: 3}, aggregate="max")
    assert pairs == 2
    data = assert_every_figure_is(pairs, collector, console)
    assert data["nodes"] == {"n1": {"pairs": 1, "scoring_actors": 1}, "n2": {"pairs": 1, "scoring_actors": 1}}
    # tokens, token lengths and scores count windows (what one scoring row holds), each once
    assert data["token_lengths"]["tokens"]["count"] == data["scores"]["score"]["count"] == 5
    assert data["summary"]["tokens"] == 5 * 10
