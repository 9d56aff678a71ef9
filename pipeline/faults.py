"""Test-only crash points, so tests can kill the driver at exact moments of a run.

`RERANK_TEST_CRASH_AT=<point>` makes the process SIGKILL itself when it reaches that point. Unset
(always, outside tests) it costs one environment lookup. Points, in run order:
`before_write` (checks done, nothing written yet), `publish_in_flight` (a shard's write task just
started), `between_publish_and_marker` (a shard is published, its marker not yet written),
`before_success` (every shard done, `_SUCCESS` not yet written).
"""

from __future__ import annotations

import os
import signal

ENV = "RERANK_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
