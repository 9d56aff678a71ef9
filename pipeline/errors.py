"""Exception types. Only `jobs/` maps them to exit codes (see `EXIT_CODES` there). `storage_error`
turns a failed storage call into the StorageError that names the location and the likely fix."""

from __future__ import annotations

import errno
import signal


class RerankError(Exception):
    """Base class for errors the job reports to the user with a clear message."""


class ConfigError(RerankError):
    """The job configuration (file, flags) is invalid. Lists every problem found at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class InputContractError(RerankError):
    """An input shard does not match what the job needs (columns, types), found before scoring."""


class ModelLoadError(RerankError):
    """The model or its tokenizer cannot be loaded, or is not a one-logit reranker."""


class OutputStateError(RerankError):
    """OUTPUT holds something that forbids this run: another config's progress, foreign files."""


class DamagedFileError(OutputStateError):
    """A bookkeeping file in OUTPUT (`_rerank/run.json`, ...) cannot be read: empty, cut short, or
    a field of the wrong type. The message names the file and what to do about it."""


class StorageError(RerankError):
    """A storage operation failed for good (missing bucket, no permission, unreachable endpoint)."""


class RunStopped(BaseException):
    """The run was told to stop before it finished: a signal, or its lease was lost.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on its way (the driver
    loop turns those into failed shards) swallows it: it reaches `jobs/`, which maps it to an exit
    code. Raised at a safe point of the driver (see `pipeline.rerank.stop`), never mid-write.
    """

    finish_in_flight = True  # let publishes already under way finish and be marked first

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.advice = advice
        self.published_now = 0  # shards this run published before it stopped
        self.done_before: int | None = None  # shards an earlier run had published
        self.shards_total: int | None = None

    def count_shards(self, *, total: int, done_before: int, published_now: int) -> None:
        self.shards_total, self.done_before, self.published_now = total, done_before, published_now

    def __str__(self) -> str:
        if self.shards_total is None or self.done_before is None:
            return f"{self.reason}; {self.advice}"
        published = self.done_before + self.published_now
        return (
            f"{self.reason}: {published} of {self.shards_total} shards published "
            f"({self.published_now} by this run), {self.shards_total - published} pending; {self.advice}"
        )


class RunInterrupted(RunStopped):
    """SIGINT or SIGTERM: the run stopped at a safe point; exit code 128 + the signal number."""

    def __init__(self, signal_number: int, *, forced: bool = False) -> None:
        name = signal.Signals(signal_number).name
        reason = f"interrupted by {name}"
        if forced:
            reason += " twice: stopped at once, publishes in flight abandoned"
        super().__init__(reason, "rerun the same command to resume")
        self.signal_number = signal_number
        self.finish_in_flight = not forced


class LeaseHeldError(RerankError):
    """Another live run holds the lease of this output."""


class LeaseLostError(RunStopped):
    """This run's lease was taken over (it stalled past the TTL, or could not renew it): it stops
    at once, leaving the publishes in flight, and writes nothing more to OUTPUT."""

    finish_in_flight = False

    def __init__(self, uri: str, holder: str, why: str) -> None:
        super().__init__(
            f"lease {uri} lost to {holder} ({why}); this run stopped",
            "the run holding the lease publishes the rest; if it is not running, rerun the same command",
        )
        self.holder = holder


# the fix for a write that failed on a full disk or quota (ENOSPC, EDQUOT); the reasons of the
# shards a full disk stopped hold it, which is how the driver tells them apart
DISK_FULL = "the disk (or quota) that holds it is full: free space there or choose another location"
LOCAL_UNWRITABLE = (
    "{path!r} is not writable by this user (or is on a read-only file system); fix its permissions "
    "or choose another location"
)


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` is a write that found no space left (a full disk, or a full quota)."""
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def storage_error(uri: str, role: str, e: BaseException) -> StorageError:
    """A StorageError naming the URI and the likely fix for a failed storage call."""
    text = f"{type(e).__name__}: {e}"
    local = "://" not in uri or uri.startswith(("file://", "local://"))
    if is_disk_full(e):
        hint = DISK_FULL
    elif local and (isinstance(e, PermissionError) or getattr(e, "errno", None) == errno.EROFS):
        hint = LOCAL_UNWRITABLE.format(path=getattr(e, "filename", None) or uri)
    elif local and isinstance(e, (NotADirectoryError, FileExistsError)):
        hint = "a file is in the way of a directory: pass a directory, or remove the file"
    elif isinstance(e, PermissionError) or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        hint = (
            "access denied: check the credentials the job uses (AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or --storage-profile, the instance role) and their "
            "permissions on it"
        )
    elif isinstance(e, FileNotFoundError):
        hint = "no such bucket or path: check the URI"
    elif any(w in text for w in ("Connect", "connect", "Endpoint", "timed out", "Timeout", "resolve")):
        hint = (
            "cannot reach the storage endpoint: check --storage-endpoint-url / AWS_ENDPOINT_URL "
            "and the network"
        )
    else:
        hint = "check the URI, the endpoint and the credentials"
    return StorageError(f"{role} {uri!r}: {hint} ({text})")
