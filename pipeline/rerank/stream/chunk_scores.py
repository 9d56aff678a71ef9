"""Driver side of `--long-passages chunk`: one shard's window scores, aggregated per row as they
arrive. Windows come in any order and grouping, a retried task may deliver one twice (it counts
once), and a row is complete when all of its windows have arrived. Pure numpy."""

from __future__ import annotations

from typing import Literal

import numpy as np

Aggregate = Literal["max", "first", "mean"]
WINDOW_BITS = 16  # a window index fits (max_chunks <= 32767): key = row << 16 | window


class ChunkScores:
    """Per row of one shard: windows arrived and expected, and what the aggregate needs (the
    running max, the first window's score or the sum), plus the best window (highest score of the
    first score column, the earliest window on a tie: the same whatever the arrival order)."""

    def __init__(self, rows: int, columns: int, aggregate: Aggregate) -> None:
        self.aggregate = aggregate
        self.got = np.zeros(rows, np.int32)
        self.expected = np.zeros(rows, np.int32)  # 0 until a window of the row arrives
        self.not_scored = np.zeros(rows, np.int32)
        self.best = np.full((rows, columns), -np.inf, np.float32)
        self.best_window = np.full(rows, np.iinfo(np.int32).max, np.int32)
        self.best_char = np.zeros(rows, np.int32)
        self.first = np.full((rows, columns), np.nan, np.float32) if aggregate == "first" else None
        self.total = np.zeros((rows, columns), np.float64) if aggregate == "mean" else None
        # keys of the windows arrived for rows of several windows that are not complete yet
        self.arrived: set[int] = set()

    def fresh(self, rows: np.ndarray, window: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Mask of the windows not seen before (rows already complete are the caller's to drop):
        the first of any repeats within the batch, and not among those already arrived."""
        keys = (rows.astype(np.int64) << WINDOW_BITS) | window.astype(np.int64)
        mask = np.zeros(len(keys), bool)
        mask[np.unique(keys, return_index=True)[1]] = True
        several = mask & (windows > 1)
        if several.any():
            seen = np.fromiter((int(k) in self.arrived for k in keys[several]), bool, int(several.sum()))
            mask[np.flatnonzero(several)[seen]] = False
            self.arrived.update(keys[mask & (windows > 1)].tolist())
        return mask

    def add(
        self,
        rows: np.ndarray,
        window: np.ndarray,
        windows: np.ndarray,
        chars: np.ndarray,
        not_scored: np.ndarray,
        scores: np.ndarray,
    ) -> np.ndarray:
        """Adds fresh windows (`fresh`'s mask applied); returns the rows they complete."""
        if len(rows) == 0:
            return rows
        self._track_best(rows, window, chars, scores[:, 0])
        np.add.at(self.got, rows, 1)
        self.expected[rows] = windows
        self.not_scored[rows] = not_scored
        np.maximum.at(self.best, rows, scores)
        if self.first is not None:
            w0 = window == 0
            self.first[rows[w0]] = scores[w0]
        if self.total is not None:
            np.add.at(self.total, rows, scores.astype(np.float64))
        touched = np.unique(rows)
        complete = touched[self.got[touched] == self.expected[touched]]
        for row in complete[self.expected[complete] > 1].tolist():
            self.arrived.difference_update((row << WINDOW_BITS) | w for w in range(int(self.expected[row])))
        return complete

    def _track_best(self, rows: np.ndarray, window: np.ndarray, chars: np.ndarray, score: np.ndarray) -> None:
        """Moves each row's best window to this batch's best of it where that one is better."""
        order = np.lexsort((window, -score, rows))  # by row, then score descending, then window
        ordered = rows[order]
        head = order[np.r_[True, ordered[1:] != ordered[:-1]]]  # each row's best in this batch
        r, s, w = rows[head], score[head], window[head]
        current, current_w = self.best[r, 0], self.best_window[r]
        better = (s > current) | ((s == current) & (w < current_w))
        self.best_window[r[better]] = w[better]
        self.best_char[r[better]] = chars[head][better]

    def result(self, rows: np.ndarray) -> np.ndarray:
        """The aggregated scores [rows, columns] of complete rows."""
        if self.aggregate == "first" and self.first is not None:
            return self.first[rows]
        if self.aggregate == "mean" and self.total is not None:
            return (self.total[rows] / self.got[rows, None]).astype(np.float32)
        return self.best[rows]
