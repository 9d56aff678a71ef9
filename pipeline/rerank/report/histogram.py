"""Fixed-size histograms for the run report (token lengths, scores): bounded whatever the corpus."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LENGTH_BINS = 64


class Histogram:
    """Counts over `bins` equal bins from `lo`, `width` wide; values beyond the last bin count in
    it, below the first in the first. Keeps the exact count, sum, min and max."""

    def __init__(self, lo: float, width: float, bins: int) -> None:
        self.lo, self.width = lo, width
        self.edges = lo + np.arange(bins + 1) * width
        self.counts = np.zeros(bins, np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if not len(values):
            return
        idx = np.clip(((values - self.lo) // self.width).astype(np.int64), 0, len(self.counts) - 1)
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.count += len(values)
        self.total += float(values.sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def to_dict(self, trim: bool = False) -> dict[str, Any]:
        """Edges and counts (`trim`: only from the first to the last bin holding anything)."""
        lo, hi = 0, len(self.counts)
        used = np.flatnonzero(self.counts)
        if trim and len(used):
            lo, hi = int(used[0]), int(used[-1]) + 1
        return {
            "edges": [round(float(e), 4) for e in self.edges[lo : hi + 1]],
            "counts": self.counts[lo:hi].tolist(),
            "count": self.count,
            "mean": round(self.total / self.count, 4) if self.count else None,
            "min": round(self.min, 4) if self.count else None,
            "max": round(self.max, 4) if self.count else None,
        }


def length_histogram(max_length: int, bins: int = LENGTH_BINS) -> Histogram:
    """Token lengths in bins of equal integer width covering 0 .. a little past `max_length`
    (decoder kinds add a prompt beyond it)."""
    return Histogram(0.0, float(max(1, math.ceil((max_length + 1) / (bins - 4)))), bins)
