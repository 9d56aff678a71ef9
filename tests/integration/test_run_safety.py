"""Long-running operation and data safety: the model's identity in the fingerprint, one run per
OUTPUT (`rerank run` holds the lease), a run that loses its lease stops, SIGTERM stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from jobs.cli import main
from pipeline.demo.processes import wait_until
from pipeline.io import Storage, join
from pipeline.rerank.output import paths
from pipeline.rerank.output.fingerprint import fingerprint_digest
from pipeline.rerank.output.lease import LeaseFile, RunLease
from tests.helpers import (
    assert_output_invariants,
    assert_reconciled,
    done_markers,
    read_output,
    tables_equal,
)

pytestmark = pytest.mark.integration

STORAGE = Storage()
FLAGS = ["--max-length", "128", "--rows-per-call", "4"]  # many small calls: a run long enough to catch


def start_run(ray_address: str, input_dir: Path, out: Path, *flags: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(out), *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def first_marker(proc: subprocess.Popen, out: Path) -> None:
    wait_until(lambda: done_markers(out / "_rerank" / "done"), 180, 0.02, "a first done-marker", process=proc)


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


# --- 4. the model's identity -------------------------------------------------------------------


def replace_weights(model_dir: Path) -> None:
    """Saves a different tiny model (same shape, other weights) into the same directory."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    model.save_pretrained(model_dir)


def test_a_model_replaced_at_the_same_path_is_refused_on_resume(
    ray_address, write_shards, tmp_path, tiny_bert, caplog
):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    input_dir, out = write_shards(n_shards=2), tmp_path / "out"
    args = ["run", str(input_dir), str(out), "--model", str(model), "--max-length", "128"]
    assert main(args) == 0
    before = STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]["model_identity"]

    replace_weights(model)
    caplog.clear()
    assert main(args) == 2
    assert "model_identity" in caplog.text and "--fresh" in caplog.text
    assert (out / "_SUCCESS").exists()  # the finished output is left as it was

    assert main([*args, "--fresh"]) == 0
    after = STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]["model_identity"]
    assert after["weights"] != before["weights"]


def downgrade_to_legacy(out: Path) -> str:
    """OUTPUT as a version before model_identity left it: manifest, markers, _SUCCESS without it."""
    manifest = STORAGE.read_json(join(str(out), paths.RUN_MANIFEST))
    legacy = {k: v for k, v in manifest["fingerprint"].items() if k != "model_identity"}
    digest = fingerprint_digest(legacy)
    STORAGE.write_json_atomic(
        join(str(out), paths.RUN_MANIFEST), {**manifest, "fingerprint": legacy, "digest": digest}
    )
    for path in done_markers(out / "_rerank" / "done"):
        STORAGE.write_json_atomic(str(path), {**STORAGE.read_json(str(path)), "digest": digest})
    success = STORAGE.read_json(str(out / "_SUCCESS"))
    STORAGE.write_json_atomic(str(out / "_SUCCESS"), {**success, "fingerprint": legacy, "digest": digest})
    return digest


def test_an_output_without_model_identity_resumes_with_a_warning_and_is_upgraded(finished_copy, caplog):
    args, out = finished_copy["args"], finished_copy["output"]
    legacy_digest = downgrade_to_legacy(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}

    caplog.clear()
    assert main(args) == 0
    assert "cannot be verified" in caplog.text
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}  # nothing rescored
    manifest = STORAGE.read_json(join(str(out), paths.RUN_MANIFEST))
    assert "model_identity" in manifest["fingerprint"] and manifest["upgraded_from"] == legacy_digest
    assert "model_identity" in STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]


# --- 9. one run per OUTPUT -----------------------------------------------------------------------


# A second run on a busy OUTPUT (`rerank run` or `nightly`, --fresh or not) exits 3 naming the
# holder, and the holder's --fresh kept its lease: tests/integration/test_nightly.py.
# A stale lease taken over: tests/integration/test_nightly.py (the same runner, through `nightly`).
# A run SIGKILLed on this machine leaves its lease with a fresh heartbeat; the rerun takes it over
# at once (its process is gone): tests/integration/test_faults.py's crash points assert it.


# --- 5. a run that loses its lease stops ---------------------------------------------------------


def test_a_run_that_stalls_past_its_lease_and_is_taken_over_stops(
    ray_address, write_shards, tmp_path, tiny_bert
):
    input_dir, out = write_shards(n_shards=8, n_queries=6, candidates=8), tmp_path / "out"
    log = tmp_path / "run.log"
    proc = start_run(ray_address, input_dir, out, "--model", tiny_bert, *FLAGS, "--lease-ttl-s", "4", log=log)
    first_marker(proc, out)
    proc.send_signal(signal.SIGSTOP)  # the stall
    try:
        time.sleep(5)  # past the 4 s TTL: another run may take the lease over now, and does
        now = time.time()
        taker = {"owner": "other-host:7:feed", "started_at": now, "heartbeat_at": now, "ttl_s": 600}
        STORAGE.write_json_atomic(join(str(out), paths.LEASE), taker)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 3
    text = log.read_text()
    assert "lost to other-host:7:feed" in text and "this run stopped" in text
    last = [line for line in text.splitlines() if " rerank: " in line][-1]
    published = int(last.split(" of 8 shards published")[0].rsplit(" ", 1)[-1])  # by the collector
    assert 1 <= published <= len(done_markers(out / "_rerank" / "done"))
    assert f"({published} by this run), {8 - published} pending" in last
    assert STORAGE.read_json(join(str(out), paths.LEASE)) == taker  # neither renewed nor removed
    assert not (out / "_SUCCESS").exists()

    STORAGE.remove(join(str(out), paths.LEASE))  # the other run ended
    assert main(["run", str(input_dir), str(out), "--model", tiny_bert, *FLAGS]) == 0
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_lease_on_s3_is_written_conditionally(s3):
    fs, endpoint = s3
    fs.mkdir("rerank-out")
    storage = Storage.from_settings(endpoint_url=endpoint)
    out = "s3://rerank-out/day"
    clock = Clock()
    holder = RunLease(storage, out, ttl_s=600, settle_s=0, clock=clock)
    holder.acquire()
    try:
        lease = LeaseFile(storage, join(out, paths.LEASE))
        assert lease.is_conditional
        record, version = lease.read()
        assert record["owner"] == holder.owner and version
        # two takers that read the same version: the first write wins, the second fails
        assert lease.write({**record, "owner": "taker-1"}, version)
        assert not lease.write({**record, "owner": "taker-2"}, version)
        assert not lease.write({**record, "owner": "taker-2"}, None)  # nor is it absent
        holder.beat()
        lost = holder.lost()
        assert lost is not None and lost.holder == "taker-1"
    finally:
        holder.release()
    assert lease.read()[0]["owner"] == "taker-1"  # not the holder's to remove any more


# --- 10. SIGINT / SIGTERM ------------------------------------------------------------------------


def test_sigterm_stops_cleanly_and_the_rerun_equals_an_uninterrupted_run(
    ray_address, write_shards, tmp_path, tiny_bert, reference_output
):
    shape = {"n_shards": 8, "n_queries": 6, "candidates": 8}
    input_dir = write_shards(**shape)
    out = tmp_path / "out"
    flags = ["--model", tiny_bert, *FLAGS]
    reference = reference_output(flags, **shape)

    log = tmp_path / "run.log"
    proc = start_run(ray_address, input_dir, out, *flags, log=log)
    first_marker(proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    lines = [line for line in log.read_text().splitlines() if " rerank: " in line]
    assert "interrupted by SIGTERM" in lines[-1] and "rerun the same command to resume" in lines[-1]
    assert not temp_files(out)
    assert not (out / "_rerank" / "lease.json").exists()  # released
    assert not (out / "_SUCCESS").exists()

    assert main(["run", str(input_dir), str(out), *flags]) == 0
    tables_equal(read_output(reference), read_output(out))
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)
    assert not temp_files(out)
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["last_run"]["pairs_scored"] < 8 * 6 * 8  # shards done before SIGTERM: not redone


def test_a_second_signal_stops_at_once_and_counts_the_shards_published_before_it(
    ray_address, write_shards, tmp_path, tiny_bert, job_actor_pids
):
    input_dir, out = write_shards(n_shards=8, n_queries=6, candidates=8), tmp_path / "out"
    log = tmp_path / "run.log"
    flags = ["--model", tiny_bert, *FLAGS, "--progress-interval-s", "0.001"]
    proc = start_run(ray_address, input_dir, out, *flags, log=log)
    markers = out / "_rerank" / "done"
    wait_until(lambda: len(done_markers(markers)) >= 2, 180, 0.02, "two done-markers", process=proc)
    writers = job_actor_pids(proc.pid, "ShardWriter")
    for pid in writers:  # every publish from now on hangs in flight: the first signal waits for it
        os.kill(pid, signal.SIGSTOP)
    try:
        before = len(done_markers(markers))
        wait_until(lambda: "384/384 pairs" in log.read_text(), 180, 0.05, "every pair scored", process=proc)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "SIGINT received" in log.read_text(), 60, 0.01, "the first SIGINT", process=proc)
        proc.send_signal(signal.SIGINT)  # again: stop at once
        assert proc.wait(timeout=120) == 130
    finally:
        for pid in writers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    last = [line for line in log.read_text().splitlines() if " rerank: " in line][-1]
    assert "interrupted by SIGINT twice: stopped at once, publishes in flight abandoned" in last
    published = int(last.split(" of 8 shards published")[0].rsplit(" ", 1)[-1])
    assert published >= before >= 2
    assert f"{published} of 8 shards published ({published} by this run), {8 - published} pending" in last
    report = json.loads((out / "_rerank" / "report.json").read_text())
    assert (
        report["outcome"].startswith("interrupted by SIGINT twice")
        and report["shards"]["published"] == published
    )
    assert not (out / "_rerank" / "lease.json").exists()  # released


def driver_children(pid: int) -> list[int]:
    """The processes `pid` started: Ray's own, once it starts a local Ray."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


@pytest.mark.timeout(300)
def test_sigterm_while_ray_starts_stops_the_run_as_sigint_would(write_shards, tmp_path, tiny_bert):
    input_dir, out = write_shards(n_shards=2, n_queries=2, candidates=3), tmp_path / "out"
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(out), "--model", tiny_bert],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:  # the lease is taken, and Ray starts (its first process is up): ray.init is under way
        wait_until(lambda: driver_children(proc.pid), 120, 0.005, "Ray to start", process=proc)
        assert (out / "_rerank" / "lease.json").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=240) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    last = [line for line in log.read_text().splitlines() if " rerank: " in line][-1]
    assert last.endswith(
        "interrupted by SIGTERM: 0 of 2 shards published (0 by this run), 2 pending; "
        "rerun the same command to resume"
    )
    assert not (out / "_rerank" / "lease.json").exists()  # released
    assert not [p for p in out.rglob("*.parquet")]
