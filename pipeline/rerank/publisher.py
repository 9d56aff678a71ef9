"""The driver side of the write stage: one publish task per complete shard, then its done-marker.

`submit` launches `publish_shard` as a Ray task the moment a shard has all of its scores; `reap`
collects finished tasks and writes each shard's marker right after its output exists (the marker
is what makes a shard count as done on a rerun). Test-only crash points sit at the two moments a
killed driver must survive.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage
from pipeline.rerank import checkpoint
from pipeline.rerank.assembly import ShardScores
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.progress import Progress
from pipeline.rerank.publish import publish_shard

log = logging.getLogger(__name__)

PUBLISH_CPUS = 0.25  # publishing is I/O; it must not starve the scoring pool of CPUs


class ShardPublisher:
    """Publishes shards as they complete; collects their markers and the shards that failed."""

    def __init__(
        self,
        *,
        storage: Storage,
        output: str,
        columns: InputConfig,
        ranking: RankingConfig,
        digest: str,
        score_columns: list[str],
        query_id_hashes: dict[str, str],
        progress: Progress,
    ) -> None:
        self._storage = storage
        self._output = output
        self._digest = digest
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
        self._task = ray.remote(publish_shard).options(num_cpus=PUBLISH_CPUS, max_retries=3)
        self._inflight: dict[Any, ShardFile] = {}
        self.markers: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def submit(self, shard: ShardFile, scored: ShardScores) -> None:
        ref = self._task.remote(
            shard=shard, scored=scored, query_id_hashes=self._query_id_hashes[shard.relpath], **self._common
        )
        self._inflight[ref] = shard
        crash_point("publish_in_flight")

    def reap(self, timeout: float | None = 0) -> None:
        """Writes the marker of every publish task finished within `timeout` (None: wait for all)."""
        if not self._inflight:
            return
        ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=timeout)
        for ref in ready:
            shard = self._inflight.pop(ref)
            try:
                stats = ray.get(ref)
            except Exception as e:
                self.failed[shard.relpath] = f"publish failed: {e}"
                continue
            crash_point("between_publish_and_marker")
            marker = checkpoint.write_marker(self._storage, self._output, shard, self._digest, stats)
            self.markers.append(marker)
            self._progress.published(shard.relpath, marker["rows_out"])

    def drain(self) -> None:
        """Waits for every publish still in flight."""
        while self._inflight:
            self.reap(timeout=None)
