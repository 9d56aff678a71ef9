"""Stopping a run early without leaving OUTPUT half-written: the reasons to stop, asked at safe points.

Reasons are noticed elsewhere: a lease heartbeat finds the lease taken (`RunLease.lost`), SIGINT or
SIGTERM arrives (`handling_signals`; while Ray starts, `keeping_signal_handlers` keeps Ray's own
SIGTERM handler out). Noticing only records the reason. The driver asks
`stop_reason()` where stopping leaves only whole files (every `ShardPublisher.submit`/`reap`, the
runner's phase boundaries) and raises the reason there: a `RunStopped`, which `jobs/` maps to an
exit code. A second signal does not wait: it raises at once (inside a call into Ray, as soon as the
call returns: `deferring_forced_stops`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from pipeline.errors import RunInterrupted, RunStopped

log = logging.getLogger(__name__)

StopCheck = Callable[[], RunStopped | None]

_checks: list[StopCheck] = []
_signal_watches: list[SignalWatch] = []
_deferring = 0  # how many `deferring_forced_stops` the main thread is inside


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
    """Records the first SIGINT/SIGTERM as a RunInterrupted; a second one raises it at once (and
    records it), or, inside `deferring_forced_stops`, when the call in hand returns."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.interrupted: RunInterrupted | None = None
        self.forced: RunInterrupted | None = None
        self.forced_raised = False  # once raised, it unwinds the run: not raised again on the way
        self._previous: dict[int, object] = {}

    def __call__(self) -> RunStopped | None:
        return self.forced or self.interrupted

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted is not None:
            self.forced, self.forced_raised = RunInterrupted(signum, forced=True), not _deferring
            if self.forced_raised:
                raise self.forced
            return
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
    """Puts the handlers of `handling_signals` back after a library replaced them."""
    if threading.current_thread() is threading.main_thread():
        for watch in _signal_watches:
            watch.install()


@contextmanager
def keeping_signal_handlers() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM keep the handlers of `handling_signals`: a library that
    sets its own meanwhile is ignored (main thread only, while a watch is installed). `ray.init`
    sets a SIGTERM handler of its own the moment it starts (`sys.exit(15)`: no safe point, no
    message, exit 15), and starting a local Ray takes seconds."""
    if not _signal_watches or threading.current_thread() is not threading.main_thread():
        yield
        return
    original = signal.signal

    def keep(signum: int, handler: Any) -> Any:
        if signum in SignalWatch.SIGNALS:
            log.debug("kept the run's %s handler over %r", signal.Signals(signum).name, handler)
            return signal.getsignal(signum)
        return original(signum, handler)

    signal.signal = keep  # type: ignore[assignment]  # what the library calls, for this while only
    try:
        with deferring_forced_stops():
            yield
    finally:
        signal.signal = original
        reinstall_signal_handlers()


@contextmanager
def deferring_forced_stops() -> Iterator[None]:
    """Around a call into Ray (`ray.wait`, fetching a block): a second signal meanwhile is raised
    when the call returns, not from inside it. Ray runs signal handlers while it waits but drops
    what they raise, or returns with it still set (a SystemError), all but KeyboardInterrupt."""
    global _deferring
    is_main = threading.current_thread() is threading.main_thread()  # where handlers run
    _deferring += is_main
    try:
        yield
    finally:
        _deferring -= is_main
    if not is_main or _deferring:
        return
    for watch in _signal_watches:
        if watch.forced is not None and not watch.forced_raised:
            watch.forced_raised = True
            raise watch.forced


@contextmanager
def counting_shards(*, total: int, done_before: int, published_now: Callable[[], int]) -> Iterator[None]:
    """A RunStopped raised inside states how far the run got: shards published (by earlier runs,
    `done_before`, and by this one, `published_now()`: the run's collector counts them) and pending."""
    try:
        yield
    except RunStopped as stop:
        stop.count_shards(total=total, done_before=done_before, published_now=published_now())
        raise
