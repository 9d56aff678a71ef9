"""What the run report (`pipeline.rerank.report.run_report`) draws, collected from each block of scores as
it streams past the driver. Bounded whatever the corpus: fixed-size histograms, time bins (see
`timeline.py`), one entry per node and scoring actor and per reject reason, never one per row.
No Ray import: a unit test feeds it tables.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.rerank.output.paths import ROW_COUNTS
from pipeline.rerank.report.timeline import TimeBins

LENGTH_BINS = 64
SCORE_RANGE = (-40.0, 40.0)  # logits outside it count in the first/last bin (min/max kept exact)
SCORE_BIN = 0.02
MAX_SERIES = 64  # nodes / actors with a series of their own; the rest add up under "other"
MAX_REASONS = 50
RECENT_CALLS = 4096  # a scoring call delivered twice (a retried block) is counted once


class Histogram:
    """Counts over `bins` equal bins from `lo`, `width` wide; values beyond the last bin count in
    it, below the first in the first. Keeps the exact count, sum, min and max."""

    def __init__(self, lo: float, width: float, bins: int) -> None:
        self.lo, self.width = lo, width
        self.edges = lo + np.arange(bins + 1) * width
        self.counts = np.zeros(bins, np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if not len(values):
            return
        idx = np.clip(((values - self.lo) // self.width).astype(np.int64), 0, len(self.counts) - 1)
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.count += len(values)
        self.total += float(values.sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def to_dict(self, trim: bool = False) -> dict[str, Any]:
        """Edges and counts (`trim`: only from the first to the last bin holding anything)."""
        lo, hi = 0, len(self.counts)
        used = np.flatnonzero(self.counts)
        if trim and len(used):
            lo, hi = int(used[0]), int(used[-1]) + 1
        return {
            "edges": [round(float(e), 4) for e in self.edges[lo : hi + 1]],
            "counts": self.counts[lo:hi].tolist(),
            "count": self.count,
            "mean": round(self.total / self.count, 4) if self.count else None,
            "min": round(self.min, 4) if self.count else None,
            "max": round(self.max, 4) if self.count else None,
        }


def length_histogram(max_length: int, bins: int = LENGTH_BINS) -> Histogram:
    """Token lengths in bins of equal integer width covering 0 .. a little past `max_length`
    (decoder kinds add a prompt beyond it)."""
    return Histogram(0.0, float(max(1, math.ceil((max_length + 1) / (bins - 4)))), bins)


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


CallKey = tuple[str, int, float]  # (node, actor pid, call start): one scoring call


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


class RunRecorder:
    """Feeds on the scored blocks (`add`) and the run's milestones; `to_dict` is what the report
    stores in report.json and draws."""

    def __init__(self, *, started_at: float, max_length: int, score_columns: list[str]) -> None:
        self.started_at = started_at  # epoch seconds: the run's start, t = 0 of every plot
        self.planning_s: float | None = None
        self.scoring_started_at: float | None = None  # the plan was launched
        self.first_call_at: float | None = None
        self.first_scored_at: float | None = None  # first call that returned scored pairs
        self.last_call_end: float | None = None
        self.timeline = TimeBins(started_at)
        self.lengths = length_histogram(max_length)
        self.padded = length_histogram(max_length)
        lo, hi = SCORE_RANGE
        self.scores = {c: Histogram(lo, SCORE_BIN, round((hi - lo) / SCORE_BIN)) for c in score_columns}
        self.rejects: Counter[str] = Counter()
        self.actors: dict[str, ActorWork] = {}  # "node:pid" (or "other", past MAX_SERIES)
        self.nodes: set[str] = set()  # nodes with a series of their own
        self.stage_busy_s: dict[str, float | None] = {"tokenize": None, "score": 0.0, "publish": None}
        self._recent: OrderedDict[CallKey, None] = OrderedDict()
        self._completed_at: dict[str, float] = {}  # shard relpath -> when its last score arrived
        self._rows: Counter[str] = Counter()  # row counts of the shards this run published

    def plan_started(self, planning_s: float) -> None:
        self.planning_s = planning_s
        self.scoring_started_at = time.time()

    @property
    def has_numbers(self) -> bool:
        return self.scoring_started_at is not None

    def add(self, batch: pa.Table) -> None:
        """One block of scores (`score_stage.scored_schema`): usually one scoring call's."""
        if batch.num_rows == 0 or "call_start" not in batch.column_names:
            return
        for key, end, rows in calls_of(batch):
            if key in self._recent:  # already counted: a block delivered again
                continue
            self._recent[key] = None
            if len(self._recent) > RECENT_CALLS:
                self._recent.popitem(last=False)
            self._add_call(key, end, batch if rows is None else batch.take(rows))

    def _add_call(self, key: CallKey, end: float, call: pa.Table) -> None:
        node, pid, start = key
        real = call.column("row").to_numpy() >= 0  # not a shard's error row
        rejects = call.column("reject")
        rejected = rejects.is_valid().to_numpy(zero_copy_only=False) & real
        if rejected.any():
            for reason in rejects.filter(pa.array(rejected)).to_pylist():
                k = reason if reason in self.rejects or len(self.rejects) < MAX_REASONS else "other"
                self.rejects[k] += 1
        ok = real & ~rejected & call.column("error").is_null().to_numpy(zero_copy_only=False)
        tokens = call.column("tokens").to_numpy()[ok]
        padded = call.column("padded_tokens").to_numpy()[ok]
        self.lengths.add(tokens.astype(np.float64))
        self.padded.add(padded.astype(np.float64))
        for name, hist in self.scores.items():
            if name in call.column_names:
                hist.add(call.column(name).to_numpy(zero_copy_only=False)[ok].astype(np.float64))
        pairs, n_tokens = int(ok.sum()), int(tokens.sum())
        actor_key = f"{node}:{pid}"
        if actor_key not in self.actors and len(self.actors) >= MAX_SERIES:
            actor_key = "other"
        actor = self.actors.setdefault(actor_key, ActorWork(node, pid if actor_key != "other" else -1))
        actor.pairs += pairs
        actor.tokens += n_tokens
        actor.padded_tokens += int(padded.sum())
        actor.calls += 1
        actor.busy_s += end - start
        self.stage_busy_s["score"] = (self.stage_busy_s["score"] or 0.0) + (end - start)
        self.first_call_at = start if self.first_call_at is None else min(self.first_call_at, start)
        if pairs:
            self.first_scored_at = end if self.first_scored_at is None else min(self.first_scored_at, end)
        self.last_call_end = end if self.last_call_end is None else max(self.last_call_end, end)
        if node not in self.nodes and len(self.nodes) < MAX_SERIES:
            self.nodes.add(node)
        node_key = node if node in self.nodes else "other"
        for name, amount in (
            ("pairs|all", pairs),
            ("tokens|all", n_tokens),
            (f"pairs|node|{node_key}", pairs),
            (f"tokens|node|{node_key}", n_tokens),
            (f"pairs|actor|{actor_key}", pairs),
        ):
            self.timeline.add(name, start, end, amount)

    def completed(self, relpaths: list[str]) -> None:
        """These shards' last scores reached the driver now (they go to be published)."""
        now = time.time()
        self._completed_at.update({r: now for r in relpaths})

    def published(self, markers: list[dict[str, Any]]) -> None:
        """The markers of published shards: publish time = marker written - shard complete."""
        total = self.stage_busy_s["publish"] or 0.0
        for m in markers:
            self._rows.update({k: int(m.get(k, 0)) for k in ROW_COUNTS})
            done_at = self._completed_at.pop(m.get("shard", ""), None)
            if done_at is not None and m.get("published_at"):
                total += max(0.0, float(m["published_at"]) - done_at)
        self.stage_busy_s["publish"] = round(total, 3)

    def rows(self) -> dict[str, int]:
        """Rows in, out, rejected and dropped by top-k of the shards this run published."""
        return {k: self._rows[k] for k in ROW_COUNTS}

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
            "actors": {
                key: {**vars(a), "busy_s": round(a.busy_s, 3)} for key, a in sorted(self.actors.items())
            },
            "token_lengths": {"tokens": self.lengths.to_dict(), "padded": self.padded.to_dict()},
            "scores": {name: h.to_dict(trim=True) for name, h in self.scores.items()},
            "rejects": dict(self.rejects.most_common()),
        }
