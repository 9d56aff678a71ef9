"""Driver side of the stream: scores arrive in any order and grouping; shards complete one by one.

In `--long-passages chunk` mode the scored rows are windows (`pipeline.models.windows`): a shard's
windows are aggregated per row (`pipeline.rerank.stream.chunk_scores`) and a row counts as arrived once
all of its windows have."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.models.windows import WINDOW, WINDOW_CHAR, WINDOWS, WINDOWS_NOT_SCORED
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stream.chunk_scores import Aggregate, ChunkScores


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

    def __init__(
        self,
        expected_rows: dict[int, int],
        score_columns: list[str] | None = None,
        aggregate: Aggregate | None = None,
    ) -> None:
        """`aggregate`: chunk mode, how a row's window scores make its score; None: a row is a pair."""
        self.score_columns = score_columns or ["score"]
        self.expected = dict(expected_rows)
        self.aggregate = aggregate
        self.shards: dict[int, ShardScores] = {}
        self.windows: dict[int, ChunkScores] = {}  # chunk mode: shards in flight
        self.failed: dict[int, str] = {}

    def _scores(self, shard: int) -> ShardScores | None:
        """The shard's collected scores, allocated on its first rows; None once taken or failed."""
        if shard not in self.expected:
            return None
        if shard not in self.shards:
            rows, columns = self.expected[shard], len(self.score_columns)
            self.shards[shard] = ShardScores.empty(rows, columns, self.aggregate is not None)
            if self.aggregate is not None:
                self.windows[shard] = ChunkScores(rows, columns, self.aggregate)
        return self.shards[shard]

    def add(self, batch: pa.Table) -> Added:
        shard_col = batch.column("shard").to_numpy()
        row_col = batch.column("row").to_numpy()
        cols = {
            "row": row_col,
            "scores": np.column_stack([batch.column(c).to_numpy() for c in self.score_columns]),
            "tokens": batch.column("tokens").to_numpy().astype(np.int64),
            "padded": batch.column("padded_tokens").to_numpy().astype(np.int64),
        }
        if self.aggregate is not None:
            cols |= {
                c: batch.column(c).to_numpy() for c in (WINDOW, WINDOWS, WINDOW_CHAR, WINDOWS_NOT_SCORED)
            }
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
            if self.aggregate is None:
                rows = row_col[idx]
                acc.seen[rows] = True
                acc.scores[rows] = cols["scores"][idx]
                acc.filled += len(rows)
            else:
                idx, rows = self._add_windows(s, acc, idx, cols)
            newly_rejected = 0
            if reasons is not None and rejected is not None:
                for i in idx[rejected[idx]]:  # a rejected row is one pair (one window): complete
                    acc.rejected[int(row_col[i])] = reasons[i]
                    newly_rejected += 1
                    if acc.chunks is not None:
                        acc.chunks[row_col[i]] = 0  # no window of it was scored
            if self.aggregate is not None:
                acc.windows_scored += len(idx) - newly_rejected
                acc.windows_not_scored += int(self.windows[s].not_scored[rows].sum())
            tokens, padded = int(cols["tokens"][idx].sum()), int(cols["padded"][idx].sum())
            acc.tokens += tokens
            acc.padded_tokens += padded
            added.pairs += len(rows) - newly_rejected
            added.tokens += tokens
            added.padded_tokens += padded
            if acc.filled == self.expected[s]:
                added.complete.append(s)
        return added

    def _add_windows(
        self, shard: int, acc: ShardScores, idx: np.ndarray, cols: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk mode: adds the windows at positions `idx` not seen before; the rows whose last
        window came get their aggregated score and count as arrived. Returns (the positions of
        the fresh windows, the rows completed)."""
        chunk = self.windows[shard]
        rows, window, windows = cols["row"][idx], cols[WINDOW][idx], cols[WINDOWS][idx]
        fresh = chunk.fresh(rows, window, windows)
        idx = idx[fresh]
        done = chunk.add(
            rows[fresh],
            window[fresh],
            windows[fresh],
            cols[WINDOW_CHAR][idx],
            cols[WINDOWS_NOT_SCORED][idx],
            cols["scores"][idx],
        )
        assert acc.chunks is not None and acc.best_chunk_char is not None
        acc.scores[done] = chunk.result(done)
        acc.chunks[done] = chunk.expected[done]
        acc.best_chunk_char[done] = chunk.best_char[done]
        acc.seen[done] = True
        acc.filled += len(done)
        return idx, done

    def take(self, shard: int) -> ShardScores:
        """Removes a complete shard and returns what was collected for it."""
        result = self.shards[shard]
        self._drop(shard)
        return result

    def _drop(self, shard: int) -> None:
        self.shards.pop(shard, None)
        self.windows.pop(shard, None)
        self.expected.pop(shard, None)

    def incomplete(self) -> dict[int, str]:
        filled = {s: self.shards[s].filled if s in self.shards else 0 for s in self.expected}
        return {s: f"only {filled[s]} of {self.expected[s]} rows were scored" for s in self.expected}
