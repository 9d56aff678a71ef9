"""Test-only crash points, so tests can kill the driver at exact moments of a run.

`RERANK_TEST_CRASH_AT=<point>` makes the process SIGKILL itself when it reaches that point. Unset
(always, outside tests) it costs one environment lookup. Points, in run order: on the driver
`before_write` (checks done, nothing written yet), `after_reuse_lookup` (--reuse: the lookup
wrote its files, nothing is scored yet), `publish_in_flight` (a batch was just handed
to a writer), `before_success` (every shard done, `_SUCCESS` not yet written); in a writer
`between_publish_and_marker` (a shard is published, its marker not yet written; the publisher
passes the variable on to the writers' processes).
"""

from __future__ import annotations

import os
import signal

ENV = "RERANK_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
