"""Exception types. Only `jobs/` maps them to exit codes (see `EXIT_CODES` there)."""

from __future__ import annotations


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
