"""One shard's comparisons: its change file and ranking drift against the earlier run
(`--diff-against`), and its figures on the judged queries (`--qrels`).

They run where the shard is published (the write stage, after its output and before its
done-marker), so an indexer may apply a shard's changes the moment it is done; and, at the end of
a run, for a shard an earlier run published without them or with other settings (another earlier
run, epsilon, qrels or first-stage column: `stale`), reading its published output back. What they
were made with goes in the done-marker, with the counts, so a rerun knows which are current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.io import Storage, join
from pipeline.rerank.compare.changes import change_counts, diff_rankings
from pipeline.rerank.compare.drift import drift_summary, query_drift
from pipeline.rerank.compare.previous import RANKED, EarlierShards, PreviousRead, read_previous
from pipeline.rerank.compare.qrels import Qrels, load_qrels
from pipeline.rerank.compare.quality import first_stage_positions, shard_quality
from pipeline.rerank.config import InputConfig
from pipeline.rerank.output.paths import CHANGES, QUALITY_PIECES


def changes_uri(output: str, relpath: str) -> str:
    return join(output, f"{CHANGES}/{relpath}")


def quality_uri(output: str, relpath: str) -> str:
    return join(output, f"{QUALITY_PIECES}/{relpath}")


@dataclass
class Comparison:
    """What every shard of a run is compared with; travels to the writers with `WriteSettings`.
    `against`: the earlier run's OUTPUT (None: no change feed); `reads`: per shard, the earlier
    shards it reads (previous.plan_reads); `qrels_uri` / `qrels_digest`: the judged queries (None:
    no quality figures), loaded once per process."""

    against: str | None = None
    epsilon: float = 0.0
    reads: dict[str, list[PreviousRead]] = field(default_factory=dict)
    qrels_uri: str | None = None
    qrels_digest: str | None = None
    first_stage_column: str | None = None
    gone: list[PreviousRead] = field(default_factory=list)  # earlier shards whose path this run lacks
    routing: str = ""  # previous.routing_digest: the earlier run and this run's queries
    previous_quality: dict[str, Any] | None = None  # the earlier run's recorded quality figures
    _qrels: Qrels | None = field(default=None, repr=False, compare=False)
    _earlier: EarlierShards | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.against is not None or self.qrels_uri is not None

    def qrels(self, storage: Storage) -> Qrels:
        if self._qrels is None:
            assert self.qrels_uri is not None
            self._qrels = load_qrels(storage, self.qrels_uri)
        return self._qrels

    def earlier(self) -> EarlierShards:
        """The earlier shards this process has read (previous.EarlierShards)."""
        if self._earlier is None:
            self._earlier = EarlierShards()
        return self._earlier

    def made_with(self) -> dict[str, Any]:
        """What a marker's comparisons must have been made with to be current."""
        made: dict[str, Any] = {}
        if self.against is not None:
            made["changes"] = {"against": self.against, "epsilon": self.epsilon, "routing": self.routing}
        if self.qrels_uri is not None:
            made["quality"] = {"qrels": self.qrels_digest, "first_stage_column": self.first_stage_column}
        return made

    def __getstate__(self) -> dict[str, Any]:  # the qrels and earlier shards: read where used
        return {**self.__dict__, "_qrels": None, "_earlier": None}


def stale(marker: dict[str, Any], cmp: Comparison) -> bool:
    """Whether a done shard's comparisons are missing or were made with other settings."""
    for name, made in cmp.made_with().items():
        recorded = marker.get(name) or {}
        if any(recorded.get(k) != v for k, v in made.items()):
            return True
    return False


def compare_shard(
    cmp: Comparison,
    storage: Storage,
    output: str,
    relpath: str,
    ranked: pa.Table,
    first_stage: pa.Table | None,
    own: np.ndarray,
    columns: InputConfig,
) -> dict[str, Any]:
    """Compares one published shard (`ranked`: its output rows, flat; `first_stage`: its kept input
    rows in input order, for --qrels; `own`: its query hashes, sorted); writes its change file and
    quality piece; returns what its done-marker records of them."""
    qid, did = columns.query_id_column, columns.doc_id_column
    current = ranked.select([qid, did, *RANKED])
    out: dict[str, Any] = {}
    if cmp.against is not None:
        previous = read_previous(storage, cmp.reads.get(relpath, []), own, columns, cmp.earlier())
        if not previous.num_columns:
            previous = current.schema.empty_table()
        changes = diff_rankings(current, previous, query_id=qid, doc_id=did, epsilon=cmp.epsilon)
        storage.write_parquet_atomic(changes_uri(output, relpath), changes)
        out["changes"] = {**cmp.made_with()["changes"], **change_counts(changes)}
        out["drift"] = drift_summary(query_drift(current, previous, query_id=qid, doc_id=did))
    if cmp.qrels_uri is not None and first_stage is not None:
        positions = first_stage_positions(first_stage, query_id=qid, column=cmp.first_stage_column)
        order = first_stage.select([qid, did]).append_column("position", pa.array(positions))
        per_query = shard_quality(ranked, order, cmp.qrels(storage), query_id=qid, doc_id=did)
        storage.write_parquet_atomic(quality_uri(output, relpath), per_query)
        out["quality"] = {
            "qrels": cmp.qrels_digest,
            "first_stage_column": cmp.first_stage_column,
            "queries": per_query.num_rows,
        }
    return out


def removed_only(
    cmp: Comparison, storage: Storage, output: str, read: PreviousRead, columns: InputConfig
) -> dict:
    """The change file of an earlier shard whose path this run has no shard of: the rows of its
    queries no shard of this run holds, all removed. Returns its entry in `_SUCCESS`."""
    qid, did = columns.query_id_column, columns.doc_id_column
    previous = read_previous(storage, [read], np.zeros(0, np.uint64), columns, cmp.earlier())
    current = previous.schema.empty_table()
    changes = diff_rankings(current, previous, query_id=qid, doc_id=did, epsilon=cmp.epsilon)
    storage.write_parquet_atomic(changes_uri(output, read.relpath), changes)
    return {"path": read.relpath, **change_counts(changes)}
