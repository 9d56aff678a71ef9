"""Progress as pairs are scored and shards complete (shown by `progress_console`), and the run's
throughput figures."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rerank.report.console import ProgressConsole, Snapshot

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counts scored pairs and published shards; shows them on `console` (a live bar or a line
    every so often), and each published shard as a debug line."""

    shards_total: int
    pairs_total: int
    shards_done: int = 0
    pairs_scored: int = 0
    pairs_published: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    started_epoch: float = field(default_factory=time.time)
    calls: dict[tuple[int, float], float] = field(default_factory=dict)  # (actor, start) -> end
    pairs_per_node: dict[str, int] = field(default_factory=dict)
    actors_per_node: dict[str, set[int]] = field(default_factory=dict)
    console: ProgressConsole | None = None

    def scored(self, pairs: int, tokens: int, padded_tokens: int) -> None:
        self.pairs_scored += pairs
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self._show()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            shards_done=self.shards_done,
            shards_total=self.shards_total,
            pairs_done=self.pairs_scored,
            pairs_total=self.pairs_total,
            elapsed_s=time.monotonic() - self.started,
        )

    def _show(self) -> None:
        if self.console is not None:
            self.console.update(self.snapshot())

    def close(self) -> None:
        """Ends the console's display (the live bar); the summary follows."""
        if self.console is not None:
            self.console.close()
            self.console = None

    def placed(self, batch: pa.Table) -> None:
        """Counts scored rows and distinct scoring actors per node (work shared across nodes)."""
        scored = batch.filter(pc.greater_equal(batch.column("row"), 0))
        counts = scored.group_by(["node", "actor"]).aggregate([("row", "count")])
        for node, actor, n in zip(
            *(counts.column(c).to_pylist() for c in ("node", "actor", "row_count")), strict=True
        ):
            self.pairs_per_node[node] = self.pairs_per_node.get(node, 0) + n
            self.actors_per_node.setdefault(node, set()).add(actor)

    def timed(self, batch: pa.Table) -> None:
        """Records each scoring call's start and end (actor clocks), whatever order blocks arrive in."""
        if "call_start" not in batch.column_names or batch.num_rows == 0:
            return
        calls = batch.select(["actor", "call_start", "call_end"]).group_by(["actor", "call_start"])
        table = calls.aggregate([("call_end", "max")])
        for actor, start, end in zip(
            *(table.column(c).to_pylist() for c in ("actor", "call_start", "call_end_max")), strict=True
        ):
            self.calls[(actor, start)] = end

    def call_clock(self) -> dict[str, float | None]:
        """Epoch seconds of the first call's start, the last call's start and the last call's end
        (the actors' clocks): when published shards are compared with scoring, e.g. in tests."""
        if not self.calls:
            return {"scoring_started_at": None, "last_call_started_at": None, "scoring_ended_at": None}
        starts = [start for _, start in self.calls]
        return {
            "scoring_started_at": min(starts),
            "last_call_started_at": max(starts),
            "scoring_ended_at": max(self.calls.values()),
        }

    def scoring_span(self) -> tuple[float, float, float] | None:
        """(first call start, last call end, summed call time) over all scoring calls so far."""
        if not self.calls:
            return None
        first = min(start for _, start in self.calls)
        return first, max(self.calls.values()), sum(end - start for (_, start), end in self.calls.items())

    def pairs_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.pairs_scored / elapsed if elapsed > 0 else 0.0

    def published(self, relpath: str, rows: int) -> None:
        self.shards_done += 1
        self.pairs_published += rows
        log.debug(
            "shard %s (%d rows) published: %d/%d shards", relpath, rows, self.shards_done, self.shards_total
        )
        self._show()

    def summary(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        steady = startup = busy = None
        span = self.scoring_span()
        if span is not None:
            first, last, busy = span
            # pairs over the time from the first scoring call's start to the last one's end, on the
            # actors' clocks: the pipeline's steady rate, not when blocks happened to reach the driver
            steady = round(self.pairs_scored / (last - first), 2) if last > first else None
            startup = round(first - self.started_epoch, 2)
        actors = sum(len(a) for a in self.actors_per_node.values()) or 1
        return {
            "pairs_scored": self.pairs_scored,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "padding_efficiency": round(self.tokens / self.padded_tokens, 4) if self.padded_tokens else None,
            "wall_s": round(wall, 2),
            "startup_s": startup,
            "pairs_per_s": round(self.pairs_scored / wall, 2) if wall > 0 else None,
            "steady_pairs_per_s": steady,
            "scoring_busy_s": round(busy, 2) if busy is not None else None,
            **self.call_clock(),
            # share of the scoring span the actors spent inside calls (1.0: never waited for input)
            "scoring_utilisation": (
                round(busy / ((span[1] - span[0]) * actors), 3)
                if span and span[1] > span[0] and busy
                else None
            ),
            "nodes": {
                node: {"pairs": pairs, "scoring_actors": len(self.actors_per_node[node])}
                for node, pairs in sorted(self.pairs_per_node.items())
            },
        }
