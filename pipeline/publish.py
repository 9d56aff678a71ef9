"""The write stage: one shard's scores joined to its rows, ranked, published, then marked done.

Kept apart from `pipeline.stages` so publish tasks never import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import checkpoint
from pipeline.config import InputConfig, RankingConfig
from pipeline.io import ShardFile, Storage
from pipeline.ranking import rank_table


def publish_shard(
    storage: Storage,
    output: str,
    shard: ShardFile,
    scores: np.ndarray,
    tokens: int,
    padded_tokens: int,
    columns: InputConfig,
    ranking: RankingConfig,
    digest: str,
) -> dict[str, Any]:
    """Ranks one shard's rows by their scores, publishes it atomically, then writes its marker."""
    table = storage.read_table(shard.uri)
    if table.num_rows != len(scores):
        raise RuntimeError(
            f"shard {shard.uri} has {table.num_rows} rows but {len(scores)} were scored; "
            "was it modified during the run? rerun to redo it"
        )
    ranked = rank_table(table, scores, columns.query_id_column, ranking.top_k, ranking.normalize)
    storage.write_parquet_atomic(checkpoint.shard_output_uri(output, shard.relpath), ranked)
    stats = {
        "rows_in": table.num_rows,
        "rows_out": ranked.num_rows,
        "tokens": tokens,
        "padded_tokens": padded_tokens,
    }
    return checkpoint.write_marker(storage, output, shard, digest, stats)
