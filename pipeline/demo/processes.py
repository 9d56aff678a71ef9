"""Starting local helper processes: a free loopback port to give one, and waiting until it (or any
condition) is ready."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    interval_s: float = 0.05,
    what: str = "the condition",
    *,
    process: subprocess.Popen | None = None,
) -> T:
    """Polls `predicate` until it returns something truthy, and returns that. Raises TimeoutError
    naming `what` after `timeout_s`, or AssertionError as soon as `process` (when given) has exited
    with the condition still false: waiting on a dead run would only burn the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process {process.pid} exited ({process.returncode}) before {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
