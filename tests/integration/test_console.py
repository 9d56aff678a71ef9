"""The console of a real run at the default level: `rerank demo --dashboard` in a subprocess that
starts its own local Ray (its output piped, so not a terminal). None of the libraries' noise the
issue listed, our own lines and summary, and the dashboard URL, which answers HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import pytest

pytestmark = pytest.mark.integration

# What the console showed before (issue 15): transformers' load report and bars, Ray's start-up
# lines and warnings, Ray's core_worker.cc line about Ray Data's actors, Ray Data's notices.
NOISE = [
    "LOAD REPORT",
    "Loading weights",
    "Writing model shards",
    "it/s]",
    "Token authentication is enabled",
    "Started a local Ray instance",
    "core_worker.cc",
    "constructor arguments in the object store",
    "logging.cc",
    "Progress bars disabled",
    "streaming_executor",
    "PlacementGroupCleaner",
    "Failed to query Ray Train Controller",
]


@pytest.mark.timeout(600)  # a Ray of its own and the demo model; ~1 min on 2 cores
def test_demo_at_the_default_level_shows_our_lines_only_and_the_dashboard_answers(tmp_path, spawn):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "jobs.cli", "demo", "--workdir", str(tmp_path), "--dashboard"]
    command += ["--queries", "4", "--candidates", "5", "--shards", "2"]
    proc = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines, pages = [], []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"Ray dashboard: (http://[\w.:]+)", line)
        if found:  # while the demo still runs
            with urllib.request.urlopen(found.group(1), timeout=60) as page:
                pages.append((page.status, page.read().decode(errors="replace")))
    output = "".join(lines)
    assert proc.wait(timeout=60) == 0, output
    assert not [noise for noise in NOISE if noise in output], output
    assert "DEMO done: 2 shards, 20 pairs" in output
    assert pages and pages[0][0] == 200 and "Ray Dashboard" in pages[0][1]
    assert "\r" not in output  # not a terminal: no live bar
    assert all(" INFO rerank" in line or " INFO pipeline." in line for line in lines), output
