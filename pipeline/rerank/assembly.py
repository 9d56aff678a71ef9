"""Driver side of the stream: scores arrive in any order and grouping; shards complete one by one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class ShardScores:
    """Everything scored for one shard, in row order, ready to publish."""

    scores: np.ndarray  # float32 [rows, score columns] (NaN for rejected rows)
    seen: np.ndarray  # bool per row
    filled: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # row -> reason

    @classmethod
    def empty(cls, rows: int, columns: int = 1) -> ShardScores:
        return cls(np.full((rows, columns), np.nan, np.float32), np.zeros(rows, bool))

    @property
    def rejected_rows(self) -> np.ndarray:
        return np.array(sorted(self.rejected), dtype=np.int64)

    @property
    def reject_reasons(self) -> list[str]:
        return [self.rejected[r] for r in sorted(self.rejected)]


@dataclass
class Added:
    complete: list[int]
    pairs: int = 0
    tokens: int = 0
    padded_tokens: int = 0


class ShardAssembler:
    """Collects streamed scores per shard; says when a shard has all of its rows.

    Rows are keyed by (shard, row): a row delivered twice (a retried task) counts once. A
    quarantined row counts as arrived (it is published to _rejected/), a shard-level error row
    fails its shard. A shard's score array exists only between its first rows' arrival and its
    `take`: the driver holds the shards in flight, not the corpus.
    """

    def __init__(self, expected_rows: dict[int, int], score_columns: list[str] | None = None) -> None:
        self.score_columns = score_columns or ["score"]
        self.expected = dict(expected_rows)
        self.shards: dict[int, ShardScores] = {}
        self.failed: dict[int, str] = {}

    def _scores(self, shard: int) -> ShardScores | None:
        """The shard's collected scores, allocated on its first rows; None once taken or failed."""
        if shard not in self.expected:
            return None
        if shard not in self.shards:
            self.shards[shard] = ShardScores.empty(self.expected[shard], len(self.score_columns))
        return self.shards[shard]

    def add(self, batch: pa.Table) -> Added:
        shard_col = batch.column("shard").to_numpy()
        row_col = batch.column("row").to_numpy()
        score_col = np.column_stack([batch.column(c).to_numpy() for c in self.score_columns])
        tok_col = batch.column("tokens").to_numpy().astype(np.int64)
        pad_col = batch.column("padded_tokens").to_numpy().astype(np.int64)
        errors, rejects = batch.column("error"), batch.column("reject")
        if errors.null_count < batch.num_rows:
            for shard, err in zip(shard_col, errors.to_pylist(), strict=True):
                if err is not None and int(shard) in self.expected:
                    self.failed[int(shard)] = err
                    self._drop(int(shard))
        has_rejects = rejects.null_count < batch.num_rows
        reasons = rejects.to_pylist() if has_rejects else None
        rejected = rejects.is_valid().to_numpy(zero_copy_only=False) if has_rejects else None
        added = Added(complete=[])
        for shard in np.unique(shard_col):
            s = int(shard)
            acc = self._scores(s)
            if acc is None:
                continue
            idx = np.flatnonzero((shard_col == shard) & (row_col >= 0))
            idx = idx[~acc.seen[row_col[idx]]]
            rows = row_col[idx]
            acc.seen[rows] = True
            acc.scores[rows] = score_col[idx]
            acc.filled += len(rows)
            newly_rejected = 0
            if reasons is not None and rejected is not None:
                for i in idx[rejected[idx]]:
                    acc.rejected[int(row_col[i])] = reasons[i]
                    newly_rejected += 1
            tokens, padded = int(tok_col[idx].sum()), int(pad_col[idx].sum())
            acc.tokens += tokens
            acc.padded_tokens += padded
            added.pairs += len(rows) - newly_rejected
            added.tokens += tokens
            added.padded_tokens += padded
            if acc.filled == self.expected[s]:
                added.complete.append(s)
        return added

    def take(self, shard: int) -> ShardScores:
        """Removes a complete shard and returns what was collected for it."""
        result = self.shards[shard]
        self._drop(shard)
        return result

    def _drop(self, shard: int) -> None:
        self.shards.pop(shard, None)
        self.expected.pop(shard, None)

    def incomplete(self) -> dict[int, str]:
        filled = {s: self.shards[s].filled if s in self.shards else 0 for s in self.expected}
        return {s: f"only {filled[s]} of {self.expected[s]} rows were scored" for s in self.expected}
