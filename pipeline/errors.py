"""Exception types. Only `jobs/` maps them to exit codes (see `EXIT_CODES` there)."""

from __future__ import annotations

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

    def count_shards(self, *, total: int, done_before: int) -> None:
        self.shards_total, self.done_before = total, done_before

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
