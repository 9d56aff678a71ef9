"""What every entry point shares: `--verbose` and the logging setup (a quiet console by default:
our lines and every error, not the libraries' chatter), and one table of exit codes (which
exception means which code), applied by `execute`.

    0  done: every shard published (`_SUCCESS` written) / the model published
    1  some shards failed, the rest are published (rerun to retry) / training failed (rerun resumes)
    2  bad usage, config, model, storage, input or output state, found before any scoring
    3  the same run is already in progress elsewhere (its lease on OUTPUT is held), or this run
       lost its lease to another one and stopped
    4  internal error: a bug; the traceback is in the log, please report it
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal number): publishes in flight
       finished, the lease released; rerun to resume
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from collections.abc import Callable

from pipeline.errors import (
    ConfigError,
    LeaseHeldError,
    LeaseLostError,
    RerankError,
    RunInterrupted,
    RunStopped,
)
from pipeline.logs import LOG_FORMAT, VERBOSE_ENV, configure_library_logging, quiet_environment

log = logging.getLogger("rerank")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ALREADY_RUNNING, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_QUALITY_GATE = 5  # every shard published, but the quality gate held _SUCCESS back
EXIT_SIGNAL_BASE = 128  # + the signal number, as a shell reports a process a signal ended

# first match wins: subclasses before their bases
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (LeaseHeldError, EXIT_ALREADY_RUNNING),
    (LeaseLostError, EXIT_ALREADY_RUNNING),
    (RunInterrupted, EXIT_SIGNAL_BASE),  # + its signal number
    (ConfigError, EXIT_USAGE),
    (RerankError, EXIT_USAGE),
]

Command = Callable[[argparse.Namespace], int]


def run_command_as_main(command: str) -> None:
    """`python -m jobs.<module> ARGS` (what `ray job submit` runs) as `rerank <command> ARGS`: the
    one CLI (jobs/cli.py), run as a script, so no entry point keeps a parser of its own."""
    sys.argv[1:1] = [command]
    runpy.run_module("jobs.cli", run_name="__main__")


def add_console_flags(parser: argparse.ArgumentParser) -> None:
    """`--verbose`, on every command."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False,
        help="show everything: our debug lines, and the libraries' (Ray, transformers, ...) info, "
        "warnings, load reports and progress bars, which are off by default (errors always show)",
    )


def configure_logging(verbose: bool = False) -> None:
    """Our log lines at INFO (DEBUG with --verbose); the libraries' errors only (INFO and up with
    --verbose), here and, through the job's runtime_env, in every Ray worker (pipeline/cluster.py)."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    for key, value in quiet_environment().items():  # read by libraries imported later (transformers)
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format=LOG_FORMAT)
    configure_library_logging(verbose)


def write_stdout(text: str) -> bool:
    """Writes a command's output. A reader that has closed the pipe (`rerank status OUT | head
    -1`) is normal for a command-line tool: the rest is dropped quietly (False), and the command
    keeps its own exit code."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        drop_stdout()
        return False


def drop_stdout() -> None:
    """Points stdout at /dev/null after its reader went away, so that what is still buffered does
    not fail again (with a traceback) when the interpreter flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind stdout (a test's capture)
        pass


def exit_code_for(error: BaseException) -> int:
    code = next((code for kind, code in EXIT_CODES if isinstance(error, kind)), EXIT_INTERNAL)
    return code + error.signal_number if isinstance(error, RunInterrupted) else code


def execute(command: Command, args: argparse.Namespace) -> int:
    """Runs a command; a known error is logged with its message and mapped to its exit code, any
    other exception is an internal error (exit 4) logged with its traceback."""
    try:
        return command(args)
    except RunStopped as e:  # a BaseException (see pipeline/errors.py): stopped at a safe point
        log.error("%s", e)
        return exit_code_for(e)
    except Exception as e:
        code = exit_code_for(e)
        if code == EXIT_INTERNAL:
            log.exception("internal error (a bug in offline-rerank; please report it with this log)")
        elif isinstance(e, ConfigError) or code == EXIT_ALREADY_RUNNING:
            log.error("%s", e)
        else:
            log.error("%s: %s", type(e).__name__, e)
        return code
