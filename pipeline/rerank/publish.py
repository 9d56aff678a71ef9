"""The write stage: a shard's scores joined to its rows, ranked, published, then marked done.

`publish_shards` is one Ray task for every shard that one block of scores completed (many, when
shards are small): each is published and its done-marker written in the same task, so the driver
neither waits on storage nor pays a round trip per shard. Kept apart from the scoring stage so
publish tasks never import torch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage
from pipeline.rerank import checkpoint
from pipeline.rerank.assembly import ShardScores
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.quarantine import duplicate_pairs, split_rejected
from pipeline.rerank.ranking import rank_table


def publish_shard(
    storage: Storage,
    output: str,
    shard: ShardFile,
    scored: ShardScores,
    columns: InputConfig,
    ranking: RankingConfig,
    digest: str,
    query_id_hashes: str = "",
    score_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Ranks one shard's rows by their scores and publishes it (and its quarantined rows)
    atomically; returns the stats for its done-marker, which the driver writes next. Every input
    row is accounted for: rows_in = rows_out + rows_rejected + rows_dropped_top_k.
    """
    table = storage.read_table(shard.uri)
    if table.num_rows != len(scored.scores):
        raise RuntimeError(
            f"shard {shard.uri} has {table.num_rows} rows but {len(scored.scores)} were scored; "
            "was it modified during the run? rerun to redo it"
        )
    keep, rejected = split_rejected(table, scored.rejected_rows, scored.reject_reasons)
    kept = table.filter(pa.array(keep))
    ranked = rank_table(
        kept, scored.scores[keep], columns.query_id_column, ranking.top_k, ranking.normalize, score_columns
    )
    rejected_uri = checkpoint.rejected_uri(output, shard.relpath)
    if rejected.num_rows:
        storage.write_parquet_atomic(rejected_uri, rejected)
    else:
        storage.remove(rejected_uri)  # a quarantine left by an earlier run of this shard
    storage.write_parquet_atomic(checkpoint.shard_output_uri(output, shard.relpath), ranked)
    stats = {
        "rows_in": table.num_rows,
        "rows_out": ranked.num_rows,
        "rows_rejected": rejected.num_rows,
        "rows_dropped_top_k": kept.num_rows - ranked.num_rows,
        "duplicate_pairs": duplicate_pairs(table, columns.query_id_column, columns.doc_id_column),
        "query_id_hashes": query_id_hashes,  # read before scoring (discovery.py), kept for reruns
        "tokens": scored.tokens,
        "padded_tokens": scored.padded_tokens,
    }
    if stats["rows_in"] != stats["rows_out"] + stats["rows_rejected"] + stats["rows_dropped_top_k"]:
        raise RuntimeError(f"shard {shard.uri} does not reconcile: {stats}")
    return stats


def marker_summary(marker: dict[str, Any]) -> dict[str, Any]:
    """What the driver keeps of a marker for `_SUCCESS`: the counts, not the query-id hashes."""
    return {k: v for k, v in marker.items() if k != "query_id_hashes"}


def publish_shards(
    storage: Storage,
    output: str,
    shards: list[tuple[ShardFile, ShardScores, str]],
    columns: InputConfig,
    ranking: RankingConfig,
    digest: str,
    score_columns: list[str] | None = None,
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Publishes and marks each (shard, scores, query-id hashes); returns (relpath, marker summary,
    None) per shard, or (relpath, None, reason) for a shard that failed (the others go on)."""
    results: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for shard, scored, hashes in shards:
        try:
            stats = publish_shard(
                storage, output, shard, scored, columns, ranking, digest, hashes, score_columns
            )
            crash_point("between_publish_and_marker")
            marker = checkpoint.write_marker(storage, output, shard, digest, stats)
        except Exception as e:
            results.append((shard.relpath, None, f"publish failed: {type(e).__name__}: {e}"))
            continue
        results.append((shard.relpath, marker_summary(marker), None))
    return results
