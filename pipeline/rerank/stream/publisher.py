"""The driver side of the write stage: complete shards, published together by a few writers.

`submit` takes the shards one block of scores completed; they go to an idle `ShardWriter` at
once, else they wait and go together, as soon as a writer is idle (checked at every
`submit`/`reap`, i.e. every block), the batch holds `flush_rows` rows or `flush_shards` shards,
or its oldest shard has waited `flush_s` (then to the writer with the fewest batches queued): the
first shards publish the moment they are complete, and a thousand small ones cost a few calls, not
one each. The writers are Ray actors started with the publisher, one process each for the whole
run (pipeline/rerank/stages/write.py says why not a task per batch); a writer whose process dies
is restarted and its batch retried. A writer publishes each shard and writes its done-marker (what
makes a shard count as done on a rerun) right after, checking first that the run still holds its
lease. `reap` collects finished batches' marker summaries, each handed to the run's collector as it
comes (`on_published`). The test-only crash point `publish_in_flight` is
where a killed driver leaves publishes running; the writers carry `between_publish_and_marker`
(the crash-point variable is passed on to their processes).

Both ask `should_stop` first (`pipeline.rerank.stop`): once there is a reason to stop, nothing more
is submitted and the reason is raised: after the publishes in flight finish (SIGINT/SIGTERM: their
shards are whole and marked; shards still waiting for a batch are published first), or at once (a
lost lease: this run writes nothing more; `collect_finished` then takes in the batches that ended).

A full disk under OUTPUT (ENOSPC, EDQUOT) fails the shard a writer had in hand and the rest of its
batch (`stages/write.py`); from the first such result on, nothing more is handed out: every shard
submitted after it fails at once with the same reason (`disk_full`), and the runner stops scoring.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from pipeline.faults import ENV as CRASH_ENV
from pipeline.faults import crash_point
from pipeline.io import ShardFile
from pipeline.rerank.input.split_queries import encode_hashes
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import (
    ShardWriter,
    WriteSettings,
    is_disk_full_reason,
    not_published_disk_full,
)
from pipeline.rerank.stop import StopCheck, deferring_forced_stops, stop_reason

log = logging.getLogger(__name__)

PUBLISH_CPUS = 0.25  # per writer: publishing is mostly I/O; it must not starve the scoring pool
# Writers of a run: this many at least, one more per this many scoring actors (a writer publishes
# tens of thousands of rows a second: bench/scale.py). A writer whose process dies (its node lost)
# is restarted; a batch is tried this many times more before its shards fail.
WRITERS = 2
SCORING_ACTORS_PER_WRITER = 8
BATCH_RETRIES = 3
# Complete shards wait for a batch only while no writer is idle; the batch then goes once it holds
# this many rows or shards, or its oldest shard has waited this long. A call per small shard costs
# a few ms of driver and writer time each (1,000 shards of 1,000 rows: bench/scale.py).
FLUSH_ROWS = 65_536
FLUSH_SHARDS = 64
FLUSH_S = 1.0
DRAIN_POLL_S = 0.5  # waiting for the last publishes, the driver asks this often whether to stop at once

MarkerSink = Callable[[dict[str, Any]], None]  # told of each published shard's marker summary


class ShardPublisher:
    """Publishes shards as they complete; collects their marker summaries and the shards that
    failed, and hands each marker to `on_published` as it comes (the run's collector)."""

    def __init__(
        self,
        *,
        settings: WriteSettings,
        query_id_hashes: dict[str, np.ndarray],
        on_published: MarkerSink | None = None,
        should_stop: StopCheck = stop_reason,
        writers: int | list[Any] = WRITERS,
        flush_rows: int = FLUSH_ROWS,
        flush_shards: int = FLUSH_SHARDS,
        flush_s: float = FLUSH_S,
    ) -> None:
        self._should_stop = should_stop
        self._flush = (flush_rows, flush_shards, flush_s)
        self._waiting: list[tuple[ShardFile, ShardScores]] = []  # complete, not yet handed to a writer
        self._waiting_since = 0.0
        self._stopping = False
        self._query_id_hashes = query_id_hashes
        self._on_published = on_published
        # one writer starts now, its process up by the time the first shard is complete (started
        # then, it would hold that publish for a couple of seconds); the others when first needed
        # (a small run may need one only), not competing with the scoring actors' start-up
        self._start = (writers, settings) if isinstance(writers, int) else None
        self._writers: list[Any] = (
            start_writers(min(1, writers), settings) if isinstance(writers, int) else writers
        )
        self._inflight: dict[Any, tuple[Any, list[ShardFile]]] = {}
        self._output = settings.output
        self.markers: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}
        self.disk_full: str | None = None  # the first reason a full disk gave: nothing more is handed out

    def submit(self, shards: list[tuple[ShardFile, ShardScores]]) -> None:
        """Queues these complete shards for publishing; launches the batch when it is due."""
        self._stop_if_asked()
        if shards and not self._waiting:
            self._waiting_since = time.monotonic()
        self._waiting += shards
        self._launch(force=False)

    def _launch(self, force: bool) -> None:
        """Hands the waiting shards to one writer as a batch, if they are due (or `force`); once
        the disk is full they fail at once instead (a write would only fail too)."""
        if not self._waiting:
            return
        if self.disk_full is not None:
            self.failed.update(
                {shard.relpath: not_published_disk_full(self._output) for shard, _ in self._waiting}
            )
            self._waiting = []
            return
        rows, count, wait_s = self._flush
        writer = self._least_busy_writer()
        due = (
            force
            or self._queued(writer) == 0
            or sum(len(scored.scores) for _, scored in self._waiting) >= rows
            or len(self._waiting) >= count
            or time.monotonic() - self._waiting_since >= wait_s
        )
        if not due:
            return
        shards, self._waiting = self._waiting, []
        batch = [
            (shard, scored, encode_hashes(self._query_id_hashes[shard.relpath])) for shard, scored in shards
        ]
        ref = writer.publish.remote(batch)
        self._inflight[ref] = (writer, [shard for shard, _ in shards])
        crash_point("publish_in_flight")

    def _least_busy_writer(self) -> Any:
        """The writer with the fewest batches queued; a new one if all are busy and more may start."""
        idle = [w for w in self._writers if self._queued(w) == 0]
        if not idle and self._start is not None and len(self._writers) < self._start[0]:
            (writer,) = start_writers(1, self._start[1])
            self._writers.append(writer)
            return writer
        return min(self._writers, key=self._queued)

    def _queued(self, writer: Any) -> int:
        """Batches handed to `writer` and not yet reaped."""
        return sum(1 for w, _ in self._inflight.values() if w is writer)

    def reap(self, timeout: float | None = 0) -> None:
        """Collects every batch finished within `timeout` (None: waits for one at least), then
        launches the waiting batch if due."""
        self._stop_if_asked()
        self._collect(timeout)
        self._launch(force=False)

    def _collect(self, timeout: float | None) -> None:
        """Takes in the results of every batch finished within `timeout` (None: one at least)."""
        ready: list[Any] = []
        if self._inflight:
            with deferring_forced_stops():
                ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=timeout)
        for ref in ready:
            _, shards = self._inflight.pop(ref)
            try:
                with deferring_forced_stops():
                    results = ray.get(ref)  # finished: at once
            except Exception as e:  # its writer died on every try: each shard of the batch failed
                self.failed.update({shard.relpath: f"publish failed: {e}" for shard in shards})
                continue
            for relpath, marker, error in results:
                if marker is None:
                    self._failed(relpath, error or "publish failed")
                    continue
                self.markers.append(marker)
                if self._on_published is not None:
                    self._on_published(marker)

    def _failed(self, relpath: str, reason: str) -> None:
        self.failed[relpath] = reason
        if self.disk_full is None and is_disk_full_reason(reason):
            self.disk_full = reason
            log.error("%s; publishing no more shards", reason)

    def collect_finished(self) -> None:
        """After a stop that does not wait (a second signal, a lost lease): takes in the batches
        already finished, so that their shards count as published; leaves the others running."""
        try:
            self._collect(timeout=0)
        except Exception as e:  # the stop stands, whatever Ray says now
            log.debug("could not collect the finished publishes: %s", e)

    def drain(self) -> None:
        """Publishes the waiting shards, then waits for every publish still in flight, asking
        every DRAIN_POLL_S whether to stop at once (what a signal handler raises does not get out
        of a Ray wait: a second signal is found here)."""
        self._launch(force=True)
        while self._inflight:
            self.reap(timeout=DRAIN_POLL_S)

    def close(self) -> None:
        """Ends the writers once nothing is in flight (batches left running by a lost lease stop
        at their next lease check, and end with the driver)."""
        if self._inflight:
            return
        for writer in self._writers:
            if isinstance(writer, ray.actor.ActorHandle):
                ray.kill(writer)
        self._writers = []

    def _stop_if_asked(self) -> None:
        """Raises the reason to stop, if there is one: after the publishes in flight finish when it
        allows (a signal), else at once, leaving them to end on their own (a lost lease, a second
        signal: also while the publishes of the first are being waited for)."""
        reason = self._should_stop()
        if reason is None or (self._stopping and reason.finish_in_flight):
            return  # nothing to stop for, or drain() below is finishing the publishes in flight
        self._stopping = True
        if reason.finish_in_flight:
            self.drain()
        else:
            if self._inflight:
                log.warning("%s: leaving %d publish batch(es) in flight", reason.reason, len(self._inflight))
            self._waiting = []  # a lost lease: not ours to publish any more
        raise reason


def writers_for(scoring_actors: int) -> int:
    """How many writers a run with at most this many scoring actors starts."""
    return max(WRITERS, -(-scoring_actors // SCORING_ACTORS_PER_WRITER))


def start_writers(count: int, settings: WriteSettings) -> list[Any]:
    """`count` ShardWriter actors holding the run's `settings`."""
    options: dict[str, Any] = {
        "num_cpus": PUBLISH_CPUS,
        "max_restarts": -1,  # a lost node must not end the run's publishing
        "max_task_retries": BATCH_RETRIES,
    }
    if os.environ.get(CRASH_ENV):  # tests only: the crash point inside the writer must see it
        options["runtime_env"] = {"env_vars": {CRASH_ENV: os.environ[CRASH_ENV]}}
    writer = ray.remote(ShardWriter).options(**options)
    return [writer.remote(settings) for _ in range(count)]
