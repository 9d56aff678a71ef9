import os
import subprocess
import sys

import pytest

from pipeline.demo.processes import wait_until
from pipeline.errors import LeaseHeldError, LeaseLostError
from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, paths
from pipeline.rerank.output.lease import RunLease, is_gone

STORAGE = Storage()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_second_start_refuses_while_the_first_is_alive(tmp_path):
    clock = Clock()
    first = RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0, clock=clock)
    first.acquire()
    try:
        clock.now += 30
        with pytest.raises(LeaseHeldError, match="already in progress") as err:
            RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0, clock=clock).acquire()
        assert first.owner in str(err.value) and "expires" in str(err.value)
    finally:
        first.release()
    assert STORAGE.read_json(join(str(tmp_path), paths.LEASE)) is None


def test_stale_lease_is_taken_over(tmp_path):
    clock = Clock()
    STORAGE.write_json_atomic(
        join(str(tmp_path), paths.LEASE),
        {
            "owner": "dead-host:1:x",
            "started_at": clock.now - 7200,
            "heartbeat_at": clock.now - 700,
            "ttl_s": 600,
        },
    )
    with RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0, clock=clock) as lease:
        assert STORAGE.read_json(join(str(tmp_path), paths.LEASE))["owner"] == lease.owner


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    uri = join(str(tmp_path), paths.LEASE)
    with RunLease(STORAGE, str(tmp_path), ttl_s=0.2, settle_s=0):  # a beat every ttl/4 = 50 ms
        first = STORAGE.read_json(uri)["heartbeat_at"]
        # beats every 50 ms: a newer one is there within 0.3 s
        wait_until(lambda: STORAGE.read_json(uri)["heartbeat_at"] > first, 0.3, 0.01, "a newer heartbeat")


def test_lease_is_not_foreign_output_and_survives_fresh(tmp_path):
    out = str(tmp_path)
    with RunLease(STORAGE, out, settle_s=0):
        checkpoint.prepare_output(STORAGE, out, {"m": 1}, "d1", fresh=False)  # no "foreign files"
        (tmp_path / "part.parquet").write_bytes(b"x")
        shard = ShardFile("in/part.parquet", "part.parquet", 1, "v")
        checkpoint.write_marker(STORAGE, out, shard, "d1", {})  # so part.parquet is the job's output
        checkpoint.prepare_output(STORAGE, out, {"m": 2}, "d2", fresh=True)
        assert not (tmp_path / "part.parquet").exists()
        assert STORAGE.read_json(join(out, paths.LEASE)) is not None


def test_a_stalled_run_finds_its_lease_taken_over_and_flags_the_loss(tmp_path):
    """The stall: the first run stops renewing past the TTL, a second start takes the lease over;
    the first one's next heartbeat sees the new owner, flags the loss and leaves the lease alone."""
    clock = Clock()
    out = str(tmp_path)
    stalled = RunLease(STORAGE, out, ttl_s=600, settle_s=0, clock=clock)
    stalled.acquire()
    taker = RunLease(STORAGE, out, ttl_s=600, settle_s=0, clock=clock)
    try:
        clock.now += 30
        stalled.beat()  # a normal heartbeat: still ours
        assert stalled.lost() is None
        clock.now += 700  # the first run stalls past the TTL
        taker.acquire()
        stalled.beat()  # it wakes up
        lost = stalled.lost()
        assert isinstance(lost, LeaseLostError) and lost.holder == taker.owner
        assert f"lost to {taker.owner}" in str(lost) and "this run stopped" in str(lost)
        assert not lost.finish_in_flight
        assert STORAGE.read_json(join(out, paths.LEASE))["owner"] == taker.owner  # not overwritten
        stalled.beat()  # lost for good: no more writes
        assert STORAGE.read_json(join(out, paths.LEASE))["owner"] == taker.owner
    finally:
        stalled.release()  # not its lease any more: left in place
        assert STORAGE.read_json(join(out, paths.LEASE))["owner"] == taker.owner
        taker.release()
    assert STORAGE.read_json(join(out, paths.LEASE)) is None


def test_a_late_heartbeat_is_checked_when_the_run_asks(tmp_path):
    """A run waking from a stall asks `lost()` before its next write, ahead of its heartbeat thread."""
    clock = Clock()
    out = str(tmp_path)
    stalled = RunLease(STORAGE, out, ttl_s=600, settle_s=0, clock=clock)
    stalled.acquire()
    try:
        clock.now += 200  # not late yet: no storage read
        assert stalled.lost() is None
        clock.now += 500
        taker = RunLease(STORAGE, out, ttl_s=600, settle_s=0, clock=clock)
        taker.acquire()
        clock.now += 1
        assert isinstance(stalled.lost(), LeaseLostError)  # found without an explicit beat()
        taker.release()
    finally:
        stalled.release()


def test_a_lease_that_cannot_be_renewed_past_its_ttl_is_lost(tmp_path, monkeypatch):
    clock = Clock()
    lease = RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0, clock=clock)
    lease.acquire()
    try:

        def unreachable(*_args):
            raise OSError("storage unreachable")

        monkeypatch.setattr(lease._file, "read", unreachable)
        clock.now += 200
        lease.beat()  # a missed beat only shortens the lease
        assert lease.lost() is None
        clock.now += 500
        lease.beat()
        lost = lease.lost()
        assert lost is not None and "could not renew it" in str(lost) and "storage unreachable" in str(lost)
    finally:
        monkeypatch.undo()
        lease.release()


def test_a_removed_lease_is_recreated_by_its_holder(tmp_path):
    clock = Clock()
    out = str(tmp_path)
    with RunLease(STORAGE, out, ttl_s=600, settle_s=0, clock=clock) as lease:
        STORAGE.remove(join(out, paths.LEASE))
        lease.beat()
        assert lease.lost() is None
        assert STORAGE.read_json(join(out, paths.LEASE))["owner"] == lease.owner


def test_the_lease_of_a_killed_process_on_this_machine_is_taken_over_at_once(tmp_path):
    """A crashed run (SIGKILL, OOM) on this machine: its process is gone, its TTL need not pass."""
    clock = Clock()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(dead.stdout)
    live = RunLease(STORAGE, str(tmp_path), settle_s=0, clock=clock)
    assert is_gone(live.process.replace(f"/{os.getpid()}/", f"/{pid}/"))  # same machine, no such process
    assert not is_gone(live.process) and not is_gone(None) and not is_gone("other-boot/ns/1/2")
    STORAGE.write_json_atomic(
        join(str(tmp_path), paths.LEASE),
        {
            "owner": f"here:{pid}:x",
            "process": live.process.replace(f"/{os.getpid()}/", f"/{pid}/"),
            "started_at": clock.now - 10,
            "heartbeat_at": clock.now - 5,  # fresh: a live holder would refuse the start
            "ttl_s": 600,
        },
    )
    with live:
        assert STORAGE.read_json(join(str(tmp_path), paths.LEASE))["owner"] == live.owner


def test_a_free_local_lease_is_created_exclusively_without_waiting(tmp_path, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("pipeline.rerank.output.lease.time.sleep", slept.append)
    lease = RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=30)
    lease.acquire()
    try:
        assert slept == []  # a hard-link create cannot interleave with another: nothing to settle
        lease_uri = join(str(tmp_path), paths.LEASE)
        assert STORAGE.create_json_local(lease_uri, {"owner": "someone-else"}) is False  # taken
        assert STORAGE.read_json(lease_uri)["owner"] == lease.owner
        assert not [p for p in (tmp_path / "_rerank").iterdir() if p.name.startswith(".tmp-")]
    finally:
        lease.release()
