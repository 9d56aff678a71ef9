"""What a run shows while it scores: on a terminal one live bar (shards, pairs, pairs/s, ETA), in a
log (stderr not a terminal) one progress line at most every `progress.interval_s` seconds. The
final summary is the entry point's (jobs/rerank.py)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from tqdm import tqdm  # a dependency of transformers (and huggingface_hub), so always installed
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass(frozen=True)
class Snapshot:
    """Where a run stands: shards published, pairs done (scored or, with --reuse, given their
    stored score: `pairs_reused` of them), seconds since scoring began. The rate counts the pairs
    scored only."""

    shards_done: int
    shards_total: int
    pairs_done: int
    pairs_total: int
    elapsed_s: float
    pairs_reused: int = 0
    reused_expected: int = 0  # --reuse: the pairs the lookup found, reused as they arrive

    @property
    def pairs_per_s(self) -> float:
        scored = self.pairs_done - self.pairs_reused
        return scored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """The pairs still to score at the rate so far (those still to be reused cost nothing)."""
        rate = self.pairs_per_s
        to_score = (
            self.pairs_total
            - max(self.reused_expected, self.pairs_reused)
            - (self.pairs_done - self.pairs_reused)
        )
        return max(0, to_score) / rate if rate > 0 else None


def progress_line(s: Snapshot) -> str:
    eta = "?" if s.eta_s is None else duration(s.eta_s)
    reused = f" ({s.pairs_reused:,} reused)" if s.pairs_reused else ""
    return (
        f"shards {s.shards_done}/{s.shards_total} | {s.pairs_done:,}/{s.pairs_total:,} pairs{reused} | "
        f"{s.pairs_per_s:.1f} pairs/s | ETA {eta}"
    )


class ProgressConsole(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class IntervalLog:
    """A progress line at most every `interval_s` seconds (a log read later, or by a scheduler)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last = clock()

    def update(self, snapshot: Snapshot) -> None:
        now = self._clock()
        if now - self._last >= self._interval_s:
            self._last = now
            log.info("%s", progress_line(snapshot))

    def close(self) -> None:
        """Nothing to clear: the summary follows."""


class LiveBar:
    """One bar redrawn in place; log lines printed meanwhile go above it, not through it."""

    def __init__(self, shards_total: int, pairs_total: int, stream: TextIO) -> None:
        self._redirect = logging_redirect_tqdm()  # the root logger's console handlers write above the bar
        self._redirect.__enter__()
        # follows the terminal's size; one that reports none (0 x 0, e.g. under `script`) gets 100 x 24
        # (tqdm hides a bar beyond the screen's height, so 0 rows would show nothing)
        width = {"dynamic_ncols": True} if min(_size(stream)) > 0 else {"ncols": 100, "nrows": 24}
        self._bar = tqdm(
            total=pairs_total,
            desc=f"shards 0/{shards_total}",
            unit=" pairs",
            file=stream,
            smoothing=0.1,
            **width,
        )

    def update(self, snapshot: Snapshot) -> None:
        self._bar.set_description_str(f"shards {snapshot.shards_done}/{snapshot.shards_total}", refresh=False)
        if snapshot.pairs_reused:  # done, not scored: the rate that counts is the scored pairs'
            self._bar.set_postfix_str(
                f"{snapshot.pairs_reused:,} reused, {snapshot.pairs_per_s:.1f} scored/s", refresh=False
            )
        self._bar.update(snapshot.pairs_done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
        self._redirect.__exit__(None, None, None)


def _size(stream: TextIO) -> tuple[int, int]:
    try:
        return tuple(os.get_terminal_size(stream.fileno()))  # type: ignore[return-value]
    except (OSError, ValueError):  # not a real terminal (a test's stream)
        return 0, 0


def open_console(
    interval_s: float, shards_total: int, pairs_total: int, stream: TextIO | None = None
) -> ProgressConsole:
    """A live bar when `stream` (default stderr, where log lines go) is a terminal, else an IntervalLog."""
    stream = stream or sys.stderr
    if stream.isatty():
        return LiveBar(shards_total, pairs_total, stream)
    return IntervalLog(interval_s)
