"""`ShardScores`: everything scored for one shard, the payload the driver hands a writer actor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS


@dataclass
class ShardScores:
    """Everything scored for one shard, in row order, ready to publish."""

    scores: np.ndarray  # float32 [rows, score columns] (NaN for rejected rows)
    seen: np.ndarray  # bool per row
    filled: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # row -> reason
    # chunk mode: per row, the windows scored and the character where the best one starts
    chunks: np.ndarray | None = None
    best_chunk_char: np.ndarray | None = None
    windows_scored: int = 0  # windows of the rows not rejected
    windows_not_scored: int = 0  # windows past --max-chunks
    reused: int = 0  # rows that took a stored score (--reuse), not scored now

    @classmethod
    def empty(cls, rows: int, columns: int = 1, windowed: bool = False) -> ShardScores:
        scores = cls(np.full((rows, columns), np.nan, np.float32), np.zeros(rows, bool))
        if windowed:
            scores.chunks = np.zeros(rows, np.int16)
            scores.best_chunk_char = np.zeros(rows, np.int32)
        return scores

    def chunk_columns(self, keep: np.ndarray) -> dict[str, pa.Array]:
        """Chunk mode's output columns for the rows `keep` selects: `chunks` (int16, windows
        scored) and `best_chunk_char` (int32, where the best window starts in the passage)."""
        n = len(keep)
        chunks = self.chunks if self.chunks is not None else np.zeros(n, np.int16)
        chars = self.best_chunk_char if self.best_chunk_char is not None else np.zeros(n, np.int32)
        return {
            CHUNKS: pa.array(chunks[keep], pa.int16()),
            BEST_CHUNK_CHAR: pa.array(chars[keep], pa.int32()),
        }

    @property
    def rejected_rows(self) -> np.ndarray:
        return np.array(sorted(self.rejected), dtype=np.int64)

    @property
    def reject_reasons(self) -> list[str]:
        return [self.rejected[r] for r in sorted(self.rejected)]
