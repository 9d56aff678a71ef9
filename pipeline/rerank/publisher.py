"""The driver side of the write stage: complete shards, published together.

`submit` takes the shards one block of scores completed; they go to one `publish_shards` Ray task
at once while fewer than `max_in_flight` publish tasks run, else they wait and go together, as
soon as a task finishes (checked at every `submit`/`reap`, i.e. every block), the batch holds
`flush_rows` rows or `flush_shards` shards, or its oldest shard has waited `flush_s`: the first
shards publish the moment they are complete, and a thousand small ones cost a few tasks, not one
each. The task publishes each shard and writes its done-marker (what makes a shard
count as done on a rerun) right after, checking first that the run still holds its lease. `reap`
collects finished tasks' marker summaries. The test-only crash point `publish_in_flight` is where
a killed driver leaves publish tasks running; the task carries `between_publish_and_marker` (the
crash-point variable is passed on to its worker).

Both ask `should_stop` first (`pipeline.rerank.stop`): once there is a reason to stop, nothing more
is submitted and the reason is raised: after the publishes in flight finish (SIGINT/SIGTERM: their
shards are whole and marked; shards still waiting for a batch are published first), or at once (a
lost lease: this run writes nothing more).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import ray

from pipeline.faults import ENV as CRASH_ENV
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage
from pipeline.rerank.assembly import ShardScores
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.lease import LeaseClaim
from pipeline.rerank.progress import Progress
from pipeline.rerank.publish import publish_shards
from pipeline.rerank.split_queries import encode_hashes
from pipeline.rerank.stop import StopCheck, stop_reason

log = logging.getLogger(__name__)

PUBLISH_CPUS = 0.25  # publishing is I/O; it must not starve the scoring pool of CPUs
# Complete shards wait for a batch only while this many publish tasks run; the batch then goes
# once it holds this many rows or shards, or its oldest shard has waited this long. A task per
# small shard cost tens of ms each on 2 cores (1,000 shards of 1,000 rows: bench/scale.py).
MAX_IN_FLIGHT = 2
FLUSH_ROWS = 65_536
FLUSH_SHARDS = 64
FLUSH_S = 1.0


class ShardPublisher:
    """Publishes shards as they complete; collects their marker summaries and the shards that failed."""

    def __init__(
        self,
        *,
        storage: Storage,
        output: str,
        columns: InputConfig,
        ranking: RankingConfig,
        digest: str,
        score_columns: list[str],
        query_id_hashes: dict[str, np.ndarray],
        progress: Progress,
        should_stop: StopCheck = stop_reason,
        claim: LeaseClaim | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        flush_rows: int = FLUSH_ROWS,
        flush_shards: int = FLUSH_SHARDS,
        flush_s: float = FLUSH_S,
    ) -> None:
        self._should_stop = should_stop
        self._max_in_flight = max_in_flight
        self._flush = (flush_rows, flush_shards, flush_s)
        self._waiting: list[tuple[ShardFile, ShardScores]] = []  # complete, not yet in a task
        self._waiting_since = 0.0
        self._stopping = False
        self._query_id_hashes = query_id_hashes
        self._progress = progress
        self._common = {
            "storage": storage,
            "output": output,
            "columns": columns,
            "ranking": ranking,
            "digest": digest,
            "score_columns": score_columns,
            "claim": claim,
        }
        options: dict[str, Any] = {"num_cpus": PUBLISH_CPUS, "max_retries": 3}
        if os.environ.get(CRASH_ENV):  # tests only: the crash point inside the task must see it
            options["runtime_env"] = {"env_vars": {CRASH_ENV: os.environ[CRASH_ENV]}}
        self._task = ray.remote(publish_shards).options(**options)
        self._inflight: dict[Any, list[ShardFile]] = {}
        self.markers: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def submit(self, shards: list[tuple[ShardFile, ShardScores]]) -> None:
        """Queues these complete shards for publishing; launches the batch when it is due."""
        self._stop_if_asked()
        if shards and not self._waiting:
            self._waiting_since = time.monotonic()
        self._waiting += shards
        self._launch(force=False)

    def _launch(self, force: bool) -> None:
        """Hands the waiting shards to one publish task, if they are due (or `force`)."""
        if not self._waiting:
            return
        rows, count, wait_s = self._flush
        due = (
            force
            or len(self._inflight) < self._max_in_flight
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
        ref = self._task.remote(shards=batch, **self._common)
        self._inflight[ref] = [shard for shard, _ in shards]
        crash_point("publish_in_flight")

    def reap(self, timeout: float | None = 0) -> None:
        """Collects every publish task finished within `timeout` (None: waits for one at least),
        then launches the waiting batch if due."""
        self._stop_if_asked()
        ready: list[Any] = []
        if self._inflight:
            ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=timeout)
        for ref in ready:
            shards = self._inflight.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as e:  # the task's worker died for good: every shard of it failed
                self.failed.update({shard.relpath: f"publish failed: {e}" for shard in shards})
                continue
            for relpath, marker, error in results:
                if marker is None:
                    self.failed[relpath] = error or "publish failed"
                    continue
                self.markers.append(marker)
                self._progress.published(relpath, marker["rows_out"])
        self._launch(force=False)

    def drain(self) -> None:
        """Publishes the waiting shards, then waits for every publish still in flight."""
        self._launch(force=True)
        while self._inflight:
            self.reap(timeout=None)

    def _stop_if_asked(self) -> None:
        """Raises the reason to stop, if there is one: after the publishes in flight finish when it
        allows (a signal), else at once, leaving them to end on their own (a lost lease)."""
        if self._stopping or (reason := self._should_stop()) is None:
            return
        self._stopping = True  # drain() below reaps without asking again
        if reason.finish_in_flight:
            self.drain()
        else:
            if self._inflight:
                log.warning("%s: leaving %d publish task(s) in flight", reason.reason, len(self._inflight))
            self._waiting = []  # a lost lease: not ours to publish any more
        reason.published_now = len(self.markers)
        raise reason
