"""The write stage: one shard's scores joined to its rows, ranked, published, then marked done.

Kept apart from `pipeline.rerank.stages` so publish tasks never import torch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

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
        "query_id_hashes": query_id_hashes,  # read before scoring (pipeline/plan.py), kept for reruns
        "tokens": scored.tokens,
        "padded_tokens": scored.padded_tokens,
    }
    if stats["rows_in"] != stats["rows_out"] + stats["rows_rejected"] + stats["rows_dropped_top_k"]:
        raise RuntimeError(f"shard {shard.uri} does not reconcile: {stats}")
    return stats
