"""The write stage's batching and lease checks, without Ray: complete shards go at once to an idle
writer, else wait for a batch (by rows, count or age); a writer whose run lost its lease writes
nothing more."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import LeaseLostError
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.output import paths
from pipeline.rerank.output.lease import LeaseClaim
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import WriteSettings, publish_shards
from pipeline.rerank.stream.publisher import ShardPublisher
from tests.helpers import batch_of, write_inputs


class FakeWriters:
    """Stand in for the writer actors: record each batch handed to any of them."""

    def __init__(self, count: int) -> None:
        self.batches: list[list[str]] = []
        self.handles = [self.Handle(self) for _ in range(count)]

    class Handle:
        def __init__(self, writers: FakeWriters) -> None:
            self.publish = self  # handle.publish.remote(batch)
            self._writers = writers

        def remote(self, shards: list[Any]) -> int:
            self._writers.batches.append([shard.relpath for shard, _, _ in shards])
            return len(self._writers.batches)


def shard(i: int, rows: int) -> tuple[ShardFile, ShardScores]:
    return ShardFile(f"/in/part-{i}.parquet", f"part-{i}.parquet", 1, "v"), ShardScores.empty(rows)


def publisher(tmp_path: Path, writers: int = 2, **flush: Any) -> tuple[ShardPublisher, FakeWriters]:
    fake = FakeWriters(writers)
    p = ShardPublisher(
        settings=WriteSettings(
            Storage(), str(tmp_path), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d", ["score"]
        ),
        query_id_hashes={f"part-{i}.parquet": np.zeros(1, np.uint64) for i in range(10)},
        should_stop=lambda: None,
        writers=fake.handles,
        **flush,
    )
    return p, fake


def test_complete_shards_go_at_once_while_a_writer_is_idle(tmp_path):
    p, task = publisher(tmp_path, writers=2, flush_rows=10**9, flush_shards=10**9, flush_s=3600)
    p.submit([shard(0, 10)])
    p.submit([shard(1, 10)])
    assert task.batches == [["part-0.parquet"], ["part-1.parquet"]]  # the first shards: at once
    p.submit([shard(2, 10)])  # both writers busy: it waits
    assert len(task.batches) == 2


def test_while_publishes_run_small_shards_wait_for_a_batch_big_ones_go_at_once(tmp_path):
    p, task = publisher(tmp_path, writers=1, flush_rows=100, flush_shards=3, flush_s=3600)
    p.submit([shard(9, 10)])  # the one writer is busy from here on
    p.submit([shard(0, 10)])
    p.submit([shard(1, 10)])
    assert task.batches == [["part-9.parquet"]]  # 20 rows, 2 shards: not due
    p.submit([shard(2, 10)])  # the third shard: due by count
    assert task.batches[1:] == [["part-0.parquet", "part-1.parquet", "part-2.parquet"]]
    p.submit([shard(3, 150)])  # more rows than a batch: at once
    assert task.batches[-1] == ["part-3.parquet"]


def test_a_waiting_shard_goes_once_it_has_waited_long_enough(tmp_path):
    p, task = publisher(tmp_path, writers=1, flush_rows=10**9, flush_shards=10**9, flush_s=0.0)
    p.submit([shard(9, 10)])  # the one writer is busy from here on
    p.submit([shard(0, 10)])
    assert task.batches[1:] == [["part-0.parquet"]]


def test_drain_publishes_what_is_still_waiting(tmp_path, monkeypatch):
    p, task = publisher(tmp_path, writers=1, flush_rows=10**9, flush_shards=10**9, flush_s=3600)
    p.submit([shard(9, 10)])  # the one writer is busy from here on
    p.submit([shard(0, 10), shard(1, 10)])
    assert task.batches == [["part-9.parquet"]]
    monkeypatch.setattr(p, "reap", lambda timeout=0: p._inflight.clear())
    p.drain()
    assert task.batches[1:] == [["part-0.parquet", "part-1.parquet"]]


def lease_held_by(out: Path, holder: str) -> LeaseClaim:
    """OUTPUT's lease as `holder` wrote it, and the claim of a run called "me"."""
    lease = out / paths.LEASE
    lease.parent.mkdir(parents=True)
    now = time.time()
    lease.write_text(json.dumps({"owner": holder, "started_at": now, "heartbeat_at": now}))
    return LeaseClaim(str(lease), "me")


def test_a_publish_task_of_a_run_that_holds_the_lease_publishes_and_marks(tmp_path):
    shards = write_inputs(tmp_path, 2)
    out = tmp_path / "out"
    claim = lease_held_by(out, "me")
    settings = WriteSettings(
        Storage(), str(out), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d", claim=claim
    )
    results = publish_shards(batch_of(shards), settings)
    assert [error for _, _, error in results] == [None, None]
    assert (out / "part-0.parquet").exists() and (out / paths.MARKERS / "part-1.parquet.json").exists()


def test_a_publish_task_of_a_run_that_lost_its_lease_writes_nothing(tmp_path):
    shards = write_inputs(tmp_path, 3)
    out = tmp_path / "out"
    claim = lease_held_by(out, "the-run-that-took-over")
    with pytest.raises(LeaseLostError, match="the-run-that-took-over"):
        claim.check(Storage())
    settings = WriteSettings(
        Storage(), str(out), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d", claim=claim
    )
    results = publish_shards(batch_of(shards), settings)
    assert [relpath for relpath, marker, _ in results if marker is None] == [s.relpath for s in shards]
    assert all("lease" in (error or "") for _, _, error in results)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["lease.json"]  # nothing else written
