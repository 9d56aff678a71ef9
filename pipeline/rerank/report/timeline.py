"""A bounded time series for the run report: amounts (pairs, tokens) spread over a fixed number
of time bins that double in width as the run goes on, so a run of a minute and one of a night
both end with at most `bins` points per series, and the driver holds the same few KiB either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_BINS = 240  # points per series; even, so that widening merges pairs of bins
DEFAULT_WIDTH_S = 0.25


class TimeBins:
    """Named series of amounts per time bin, from `origin` (epoch seconds) on.

    `add` spreads an amount over the interval it was produced in (a scoring call's start to end),
    in proportion to each bin's overlap, so a rate per bin is the amount / the bin's width.
    """

    def __init__(self, origin: float, bins: int = DEFAULT_BINS, width_s: float = DEFAULT_WIDTH_S) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"bins must be an even number >= 2, got {bins}")
        self.origin = origin
        self.bins = bins
        self.width_s = width_s
        self.used = 0  # bins up to the last one anything was added to
        self._series: dict[str, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return list(self._series)

    def add(self, name: str, start: float, end: float, amount: float) -> None:
        """Adds `amount`, produced between `start` and `end` (epoch seconds), to series `name`."""
        s = max(0.0, start - self.origin)
        e = max(s, end - self.origin)
        while e >= self.bins * self.width_s:
            self._widen()
        series = self._series.setdefault(name, np.zeros(self.bins))
        w = self.width_s
        first, last = int(s // w), min(int(e // w), self.bins - 1)
        if e - s <= 0 or first == last:
            series[first] += amount
        else:
            idx = np.arange(first, last + 1)
            overlap = np.minimum(e, (idx + 1) * w) - np.maximum(s, idx * w)
            series[idx] += amount * overlap / (e - s)
        self.used = max(self.used, last + 1)

    def _widen(self) -> None:
        """Doubles the bin width: each pair of bins becomes one."""
        half = self.bins // 2
        for series in self._series.values():
            series[:half] = series[0::2] + series[1::2]
            series[half:] = 0.0
        self.width_s *= 2
        self.used = (self.used + 1) // 2

    def rates(self, name: str) -> list[float]:
        """Series `name` per second, one value per bin up to the last one used."""
        series = self._series.get(name)
        if series is None:
            return [0.0] * self.used
        return [float(f"{v:.6g}") for v in series[: self.used] / self.width_s]

    def to_dict(self, names: list[str] | None = None) -> dict[str, Any]:
        """The bin width and each series' rates (per second), as the report stores them."""
        return {
            "bin_s": self.width_s,
            "bins": self.used,
            "series": {n: self.rates(n) for n in (self.names if names is None else names)},
        }
