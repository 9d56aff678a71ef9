"""The write stage: a shard's scores joined to its rows, ranked, published, then marked done.

`publish_shards` publishes a batch of complete shards (`publisher.py` forms them): each is
published and its done-marker written right after, once it is checked that the run still holds
OUTPUT's lease, so the driver neither waits on storage nor pays a round trip per shard. A
`ShardWriter` (one of a few long-lived Ray actors of the run) runs it: one process each for the
whole run, not a worker per task (on a small node, Ray ends an idle task worker within a second
and starts a new one for the next task: seconds of CPU each, taken from the scoring actors). What
every shard of the run is published with travels as one `WriteSettings`. Kept apart from the
scoring stage so the writers never import torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import DISK_FULL, LeaseLostError, is_disk_full, storage_error
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage
from pipeline.rerank.compare.shard import Comparison, compare_shard
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.input.layout import flatten_shard
from pipeline.rerank.input.quarantine import duplicate_pairs, split_rejected
from pipeline.rerank.input.split_queries import query_id_hashes as hash_query_ids
from pipeline.rerank.output import checkpoint
from pipeline.rerank.output.lease import LeaseClaim
from pipeline.rerank.output.ranking import rank_table
from pipeline.rerank.reuse.store import StoreIdentity, store_table, store_uri, write_store
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.unscored import (
    count_unscored,
    null_unscored,
    split_unscored,
    unscored_order,
    with_unscored,
)


@dataclass(frozen=True)
class WriteSettings:
    """What every shard of a run is published with: where (`storage`, `output`), how (`columns`,
    `ranking`, `score_columns`), the run's identity in each done-marker (`digest`) and the lease
    claim checked before each write (`claim`; None: no lease, e.g. a test), the identity of the
    score store written beside each shard (`store`, pipeline/rerank/reuse/store.py) and what each
    shard is compared with (`compare`: its change file, drift and quality figures)."""

    storage: Storage
    output: str
    columns: InputConfig
    ranking: RankingConfig
    digest: str
    score_columns: list[str] | None = None
    claim: LeaseClaim | None = None
    store: StoreIdentity | None = None  # the score store's identity; None: no store (a test)
    compare: Comparison | None = None  # --diff-against / --qrels (pipeline/rerank/compare/)


def publish_shard(
    shard: ShardFile, scored: ShardScores, settings: WriteSettings, query_id_hashes: str = ""
) -> dict[str, Any]:
    """Ranks one shard's rows by their scores and publishes it (and its quarantined rows)
    atomically; returns the stats for its done-marker, which `publish_shards` writes next. Every input
    row is accounted for: rows_in = rows_out + rows_rejected + rows_dropped_top_k.
    """
    columns = settings.columns
    shape = flatten_shard(settings.storage.read_table(shard.uri), columns)  # nested: a row per candidate
    table = shape.flat
    if table.num_rows != len(scored.scores):
        raise RuntimeError(
            f"shard {shard.uri} has {table.num_rows} rows but {len(scored.scores)} were scored; "
            "was it modified during the run? rerun to redo it"
        )
    scored, unscored = split_unscored(scored)  # --prefilter-top-k's rows: published, not scored
    keep, rejected = split_rejected(table, scored.rejected_rows, scored.reject_reasons)
    rejected = shape.long_rows(rejected)
    kept = with_unscored(table.filter(pa.array(keep)), unscored[keep])
    chunked = scored.chunk_columns(keep) if columns.long_passages == "chunk" else {}
    ranked = rank_kept(kept, scored.scores[keep], chunked, shape.group_column, settings)
    unscored_out = count_unscored(ranked)
    ranked = null_unscored(ranked, table.column_names)
    write_published(settings, shard, shape.nest(ranked), rejected)
    stored = keep & ~unscored  # the rows with a score: scored now or reused
    stats = {
        "rows_in": table.num_rows,
        "rows_out": ranked.num_rows,
        "rows_rejected": rejected.num_rows,
        "rows_dropped_top_k": kept.num_rows - ranked.num_rows,
        "rows_not_scored": int(unscored.sum()),  # --prefilter-top-k: in rows_out or dropped by top-k
        "rows_not_scored_dropped_top_k": int(unscored.sum()) - unscored_out,
        "duplicate_pairs": duplicate_pairs(table, columns.query_id_column, columns.doc_id_column),
        "query_id_hashes": query_id_hashes,  # read before scoring (discovery.py), kept for reruns
        "tokens": scored.tokens,
        "padded_tokens": scored.padded_tokens,
        "pairs_scored": int(stored.sum()) - scored.reused,
        "pairs_reused": scored.reused,
        **write_shard_store(settings, shard, table, scored, stored, chunked),
        **compare_published(settings, shard, table, ranked, kept),
    }
    if chunked:  # windows of the rows scored; those past --max-chunks were not
        stats |= {"windows_scored": scored.windows_scored, "windows_not_scored": scored.windows_not_scored}
    if stats["rows_in"] != stats["rows_out"] + stats["rows_rejected"] + stats["rows_dropped_top_k"]:
        raise RuntimeError(f"shard {shard.uri} does not reconcile: {stats}")
    return stats


def write_shard_store(
    settings: WriteSettings,
    shard: ShardFile,
    table: pa.Table,
    scored: ShardScores,
    stored: np.ndarray,
    chunked: dict[str, pa.Array],
) -> dict[str, int]:
    """Writes the shard's score store (the `stored` rows, top-k's dropped ones included) after its
    output and before its marker; returns the marker's store counts."""
    if settings.store is None:
        return {}
    c = settings.columns
    pick = pa.array(np.flatnonzero(stored))
    chunks = scored.chunk_columns(stored) if chunked else None
    rows = store_table(
        table.column(c.query_column).take(pick).to_pylist(),
        table.column(c.passage_column).take(pick).to_pylist(),
        scored.scores[stored],
        settings.score_columns or ["score"],
        chunks,
    )
    size = write_store(settings.storage, store_uri(settings.output, shard.relpath), rows, settings.store)
    return {"pairs_stored": rows.num_rows, "store_bytes": size}


def compare_published(
    settings: WriteSettings, shard: ShardFile, table: pa.Table, ranked: pa.Table, kept: pa.Table
) -> dict:
    """The shard's change file and quality piece, after its output and before its marker; returns
    what the marker records of them (pipeline/rerank/compare/shard.py). Its queries are all of its
    input's (`table`), as planning hashed them: a query whose rows were all quarantined is one
    this run holds, its earlier rows listed as removed."""
    cmp = settings.compare
    if cmp is None or not cmp.active:
        return {}
    own = hash_query_ids(table.column(settings.columns.query_id_column))
    return compare_shard(
        cmp, settings.storage, settings.output, shard.relpath, ranked, kept, own, settings.columns
    )


def rank_kept(
    kept: pa.Table,
    scores: np.ndarray,
    chunked: dict[str, pa.Array],
    group_column: str,
    settings: WriteSettings,
) -> pa.Table:
    """The kept rows ranked by `scores` (top-k applied); chunk mode's columns (`chunked`) ranked
    with their rows, then moved after the scores."""
    for name, values in chunked.items():
        kept = kept.append_column(name, values)
    ranked = rank_table(
        kept,
        scores,
        group_column,
        settings.ranking.top_k,
        settings.ranking.normalize,
        settings.score_columns,
        unscored_order=unscored_order(kept, settings.columns),
    )
    if chunked:
        ranked = ranked.select([c for c in ranked.column_names if c not in chunked] + list(chunked))
    return ranked


def write_published(settings: WriteSettings, shard: ShardFile, ranked: pa.Table, rejected: pa.Table) -> None:
    """Writes the shard's quarantine (or removes one an earlier run left), then its output."""
    storage, output = settings.storage, settings.output
    rejected_uri = checkpoint.rejected_uri(output, shard.relpath)
    if rejected.num_rows:
        storage.write_parquet_atomic(rejected_uri, rejected)
    else:
        storage.remove(rejected_uri)  # a quarantine left by an earlier run of this shard
    storage.write_parquet_atomic(checkpoint.shard_output_uri(output, shard.relpath), ranked)


def marker_summary(marker: dict[str, Any]) -> dict[str, Any]:
    """What the driver keeps of a marker for `_SUCCESS`: the counts, not the query-id hashes."""
    return {k: v for k, v in marker.items() if k != "query_id_hashes"}


CLAIM_CHECK_S = 1.0  # a writer re-reads the lease before a write at most this often


class ClaimCheck:
    """Checks the run's lease claim before a write, re-reading it at most every `every_s`: a run
    whose lease was taken over writes at most the file in hand, never a whole batch more."""

    def __init__(self, storage: Storage, claim: LeaseClaim | None, every_s: float = CLAIM_CHECK_S) -> None:
        self._storage, self._claim, self._every_s = storage, claim, every_s
        self._checked_at = -float("inf")

    def __call__(self) -> None:
        if self._claim is None or time.monotonic() - self._checked_at < self._every_s:
            return
        self._claim.check(self._storage)  # raises LeaseLostError
        self._checked_at = time.monotonic()


def publish_shards(
    shards: list[tuple[ShardFile, ShardScores, str]], settings: WriteSettings
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Publishes and marks each (shard, scores, query-id hashes); returns (relpath, marker summary,
    None) per shard, or (relpath, None, reason) for a shard that failed (the others go on). With a
    lease claim (`settings.claim`), a lease found lost fails the shard in hand and every one after
    it, unwritten."""
    results: list[tuple[str, dict[str, Any] | None, str | None]] = []
    still_ours = ClaimCheck(settings.storage, settings.claim)
    for i, (shard, scored, hashes) in enumerate(shards):
        try:
            still_ours()
            stats = publish_shard(shard, scored, settings, hashes)
            crash_point("between_publish_and_marker")
            still_ours()
            marker = checkpoint.write_marker(settings.storage, settings.output, shard, settings.digest, stats)
        except LeaseLostError as e:
            results += [(s.relpath, None, f"not published: {e}") for s, _, _ in shards[i:]]
            break
        except Exception as e:
            if is_disk_full(e):  # the shards after it would only fail too, each filling the disk first
                results.append(
                    (shard.relpath, None, f"publish failed: {storage_error(settings.output, 'OUTPUT', e)}")
                )
                results += [
                    (s.relpath, None, not_published_disk_full(settings.output)) for s, _, _ in shards[i + 1 :]
                ]
                break
            results.append((shard.relpath, None, f"publish failed: {type(e).__name__}: {e}"))
            continue
        results.append((shard.relpath, marker_summary(marker), None))
    return results


def not_published_disk_full(output: str) -> str:
    """The reason of a shard not published because OUTPUT's disk was found full before its turn."""
    return f"not published: OUTPUT {output!r}: {DISK_FULL}"


def is_disk_full_reason(reason: str) -> bool:
    """Whether a shard's failure reason is a full disk (or quota) under OUTPUT."""
    return DISK_FULL in reason


class ShardWriter:
    """The write stage as a long-lived worker: holds what every batch of this run shares."""

    def __init__(self, settings: WriteSettings) -> None:
        self._settings = settings

    def publish(
        self, shards: list[tuple[ShardFile, ShardScores, str]]
    ) -> list[tuple[str, dict[str, Any] | None, str | None]]:
        """`publish_shards` of this batch (see there)."""
        return publish_shards(shards, self._settings)
