"""Faults the job survives: a scoring actor process killed mid-run (a real SIGKILL), the driver
killed at each of its crash points, and a publish task's worker killed between publishing a shard
and writing its marker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jobs.cli import main
from pipeline.demo.processes import wait_until
from tests.helpers import (
    assert_output_invariants,
    assert_reconciled,
    done_markers,
    read_output,
    tables_equal,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)  # its waits alone allow 420 s; 76 s measured on 2 busy cores
def test_killed_scoring_actor_is_restarted_and_every_row_lands_once(
    ray_address, write_shards, tmp_path, tiny_bert, spawn, job_actor_pids, reference_output
):
    shape = {"n_shards": 8, "n_queries": 6, "candidates": 8}
    input_dir = write_shards(**shape)
    out = tmp_path / "out"
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "4"]
    reference = reference_output(flags, **shape)

    env = {**os.environ, "RAY_ADDRESS": ray_address}
    proc = spawn(
        [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(out), *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = out / "_rerank" / "done"
    wait_until(  # mid-run: scoring under way
        lambda: done_markers(markers), 120, interval_s=0.02, what="the first done marker", process=proc
    )
    # this run's scoring actors only (its job's actors in the session Ray), never another Ray's
    victims = job_actor_pids(proc.pid, "MapBatches(ScorePairs)")
    assert victims, "no scoring actor process found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    assert len(done_markers(markers)) == 8
    tables_equal(read_output(reference), read_output(out))
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)


@pytest.mark.timeout(600)  # up to 161 s measured on 2 busy cores (between_publish_and_marker)
@pytest.mark.parametrize(
    # (a kill before the first write leaves nothing to resume: not worth a run of the suite's time)
    "point",
    ["publish_in_flight", "between_publish_and_marker", "before_success"],
)
def test_driver_killed_at_any_moment_reruns_to_identical_output(
    ray_address, write_shards, tmp_path, tiny_bert, point, reference_output, caplog
):
    """Also: the killed driver leaves OUTPUT's lease with a fresh heartbeat; the rerun on this
    machine takes it over at once (its process is gone) instead of waiting out the TTL."""
    shape = {"n_shards": 4, "n_queries": 4, "candidates": 6}
    input_dir = write_shards(**shape)
    out = tmp_path / "out"
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "8", "--top-k", "5"]
    reference = reference_output(flags, **shape)

    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(out), *flags],
        env=env,
        capture_output=True,
        timeout=300,
    )
    published = {p.name for p in out.glob("day=*/*.parquet")}
    markers = done_markers(out / "_rerank" / "done")
    if point == "between_publish_and_marker":  # inside the publish task: its worker dies each try
        assert killed.returncode == 1, killed.stderr[-2000:]  # those shards failed; rerun redoes them
        assert len(published) >= 1 and len(markers) == 0  # published, not marked: it will be redone
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert (out / "_rerank" / "lease.json").exists()
    assert not (out / "_SUCCESS").exists()

    caplog.clear()
    assert main(["run", str(input_dir), str(out), *flags]) == 0
    if point != "between_publish_and_marker":
        assert "its process is gone" in caplog.text
    tables_equal(read_output(reference), read_output(out))
    assert_output_invariants(input_dir, out, top_k=5)
    assert_reconciled(input_dir, out)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
