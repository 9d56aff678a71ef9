"""The driver side of the write stage: one publish task for the shards that completed together.

`submit` launches `publish_shards` as a Ray task for every shard one block of scores completed;
the task publishes each and writes its done-marker (what makes a shard count as done on a rerun)
right after. `reap` collects finished tasks' marker summaries. The test-only crash point
`publish_in_flight` is where a killed driver leaves publish tasks running; the task carries
`between_publish_and_marker` (the crash-point variable is passed on to its worker).

Both ask `should_stop` first (`pipeline.rerank.stop`): once there is a reason to stop, nothing more
is submitted and the reason is raised: after the publishes in flight finish (SIGINT/SIGTERM: their
shards are whole and marked), or at once (a lost lease: this run writes nothing more).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import ray

from pipeline.faults import ENV as CRASH_ENV
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage
from pipeline.rerank.assembly import ShardScores
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.progress import Progress
from pipeline.rerank.publish import publish_shards
from pipeline.rerank.split_queries import encode_hashes
from pipeline.rerank.stop import StopCheck, stop_reason

log = logging.getLogger(__name__)

PUBLISH_CPUS = 0.25  # publishing is I/O; it must not starve the scoring pool of CPUs


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
    ) -> None:
        self._should_stop = should_stop
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
        }
        options: dict[str, Any] = {"num_cpus": PUBLISH_CPUS, "max_retries": 3}
        if os.environ.get(CRASH_ENV):  # tests only: the crash point inside the task must see it
            options["runtime_env"] = {"env_vars": {CRASH_ENV: os.environ[CRASH_ENV]}}
        self._task = ray.remote(publish_shards).options(**options)
        self._inflight: dict[Any, list[ShardFile]] = {}
        self.markers: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def submit(self, shards: list[tuple[ShardFile, ShardScores]]) -> None:
        """Publishes these complete shards in one task."""
        self._stop_if_asked()
        if not shards:
            return
        batch = [
            (shard, scored, encode_hashes(self._query_id_hashes[shard.relpath])) for shard, scored in shards
        ]
        ref = self._task.remote(shards=batch, **self._common)
        self._inflight[ref] = [shard for shard, _ in shards]
        crash_point("publish_in_flight")

    def reap(self, timeout: float | None = 0) -> None:
        """Collects every publish task finished within `timeout` (None: waits for one at least)."""
        self._stop_if_asked()
        if not self._inflight:
            return
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

    def drain(self) -> None:
        """Waits for every publish still in flight."""
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
        elif self._inflight:
            log.warning("%s: leaving %d publish task(s) in flight", reason.reason, len(self._inflight))
        reason.published_now = len(self.markers)
        raise reason
