"""Faults the job survives: a scoring actor process killed mid-run (a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cli import main
from tests.conftest import done_markers
from tests.integration.test_bad_input import assert_reconciled
from tests.integration.test_job import assert_output_invariants, read_output, tables_equal


def scorer_pids() -> list[int]:
    """Processes of Ray actors running the ScorePairs stage (Ray titles them after the class)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapBatches(ScorePairs)" in cmdline:
                pids.append(int(entry))
    return pids


def test_killed_scoring_actor_is_restarted_and_every_row_lands_once(
    ray_address, write_shards, tmp_path, tiny_bert
):
    input_dir = write_shards(n_shards=8, n_queries=6, candidates=8)
    reference, out = tmp_path / "reference", tmp_path / "out"
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "4"]
    assert main(["run", str(input_dir), str(reference), *flags]) == 0

    env = {**os.environ, "RAY_ADDRESS": ray_address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.rerank", "run", str(input_dir), str(out), *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = out / "_rerank" / "done"
    deadline = time.monotonic() + 120
    while not done_markers(markers):  # mid-run: scoring under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    victims = scorer_pids()
    assert victims, "no scoring actor process found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    assert len(done_markers(markers)) == 8
    tables_equal(read_output(reference), read_output(out))
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)


@pytest.mark.parametrize(
    "point", ["before_write", "publish_in_flight", "between_publish_and_marker", "before_success"]
)
def test_driver_killed_at_any_moment_reruns_to_identical_output(
    ray_address, write_shards, tmp_path, tiny_bert, point
):
    input_dir = write_shards(n_shards=4, n_queries=4, candidates=6)
    reference, out = tmp_path / "reference", tmp_path / "out"
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "8"]
    assert main(["run", str(input_dir), str(reference), *flags]) == 0

    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.rerank", "run", str(input_dir), str(out), *flags],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    published = {p.name for p in out.glob("day=*/*.parquet")}
    markers = done_markers(out / "_rerank" / "done")
    if point == "between_publish_and_marker":
        assert len(published) >= 1 and len(markers) == 0  # published, not marked: it will be redone

    assert main(["run", str(input_dir), str(out), *flags]) == 0
    tables_equal(read_output(reference), read_output(out))
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
