"""Stopping a run early without leaving OUTPUT half-written: the reasons to stop, asked at safe points.

Reasons are noticed elsewhere: a lease heartbeat finds the lease taken (`RunLease.lost`), SIGINT or
SIGTERM arrives (`handling_signals`). Noticing only records the reason. The driver asks
`stop_reason()` where stopping leaves only whole files (every `ShardPublisher.submit`/`reap`, the
runner's phase boundaries) and raises the reason there: a `RunStopped`, which `jobs/` maps to an
exit code. A second signal does not wait: it raises at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from pipeline.errors import RunInterrupted, RunStopped

log = logging.getLogger(__name__)

StopCheck = Callable[[], RunStopped | None]

_checks: list[StopCheck] = []
_signal_watches: list[SignalWatch] = []


def stop_reason() -> RunStopped | None:
    """Why the run in this process must stop now, or None. A lost lease comes before a signal: it
    also forbids finishing the publishes in flight."""
    reasons = [r for check in list(_checks) if (r := check()) is not None]
    return min(reasons, key=lambda r: r.finish_in_flight, default=None)


def raise_if_stopped() -> None:
    if (reason := stop_reason()) is not None:
        raise reason


@contextmanager
def stop_when(check: StopCheck) -> Iterator[None]:
    """While inside, `check` is one of the reasons `stop_reason` asks."""
    _checks.append(check)
    try:
        yield
    finally:
        _checks.remove(check)


class SignalWatch:
    """Records the first SIGINT/SIGTERM as a RunInterrupted; a second one raises it at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.interrupted: RunInterrupted | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> RunStopped | None:
        return self.interrupted

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted is not None:
            raise RunInterrupted(signum, forced=True)
        self.interrupted = RunInterrupted(signum)
        log.warning(
            "%s received: stopping once the shards being published are written (again: stop at once)",
            signal.Signals(signum).name,
        )

    def install(self) -> None:
        for s in self.SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)

    def restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)  # type: ignore[arg-type]  # what getsignal gave back


@contextmanager
def handling_signals() -> Iterator[SignalWatch]:
    """While inside, SIGINT and SIGTERM stop the run at its next safe point (main thread only;
    elsewhere signals keep their handlers)."""
    watch = SignalWatch()
    if threading.current_thread() is not threading.main_thread():
        log.debug("not in the main thread: SIGINT/SIGTERM keep their handlers")
        yield watch
        return
    watch.install()
    _signal_watches.append(watch)
    try:
        with stop_when(watch):
            yield watch
    finally:
        _signal_watches.remove(watch)
        watch.restore()


def reinstall_signal_handlers() -> None:
    """Puts the handlers of `handling_signals` back after a library replaced them (`ray.init`
    installs its own SIGTERM handler in the driver)."""
    if threading.current_thread() is threading.main_thread():
        for watch in _signal_watches:
            watch.install()


@contextmanager
def counting_shards(*, total: int, done_before: int) -> Iterator[None]:
    """A RunStopped raised inside states how far the run got (shards published, pending)."""
    try:
        yield
    except RunStopped as stop:
        stop.count_shards(total=total, done_before=done_before)
        raise
