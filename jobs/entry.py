"""What every entry point shares: logging setup, and one table of exit codes (which exception
means which code), applied by `execute`.

    0  done: every shard published (`_SUCCESS` written) / the model published
    1  some shards failed, the rest are published (rerun to retry) / training failed (rerun resumes)
    2  bad usage, config, model, storage, input or output state, found before any scoring
    3  the same run is already in progress elsewhere (its lease is held)
    4  internal error: a bug; the traceback is in the log, please report it
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from pipeline.errors import ConfigError, RerankError
from pipeline.rerank.lease import LeaseHeldError

log = logging.getLogger("rerank")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ALREADY_RUNNING, EXIT_INTERNAL = 0, 1, 2, 3, 4

# first match wins: subclasses before their bases
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (LeaseHeldError, EXIT_ALREADY_RUNNING),
    (ConfigError, EXIT_USAGE),
    (RerankError, EXIT_USAGE),
]

Command = Callable[[argparse.Namespace], int]


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def exit_code_for(error: BaseException) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), EXIT_INTERNAL)


def execute(command: Command, args: argparse.Namespace) -> int:
    """Runs a command; a known error is logged with its message and mapped to its exit code, any
    other exception is an internal error (exit 4) logged with its traceback."""
    try:
        return command(args)
    except Exception as e:
        code = exit_code_for(e)
        if code == EXIT_INTERNAL:
            log.exception("internal error (a bug in offline-rerank; please report it with this log)")
        elif isinstance(e, ConfigError) or code == EXIT_ALREADY_RUNNING:
            log.error("%s", e)
        else:
            log.error("%s: %s", type(e).__name__, e)
        return code
