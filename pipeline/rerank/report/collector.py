"""The run's one collector: every figure a run shows while it scores (the live bar or progress
lines of `console.py`), states at its end (`summary`: the summary lines of jobs/rerank.py and
`_SUCCESS`'s last_run) and stores in its report (`to_dict`: report.json, drawn by report.html).

The counting rule, one for all of them: a *pair scored* is an input row the model scored, counted
once per (shard, row).

- A row delivered again (a retried task, a block delivered twice) is not counted again.
- A quarantined row (empty passage, null query id, ...) and a row the prefilter left unscored
  (`--prefilter-top-k`) are no pairs scored; their reasons count under `rejects`. A shard's error
  row is no pair either.
- In `--long-passages chunk` mode a row is one pair however many windows it has, counted when its
  last window arrives, on the scoring call (node, actor, time) that delivered that window; windows
  are not pairs.

Which rows count is the assembler's to say (`pipeline.rerank.stream.assembly`, which alone knows
what arrived before): it marks them in each block (`Added.scored`) and this collector adds them up,
so `pairs_scored`, the bar's pairs, the pairs per node and per actor and the throughput series
agree. Tokens and padded tokens are those of each first arrival (in chunk mode, of each window);
the token-length and score histograms hold each scored unit (a pair, or in chunk mode a window:
what one scoring row holds). Time is counted per scoring call (node, actor pid, call start): a
call delivered twice counts once.

Bounded whatever the corpus: fixed-size histograms, time bins (`timeline.py`), one entry per node,
per scoring actor (up to MAX_SERIES, then "other") and per reject reason, never one per row; per
shard published only its pairs scored and reused (as the publisher keeps its marker). No Ray
import: a unit test feeds it tables.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.rerank.output.paths import ROW_COUNTS
from pipeline.rerank.report.console import ProgressConsole, Snapshot
from pipeline.rerank.report.histogram import Histogram, length_histogram
from pipeline.rerank.report.kernels import KernelChoices
from pipeline.rerank.report.timeline import TimeBins

log = logging.getLogger(__name__)

SCORE_RANGE = (-40.0, 40.0)  # logits outside it count in the first/last bin (min/max kept exact)
SCORE_BIN = 0.02
MAX_SERIES = 64  # nodes / actors with a series of their own; the rest add up under "other"
MAX_REASONS = 50
RECENT_CALLS = 4096  # a scoring call delivered twice (a retried block) is counted once

CallKey = tuple[str, int, float]  # (node, actor pid, call start): one scoring call


@dataclass
class ActorWork:
    """One scoring actor's share: pairs, tokens, calls and time inside calls (its own clock)."""

    node: str
    pid: int
    pairs: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    calls: int = 0
    busy_s: float = 0.0


@dataclass
class NodeWork:
    """One node's share: pairs scored and its scoring actors (pids)."""

    pairs: int = 0
    actors: set[int] = field(default_factory=set)


def calls_of(batch: pa.Table) -> list[tuple[CallKey, float, np.ndarray | None]]:
    """The scoring calls in a block: (key, call end, its rows, or None for all of them). A block
    is one call's output (the scoring stage returns one table per call), checked cheaply."""
    starts, actors = batch.column("call_start").to_numpy(), batch.column("actor").to_numpy()
    nodes, ends = batch.column("node"), batch.column("call_end").to_numpy()
    if (starts == starts[0]).all() and (actors == actors[0]).all() and len(nodes.unique()) == 1:
        return [((str(nodes[0]), int(actors[0]), float(starts[0])), float(ends.max()), None)]
    indexed = batch.select(["node", "actor", "call_start", "call_end"]).append_column(
        "i", pa.array(np.arange(batch.num_rows))
    )
    groups = indexed.group_by(["node", "actor", "call_start"]).aggregate([("call_end", "max"), ("i", "list")])
    return [
        (
            (g["node"], int(g["actor"]), float(g["call_start"])),
            float(g["call_end_max"]),
            np.array(g["i_list"]),
        )
        for g in groups.to_pylist()
    ]


class RunCollector:
    """Feeds on the scored blocks (`add`) and the run's milestones; shows progress on a console,
    and gives the run's `summary` and report.json's figures (`to_dict`). The module's docstring
    states what counts."""

    def __init__(self, *, started_at: float, max_length: int, score_columns: list[str]) -> None:
        self.started_at = started_at  # epoch seconds: the run's start, t = 0 of every plot
        self.planning_s: float | None = None
        self.scoring_started_at: float | None = None  # the plan was launched
        self._scoring_since = (time.time(), time.monotonic())  # the summary's rates count from here
        self.first_call_at: float | None = None
        self.first_scored_at: float | None = None  # first call that returned scored pairs
        self.last_call_start: float | None = None
        self.last_call_end: float | None = None
        self.pairs_scored = self.tokens = self.padded_tokens = 0
        self.pairs_reused = 0  # --reuse: pairs that took a stored score (done, not scored)
        self.reused_expected = 0  # --reuse: the pairs the lookup found (the ETA does not wait on them)
        self.shards_done, self.shards_total, self.pairs_total = 0, 0, 0
        self.console: ProgressConsole | None = None
        self.timeline = TimeBins(started_at)
        self.lengths = length_histogram(max_length)
        self.padded = length_histogram(max_length)
        lo, hi = SCORE_RANGE
        self.scores = {c: Histogram(lo, SCORE_BIN, round((hi - lo) / SCORE_BIN)) for c in score_columns}
        self.rejects: Counter[str] = Counter()
        self.actors: dict[str, ActorWork] = {}  # "node:pid" (or "other", past MAX_SERIES)
        self.nodes: dict[str, NodeWork] = {}
        self.kernels = KernelChoices()  # what each scoring actor ran with, and why
        self.series_nodes: set[str] = set()  # nodes with a throughput series of their own
        self.stage_busy_s: dict[str, float | None] = {"tokenize": None, "score": 0.0, "publish": None}
        self._publish_s = 0.0
        self._recent: OrderedDict[CallKey, None] = OrderedDict()
        self._completed_at: dict[str, float] = {}  # shard relpath -> when its last score arrived
        self._rows: Counter[str] = Counter()  # row counts of the shards this run published
        self._shard_pairs: dict[str, tuple[int, int]] = {}  # relpath -> (pairs scored, reused): published

    def plan_started(self, planning_s: float) -> None:
        """The plan is launched: scoring starts now (the summary's rates and start-up count from here)."""
        self.planning_s = planning_s
        self.scoring_started_at = time.time()
        self._scoring_since = (self.scoring_started_at, time.monotonic())

    def show_progress(self, console: ProgressConsole | None, *, shards_total: int, pairs_total: int) -> None:
        """Shows the progress on `console` from now on, out of these totals."""
        self.console, self.shards_total, self.pairs_total = console, shards_total, pairs_total

    @property
    def has_numbers(self) -> bool:
        return self.scoring_started_at is not None

    def add(
        self, batch: pa.Table, *, scored: np.ndarray, fresh: np.ndarray, reused: np.ndarray | None = None
    ) -> None:
        """One block of scores (`stages.score.scored_schema`, usually one scoring call's) and, per
        row of it, whether it counts as a pair scored now (`scored`), whether it arrived for the
        first time (`fresh`) and whether it took a stored score (`reused`, --reuse: done, not
        scored): what the assembler returned for it (`Added`)."""
        if reused is not None:
            self.pairs_reused += int(reused.sum())
        if batch.num_rows and "call_start" in batch.column_names:
            for key, end, rows in calls_of(batch):
                if rows is None:
                    self._add_call(key, end, batch, scored, fresh)
                else:
                    self._add_call(key, end, batch.take(rows), scored[rows], fresh[rows])
        self._show()

    def _add_call(
        self, key: CallKey, end: float, call: pa.Table, scored: np.ndarray, fresh: np.ndarray
    ) -> None:
        """One scoring call's rows of a block (see `add`)."""
        node, pid, start = key
        units = fresh & ~self._count_rejects(call.column("reject"), fresh)  # a pair; chunk mode: a window
        tokens = call.column("tokens").to_numpy()
        padded = call.column("padded_tokens").to_numpy()
        self.lengths.add(tokens[units].astype(np.float64))
        self.padded.add(padded[units].astype(np.float64))
        for name, hist in self.scores.items():
            if name in call.column_names:
                hist.add(call.column(name).to_numpy(zero_copy_only=False)[units].astype(np.float64))
        pairs, n_tokens, n_padded = int(scored.sum()), int(tokens[fresh].sum()), int(padded[fresh].sum())
        self.pairs_scored += pairs
        self.tokens += n_tokens
        self.padded_tokens += n_padded
        actor_key, actor = self._actor(node, pid)
        self.kernels.add(actor_key, call)
        actor.pairs += pairs
        actor.tokens += n_tokens
        actor.padded_tokens += n_padded
        work = self.nodes.setdefault(node, NodeWork())
        work.pairs += pairs
        work.actors.add(pid)
        if self._is_new_call(key):
            self._count_call(actor, start, end)
        if units.any():
            self.first_scored_at = end if self.first_scored_at is None else min(self.first_scored_at, end)
        self._spread(node, actor_key, start, end, pairs, n_tokens)

    def _count_rejects(self, rejects: pa.ChunkedArray, fresh: np.ndarray) -> np.ndarray:
        """Counts the reasons of the rejected rows arrived first now; returns their mask."""
        rejected = rejects.is_valid().to_numpy(zero_copy_only=False) & fresh
        if rejected.any():
            for reason in rejects.filter(pa.array(rejected)).to_pylist():
                k = reason if reason in self.rejects or len(self.rejects) < MAX_REASONS else "other"
                self.rejects[k] += 1
        return rejected

    def _actor(self, node: str, pid: int) -> tuple[str, ActorWork]:
        """The actor's key and entry: its own while fewer than MAX_SERIES exist, else "other"."""
        key = f"{node}:{pid}"
        if key not in self.actors and len(self.actors) >= MAX_SERIES:
            key = "other"
        return key, self.actors.setdefault(key, ActorWork(node, pid if key != "other" else -1))

    def _is_new_call(self, key: CallKey) -> bool:
        """Whether this call was not seen among the last RECENT_CALLS (remembers it)."""
        if key in self._recent:
            return False
        self._recent[key] = None
        if len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)
        return True

    def _count_call(self, actor: ActorWork, start: float, end: float) -> None:
        """One scoring call's time, on its actor's clock."""
        actor.calls += 1
        actor.busy_s += end - start
        self.stage_busy_s["score"] = (self.stage_busy_s["score"] or 0.0) + (end - start)
        self.first_call_at = start if self.first_call_at is None else min(self.first_call_at, start)
        self.last_call_start = start if self.last_call_start is None else max(self.last_call_start, start)
        self.last_call_end = end if self.last_call_end is None else max(self.last_call_end, end)

    def _spread(self, node: str, actor_key: str, start: float, end: float, pairs: int, tokens: int) -> None:
        """Adds a call's pairs and tokens to the throughput series, over the call's time."""
        if node not in self.series_nodes and len(self.series_nodes) < MAX_SERIES:
            self.series_nodes.add(node)
        node_key = node if node in self.series_nodes else "other"
        for name, amount in (
            ("pairs|all", pairs),
            ("tokens|all", tokens),
            (f"pairs|node|{node_key}", pairs),
            (f"tokens|node|{node_key}", tokens),
            (f"pairs|actor|{actor_key}", pairs),
        ):
            self.timeline.add(name, start, end, amount)

    def completed(self, relpaths: list[str]) -> None:
        """These shards' last scores reached the driver now (they go to be published)."""
        now = time.time()
        self._completed_at.update({r: now for r in relpaths})

    def published(self, marker: dict[str, Any]) -> None:
        """A shard published (its marker summary): its rows, its pairs scored and reused, and its
        publish time = marker written - shard complete."""
        self.shards_done += 1
        self._rows.update({k: int(marker.get(k, 0)) for k in ROW_COUNTS})
        pairs = (int(marker.get("pairs_scored", 0)), int(marker.get("pairs_reused", 0)))
        self._shard_pairs[str(marker.get("shard", ""))] = pairs
        done_at = self._completed_at.pop(marker.get("shard", ""), None)
        if done_at is not None and marker.get("published_at"):
            self._publish_s += max(0.0, float(marker["published_at"]) - done_at)
        self.stage_busy_s["publish"] = round(self._publish_s, 3)
        log.debug(
            "shard %s (%d rows) published: %d/%d shards",
            marker.get("shard"),
            int(marker.get("rows_out", 0)),
            self.shards_done,
            self.shards_total,
        )
        self._show()

    def rows(self) -> dict[str, int]:
        """Rows in, out, rejected and dropped by top-k of the shards this run published."""
        return {k: self._rows[k] for k in ROW_COUNTS}

    def shard_pairs(self) -> list[dict[str, Any]]:
        """Pairs scored and reused (--reuse) of each shard this run published, by path."""
        return [
            {"path": path, "pairs_scored": scored, "pairs_reused": reused}
            for path, (scored, reused) in sorted(self._shard_pairs.items())
        ]

    def operator_stats(self, summary: Any) -> None:
        """Tokenize time from Ray Data's stats of the plan (a `DatasetStatsSummary`, read by
        attribute: the sum of its tokenize operator's task wall times)."""
        stack, total = [summary], None
        while stack:
            s = stack.pop()
            stack += list(getattr(s, "parents", []) or [])
            for op in getattr(s, "operators_stats", []) or []:
                if "TokenizeShard" in str(getattr(op, "operator_name", "")) and op.wall_time:
                    total = (total or 0.0) + float(op.wall_time.sum)
        self.stage_busy_s["tokenize"] = round(total, 3) if total is not None else None

    def snapshot(self) -> Snapshot:
        return Snapshot(
            shards_done=self.shards_done,
            shards_total=self.shards_total,
            pairs_done=self.pairs_scored + self.pairs_reused,
            pairs_total=self.pairs_total,
            pairs_reused=self.pairs_reused,
            reused_expected=self.reused_expected,
            elapsed_s=time.monotonic() - self._scoring_since[1],
        )

    def _show(self) -> None:
        if self.console is not None:
            self.console.update(self.snapshot())

    def close(self) -> None:
        """Ends the console's display (the live bar); the summary follows."""
        if self.console is not None:
            self.console.close()
            self.console = None

    def node_work(self) -> dict[str, dict[str, int]]:
        """Pairs scored and scoring actors per node."""
        return {
            node: {"pairs": work.pairs, "scoring_actors": len(work.actors)}
            for node, work in sorted(self.nodes.items())
        }

    def summary(self) -> dict[str, Any]:
        """The run's figures at the end of its scoring phase (the summary lines, `_SUCCESS`)."""
        since_epoch, since_clock = self._scoring_since
        wall = time.monotonic() - since_clock
        first, last, busy = self.first_call_at, self.last_call_end, self.stage_busy_s["score"]
        span = last - first if first is not None and last is not None else None
        actors = sum(len(w.actors) for w in self.nodes.values()) or 1
        return {
            "pairs_scored": self.pairs_scored,
            "pairs_reused": self.pairs_reused,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "padding_efficiency": round(self.tokens / self.padded_tokens, 4) if self.padded_tokens else None,
            "wall_s": round(wall, 2),
            "startup_s": round(first - since_epoch, 2) if first is not None else None,
            "pairs_per_s": round(self.pairs_scored / wall, 2) if wall > 0 else None,
            # pairs over the time from the first scoring call's start to the last one's end, on the
            # actors' clocks: the pipeline's steady rate, not when blocks happened to reach the driver
            "steady_pairs_per_s": round(self.pairs_scored / span, 2) if span else None,
            "scoring_busy_s": round(busy or 0.0, 2) if span is not None else None,
            # epoch seconds (the actors' clocks): when published shards are compared with scoring
            "scoring_started_at": first,
            "last_call_started_at": self.last_call_start,
            "scoring_ended_at": last,
            # share of the scoring span the actors spent inside calls (1.0: never waited for input)
            "scoring_utilisation": round(busy / (span * actors), 3) if span and busy else None,
            "nodes": self.node_work(),
            "kernels": self.kernels.summary(),
        }

    def phases(self, ended_at: float) -> dict[str, float | None]:
        """Seconds from the run's start: where the wall time went, and the start-up marks."""

        def since(t: float | None) -> float | None:
            return round(t - self.started_at, 3) if t is not None else None

        return {
            "wall_s": round(ended_at - self.started_at, 3),
            "planning_s": round(self.planning_s, 3) if self.planning_s is not None else None,
            "plan_started_s": since(self.scoring_started_at),
            "first_call_s": since(self.first_call_at),
            "first_scored_s": since(self.first_scored_at),
            "last_call_end_s": since(self.last_call_end),
        }

    def to_dict(self, ended_at: float) -> dict[str, Any]:
        """Every figure collected, as report.json stores it."""
        throughput = self.timeline.to_dict()
        series = throughput.pop("series")
        by: dict[str, dict[str, dict[str, list[float]]]] = {"node": {}, "actor": {}}
        for name, values in series.items():  # "pairs|node|<node>" -> by["node"][<node>]["pairs"]
            metric, *rest = name.split("|", 2)
            if len(rest) == 2:
                by[rest[0]].setdefault(rest[1], {})[metric] = values
        return {
            "phases": self.phases(ended_at),
            "stage_busy_s": {k: round(v, 3) if v is not None else None for k, v in self.stage_busy_s.items()},
            "throughput": {
                **throughput,
                "pairs_per_s": series.get("pairs|all", []),
                "tokens_per_s": series.get("tokens|all", []),
                "nodes": by["node"],
                "actors": by["actor"],
            },
            "pairs_scored": self.pairs_scored,
            "nodes": self.node_work(),
            "actors": {
                key: {**vars(a), "busy_s": round(a.busy_s, 3)} for key, a in sorted(self.actors.items())
            },
            "token_lengths": {"tokens": self.lengths.to_dict(), "padded": self.padded.to_dict()},
            "scores": {name: h.to_dict(trim=True) for name, h in self.scores.items()},
            "rejects": dict(self.rejects.most_common()),
        }
