"""A run lease on the output storage: one run of a dated job at a time, crash-safe.

The lease is a small JSON object (`OUTPUT/_rerank/lease.json`) with an owner id and a heartbeat
that a background thread refreshes. Another start of the same run refuses while the heartbeat is
fresh; once it is older than `ttl_s` (the holder crashed or lost its node), the next start takes the
lease over, so a crashed run never blocks the next night.

Taking a lease is write-then-read-back: after writing, the taker waits `settle_s` and checks it
still owns the object. Two starts within that window are told apart by the last writer winning and
the other refusing; object stores give read-after-write consistency, which this relies on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from pipeline.errors import RerankError
from pipeline.io import Storage, join
from pipeline.rerank.checkpoint import LEASE

log = logging.getLogger(__name__)


class LeaseHeldError(RerankError):
    """Another live run holds the lease of this output."""


class RunLease:
    """Holds the lease of one OUTPUT while the run is in progress (a context manager)."""

    def __init__(
        self,
        storage: Storage,
        output: str,
        ttl_s: float = 600.0,
        settle_s: float = 1.0,
        clock: Any = time.time,
    ) -> None:
        self.storage = storage
        self.uri = join(output, LEASE)
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, started_at: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "started_at": started_at,
            "heartbeat_at": self.clock(),
            "ttl_s": self.ttl_s,
        }

    def acquire(self) -> None:
        current = self.storage.read_json(self.uri)
        now = self.clock()
        if current is not None and current.get("owner") != self.owner:
            age = now - float(current.get("heartbeat_at", 0))
            if age < float(current.get("ttl_s", self.ttl_s)):
                raise LeaseHeldError(
                    f"this run is already in progress: {self.uri} is held by {current['owner']} "
                    f"(started {_ago(now - current['started_at'])} ago, heartbeat {_ago(age)} ago); "
                    f"not starting a second copy. If that run is dead, its lease expires "
                    f"{_ago(float(current.get('ttl_s', self.ttl_s)) - age)} from now"
                )
            log.warning(
                "taking over the stale lease of %s (no heartbeat for %s)", current["owner"], _ago(age)
            )
        self.storage.write_json_atomic(self.uri, self._record(now))
        time.sleep(self.settle_s)
        check = self.storage.read_json(self.uri)
        if check is None or check.get("owner") != self.owner:
            holder = check.get("owner") if check else "nobody"
            raise LeaseHeldError(f"lost the race for {self.uri} to {holder}; not starting a second copy")
        self._started_at = now
        self._thread = threading.Thread(target=self._heartbeat, name="rerank-lease", daemon=True)
        self._thread.start()
        log.info("holding run lease %s as %s", self.uri, self.owner)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.storage.write_json_atomic(self.uri, self._record(self._started_at))
            except Exception as e:  # keep trying: a missed beat only shortens the lease
                log.warning("lease heartbeat failed: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.storage.read_json(self.uri)
        if current is not None and current.get("owner") == self.owner:
            self.storage.remove(self.uri)

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
