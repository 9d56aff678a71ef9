"""A run lease on the output storage: one run of an OUTPUT at a time, crash-safe.

The lease is a small JSON object (`OUTPUT/_rerank/lease.json`) with an owner id and a heartbeat
that a background thread refreshes. Another start of the same run refuses while the heartbeat is
fresh; once it is older than `ttl_s` (the holder crashed or lost its node), the next start takes the
lease over, so a crashed run never blocks the next night.

Writes are conditional where the store allows it: on S3 a PUT with If-None-Match (take a free
lease) or If-Match on the version read (take a stale one over, renew ours), so of two writers one
fails. Elsewhere (a local path) the lease is written atomically. Every write is then read back (a
taker after waiting `settle_s`), so that where writes cannot be conditional (or a store ignores
the condition) the last of two writers within that window wins and the other refuses (object
stores give read-after-write consistency, which this relies on).

Every heartbeat first checks that this run still owns the lease. A run that stalled past the TTL
and was taken over finds another owner there: the lease is lost, `lost()` says so, and the run
stops at its next safe point (see `pipeline.rerank.stop`) with `LeaseLostError`, writing nothing
more. A run whose own heartbeat is late checks synchronously when asked.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import LeaseHeldError, LeaseLostError
from pipeline.io import Storage, join
from pipeline.rerank.output.bookkeeping import LEASE_RECORD, Damaged, parse_record, read_record
from pipeline.rerank.output.paths import LEASE

log = logging.getLogger(__name__)


class LeaseFile:
    """The lease object: read with its version, written only if unchanged where the store can."""

    def __init__(self, storage: Storage, uri: str) -> None:
        self.storage = storage
        self.uri = uri
        self._fs, self._path = storage.filesystem(uri)
        self.is_conditional = "s3" in self._fs.protocol  # s3fs passes If-Match/If-None-Match on

    def read(self) -> tuple[dict[str, Any] | Damaged | None, str | None]:
        """The lease record (None: there is none; `Damaged`: it cannot be read, and counts as
        stale) and its version tag (S3 ETag; None elsewhere)."""
        if not self.is_conditional:
            return read_record(self.storage, self.uri, LEASE_RECORD), None
        self._fs.invalidate_cache(self._path)
        try:
            # the version first: if the object changes after, a write expecting it fails
            tag = self._fs.info(self._path)["ETag"]
            return parse_record(self.uri, self._fs.cat_file(self._path), LEASE_RECORD), tag
        except FileNotFoundError:
            return None, None

    def write(self, record: dict[str, Any], expected: str | None) -> bool:
        """Writes `record` if the lease is still at version `expected` (None: still absent) on a
        conditional store; unconditionally elsewhere. False if another writer came first."""
        if not self.is_conditional:
            self.storage.write_json_atomic(self.uri, record)
            return True
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        match = {"IfMatch": expected} if expected is not None else {"IfNoneMatch": "*"}
        try:
            self._fs.pipe_file(self._path, data, **match)
        except FileExistsError:  # If-None-Match: someone created it first
            return False
        except OSError as e:
            code = _s3_error_code(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            unsupported = code in ("NotImplemented", "InvalidArgument", "InvalidRequest")
            if not unsupported and e.errno != errno.ENOSYS:
                raise
            log.warning(
                "%s: this store does not take conditional writes (%s); the lease falls back to "
                "write and read back",
                self.uri,
                code or e,
            )
            self.is_conditional = False
            self.storage.write_json_atomic(self.uri, record)
        return True

    def create(self, record: dict[str, Any]) -> bool | None:
        """Creates the lease if there is none, in one step no other writer can interleave with
        (local paths: a hard link): True if created, False if another writer came first; None
        where the store cannot (object stores: see `write`; file systems without hard links)."""
        if self.is_conditional or not self.storage.is_local(self.uri):
            return None
        try:
            return self.storage.create_json_local(self.uri, record)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network/FUSE file systems)
            return None

    def remove(self) -> None:
        self.storage.remove(self.uri)


@dataclass(frozen=True)
class LeaseClaim:
    """What a writer needs to check, right before it writes, that its run still holds the
    lease: a run that lost it (taken over after a stall) leaves the shards in flight unwritten."""

    uri: str
    owner: str

    def check(self, storage: Storage) -> None:
        """Raises LeaseLostError if another run (or nobody) holds the lease now."""
        current, _ = LeaseFile(storage, self.uri).read()
        holder = owner_of(current)
        if holder != self.owner:
            raise LeaseLostError(self.uri, holder, "found by a writer before it wrote")


class RunLease:
    """Holds the lease of one OUTPUT while the run is in progress (a context manager)."""

    def __init__(
        self,
        storage: Storage,
        output: str,
        ttl_s: float = 600.0,
        settle_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.uri = join(output, LEASE)
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.process = process_tag(os.getpid())  # lets a rerun on this machine see it is gone
        self._file = LeaseFile(storage, self.uri)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the heartbeat thread and a late `lost()` both renew
        self._started_at = 0.0
        self._confirmed_at: float | None = None  # when this run last found itself the owner
        self._attempted_at = 0.0
        self._lost: LeaseLostError | None = None

    @property
    def claim(self) -> LeaseClaim:
        return LeaseClaim(self.uri, self.owner)

    def _record(self, started_at: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "process": self.process,
            "started_at": started_at,
            "heartbeat_at": self.clock(),
            "ttl_s": self.ttl_s,
        }

    def _holder(self) -> str:
        current, _ = self._file.read()
        return owner_of(current)

    def _check_free(self, current: dict[str, Any] | Damaged, now: float) -> None:
        """Raises LeaseHeldError if another live run holds the lease `current`; says why a lease
        that is not (stale, its process gone, or damaged) is taken over."""
        if isinstance(current, Damaged):
            log.warning("%s; taking it over as stale", current)
            return
        age = now - float(current["heartbeat_at"])
        ttl = float(current.get("ttl_s", self.ttl_s))
        if is_gone(current.get("process")):  # killed on this machine: no need to wait out its TTL
            log.warning("taking over the lease of %s: its process is gone", current["owner"])
        elif age < ttl:
            raise LeaseHeldError(
                f"a run of this OUTPUT is already in progress: {self.uri} is held by {current['owner']} "
                f"(started {_ago(now - float(current['started_at']))} ago, heartbeat {_ago(age)} ago); "
                f"not starting a second copy. If that run is dead, its lease expires "
                f"{_ago(ttl - age)} from now"
            )
        else:
            log.warning(
                "taking over the stale lease of %s (no heartbeat for %s)", current["owner"], _ago(age)
            )

    def acquire(self) -> None:
        current, tag = self._file.read()
        now = self.clock()
        if current is not None and owner_of(current) != self.owner:
            self._check_free(current, now)
        # a free local lease is created exclusively: nothing to wait for. Otherwise conditional
        # where the store allows (only if still the stale lease read, or still absent); read back
        # after settle_s in any case: a store that ignores the condition headers (instead of
        # refusing them) is then as safe as without them
        created = self._file.create(self._record(now)) if current is None else None
        if created is None and self._file.write(self._record(now), tag):
            time.sleep(self.settle_s)
        holder = self._holder()
        if holder != self.owner:
            raise LeaseHeldError(f"lost the race for {self.uri} to {holder}; not starting a second copy")
        self._started_at = self._confirmed_at = now
        self._thread = threading.Thread(target=self._heartbeat, name="rerank-lease", daemon=True)
        self._thread.start()
        log.info("holding run lease %s as %s (ttl %ss)", self.uri, self.owner, self.ttl_s)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4) and self._lost is None:
            self.beat()

    def beat(self) -> None:
        """One heartbeat: checks that this run still owns the lease, then renews it. A lease found
        with another owner is lost for good; `lost()` reports it from then on."""
        with self._lock:
            if self._lost is not None:
                return
            self._attempted_at = self.clock()
            try:
                self._renew()
            except Exception as e:  # keep trying: a missed beat only shortens the lease
                log.warning("lease heartbeat failed: %s", e)
                unrenewed = self.clock() - (self._confirmed_at or 0.0)
                if unrenewed >= self.ttl_s:  # another run may have taken it over by now
                    self._lose(
                        "nobody known",
                        f"this run could not renew it for {_ago(unrenewed)}, past its TTL of "
                        f"{_ago(self.ttl_s)}: {e}",
                    )

    def _renew(self) -> None:
        current, tag = self._file.read()
        now = self.clock()
        if isinstance(current, Damaged):  # edited or cut short under us: ours to write again
            log.warning("%s; this run, its holder, writes it again", current)
        elif current is not None and current["owner"] != self.owner:
            self._lose(
                current["owner"],
                f"this run last renewed it {_ago(now - (self._confirmed_at or now))} ago, past its TTL "
                f"of {_ago(self.ttl_s)}, and that run took it over",
            )
            return
        # absent (removed by hand): this run recreates it, unless another run does first
        self._file.write(self._record(self._started_at), tag)
        holder = self._holder()  # read back (see acquire)
        if holder != self.owner:
            self._lose(holder, "that run wrote it while this run was renewing it")
            return
        self._confirmed_at = now

    def _lose(self, holder: str, why: str) -> None:
        self._lost = LeaseLostError(self.uri, holder, why)
        log.error("lease lost: %s", self._lost.reason)

    def lost(self) -> LeaseLostError | None:
        """The loss of the lease once found (None while this run holds it), for `stop_when`. If
        this run's own heartbeat is late (the process stalled, the storage failed), checks now,
        so that a run waking from a stall finds out before its next write."""
        if self._lost is None and self._confirmed_at is not None:
            now = self.clock()
            late = now - self._confirmed_at > self.ttl_s / 2
            if late and now - self._attempted_at >= self.ttl_s / 16:
                self.beat()
        return self._lost

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is not None:  # another run's lease now: not ours to remove
            return
        try:
            current, _ = self._file.read()
            if owner_of(current) == self.owner:
                self._file.remove()
        except Exception as e:  # the run's outcome stands; the lease expires on its own
            log.warning(
                "could not release the lease %s (%s); it expires %ss after its last heartbeat",
                self.uri,
                e,
                self.ttl_s,
            )

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def owner_of(record: dict[str, Any] | Damaged | None) -> str:
    """Who holds a lease: its owner, or "nobody" (none, or one that cannot be read)."""
    if isinstance(record, Damaged):
        return "nobody (its lease file is damaged)"
    return "nobody" if record is None else str(record["owner"])


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """A live process's start time (clock ticks after boot) from /proc; None if it is gone or a zombie."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state is field 3, starttime 22
    return None if fields[0] in ("Z", "X") else fields[19]


def process_tag(pid: int) -> str | None:
    """Names one process for good on Linux: boot, pid namespace, pid and start time (pids are reused)."""
    boot, namespace = _read("/proc/sys/kernel/random/boot_id"), _pid_namespace()
    start = _start_time(pid)
    return f"{boot}/{namespace}/{pid}/{start}" if boot and namespace and start else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_gone(tag: object) -> bool:
    """Whether the process a lease names surely no longer runs: it ran on this machine, in this pid
    namespace, since its last boot, and no process with its pid and start time exists. Anything
    else (another machine or container, no tag) is not known to be gone: its TTL decides."""
    if not isinstance(tag, str) or tag.count("/") != 3:
        return False
    boot, namespace, pid, start = tag.split("/")
    if boot != _read("/proc/sys/kernel/random/boot_id") or namespace != _pid_namespace():
        return False
    return pid.isdigit() and _start_time(int(pid)) != start


def _s3_error_code(e: OSError) -> str | None:
    """The S3 error code behind an s3fs OSError (s3fs keeps botocore's ClientError as the cause)."""
    response = getattr(e.__cause__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
