"""Driver side of the stream: scores arrive in any order and grouping; shards complete one by one.

In `--long-passages chunk` mode the scored rows are windows (`pipeline.models.windows`): a shard's
windows are aggregated per row (`pipeline.rerank.stream.chunk_scores`) and a row counts as arrived once
all of its windows have."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.models.windows import WINDOW, WINDOW_CHAR, WINDOWS, WINDOWS_NOT_SCORED
from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS
from pipeline.rerank.reuse.lookup import REUSED, reused_mask
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stream.chunk_scores import Aggregate, ChunkScores


@dataclass
class Added:
    """What one block of scores added: the shards it completed, and per position of the block
    whether that row counts as a pair scored now (`scored`) and whether it arrived for the first
    time (`fresh`). `ShardAssembler` says which rows count; the run's collector
    (`pipeline.rerank.report.collector`) counts them, so every figure of the run agrees."""

    complete: list[int]
    scored: np.ndarray  # bool per position: a pair scored, counted now and never again
    fresh: np.ndarray  # bool per position: first arrival (in chunk mode: of that window)
    reused: np.ndarray  # bool per position: a pair that took its stored score (--reuse)
    tokens: int = 0
    padded_tokens: int = 0

    @property
    def pairs_reused(self) -> int:
        return int(self.reused.sum())

    @property
    def pairs(self) -> int:
        return int(self.scored.sum())


class ShardAssembler:
    """Collects streamed scores per shard; says when a shard has all of its rows.

    Rows are keyed by (shard, row): a row delivered twice (a retried task) counts once. A
    quarantined row counts as arrived (it is published to _rejected/) but not as a pair scored
    (nor does a row the prefilter left unscored: it is quarantined until published); a
    shard-level error row fails its shard. In chunk mode a row counts as one pair, at the position
    of the window that completed it (its windows count once each as arrived, not as pairs). A
    shard's score array exists only between its first rows' arrival and its `take`: the driver
    holds the shards in flight, not the corpus.
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
        """Takes one block of scores; returns the shards it completed and which of its rows count
        (see `Added`)."""
        cols = self._columns(batch)
        self._fail_on_errors(batch)
        rejects = batch.column("reject")
        has_rejects = rejects.null_count < batch.num_rows
        reasons = rejects.to_pylist() if has_rejects else []
        rejected = (
            rejects.is_valid().to_numpy(zero_copy_only=False)
            if has_rejects
            else np.zeros(batch.num_rows, bool)
        )
        n = batch.num_rows
        added = Added([], np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))
        for shard in np.unique(cols["shard"]):
            self._add_reused(int(shard), batch, cols, added)
            self._add_shard(int(shard), cols, rejected, reasons, added)
        return added

    def _columns(self, batch: pa.Table) -> dict[str, np.ndarray]:
        cols = {
            "shard": batch.column("shard").to_numpy(),
            "row": batch.column("row").to_numpy(),
            "scores": np.column_stack([batch.column(c).to_numpy() for c in self.score_columns]),
            "tokens": batch.column("tokens").to_numpy().astype(np.int64),
            "padded": batch.column("padded_tokens").to_numpy().astype(np.int64),
            REUSED: reused_mask(batch),
        }
        if self.aggregate is not None:
            cols |= {
                c: batch.column(c).to_numpy() for c in (WINDOW, WINDOWS, WINDOW_CHAR, WINDOWS_NOT_SCORED)
            }
        return cols

    def _fail_on_errors(self, batch: pa.Table) -> None:
        """A shard with an error row fails: what was collected of it is dropped."""
        errors = batch.column("error")
        if errors.null_count == batch.num_rows:
            return
        for shard, err in zip(batch.column("shard").to_numpy(), errors.to_pylist(), strict=True):
            if err is not None and int(shard) in self.expected:
                self.failed[int(shard)] = err
                self._drop(int(shard))

    def _add_shard(
        self,
        s: int,
        cols: dict[str, np.ndarray],
        rejected: np.ndarray,
        reasons: list[str | None],
        added: Added,
    ) -> None:
        """Adds the block's rows of shard `s` not seen before; marks them in `added`."""
        acc = self._scores(s)
        if acc is None:
            return
        row_col = cols["row"]
        idx = np.flatnonzero((cols["shard"] == s) & (row_col >= 0) & ~cols[REUSED])
        idx = idx[~acc.seen[row_col[idx]]]
        if self.aggregate is None:
            rows = row_col[idx]
            acc.seen[rows] = True
            acc.scores[rows] = cols["scores"][idx]
            acc.filled += len(rows)
            counted = idx
        else:
            idx, rows = self._add_windows(s, acc, idx, cols)
            counted = completing_positions(idx, row_col[idx], rows)
        fresh_rejected = idx[rejected[idx]]
        for i in fresh_rejected:  # a rejected row is one pair (one window): complete
            acc.rejected[int(row_col[i])] = str(reasons[i])
            if acc.chunks is not None:
                acc.chunks[row_col[i]] = 0  # no window of it was scored
        if self.aggregate is not None:
            acc.windows_scored += len(idx) - len(fresh_rejected)
            acc.windows_not_scored += int(self.windows[s].not_scored[rows].sum())
        tokens, padded = int(cols["tokens"][idx].sum()), int(cols["padded"][idx].sum())
        acc.tokens += tokens
        acc.padded_tokens += padded
        added.fresh[idx] = True
        added.scored[counted[~rejected[counted]]] = True
        added.tokens += tokens
        added.padded_tokens += padded
        if acc.filled == self.expected[s] and s not in added.complete:
            added.complete.append(s)

    def _add_reused(self, s: int, batch: pa.Table, cols: dict[str, np.ndarray], added: Added) -> None:
        """--reuse: the block's rows of shard `s` that carry their stored score(s) (and, in chunk
        mode, their stored `chunks` and `best_chunk_char`): arrived, not scored."""
        acc = self._scores(s) if cols[REUSED].any() else None
        if acc is None:
            return
        idx = np.flatnonzero((cols["shard"] == s) & cols[REUSED])
        idx = idx[~acc.seen[cols["row"][idx]]]
        rows = cols["row"][idx]
        acc.scores[rows] = cols["scores"][idx]
        if acc.chunks is not None and acc.best_chunk_char is not None:
            acc.chunks[rows] = batch.column(CHUNKS).to_numpy(zero_copy_only=False)[idx]
            acc.best_chunk_char[rows] = batch.column(BEST_CHUNK_CHAR).to_numpy(zero_copy_only=False)[idx]
        acc.seen[rows] = True
        acc.filled += len(rows)
        acc.reused += len(rows)
        added.reused[idx] = True
        added.fresh[idx] = True
        if acc.filled == self.expected[s] and s not in added.complete:
            added.complete.append(s)

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


def completing_positions(idx: np.ndarray, rows: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Chunk mode: for each row in `done`, the position (among the fresh windows at `idx`, whose
    rows are `rows`) of its last window in the block, where the row counts as one pair."""
    mask = np.isin(rows, done)
    positions, of_row = idx[mask][::-1], rows[mask][::-1]
    _, last = np.unique(of_row, return_index=True)
    return positions[last]
