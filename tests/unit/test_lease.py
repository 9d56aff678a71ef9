import time

import pytest

from pipeline.io import Storage, join
from pipeline.rerank import checkpoint
from pipeline.rerank.lease import LeaseHeldError, RunLease

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
    assert STORAGE.read_json(join(str(tmp_path), checkpoint.LEASE)) is None


def test_stale_lease_is_taken_over(tmp_path):
    clock = Clock()
    STORAGE.write_json_atomic(
        join(str(tmp_path), checkpoint.LEASE),
        {
            "owner": "dead-host:1:x",
            "started_at": clock.now - 7200,
            "heartbeat_at": clock.now - 700,
            "ttl_s": 600,
        },
    )
    with RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0, clock=clock) as lease:
        assert STORAGE.read_json(join(str(tmp_path), checkpoint.LEASE))["owner"] == lease.owner


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    with RunLease(STORAGE, str(tmp_path), ttl_s=0.2, settle_s=0):
        first = STORAGE.read_json(join(str(tmp_path), checkpoint.LEASE))["heartbeat_at"]
        time.sleep(0.3)
        assert STORAGE.read_json(join(str(tmp_path), checkpoint.LEASE))["heartbeat_at"] > first


def test_lease_is_not_foreign_output_and_survives_fresh(tmp_path):
    out = str(tmp_path)
    with RunLease(STORAGE, out, settle_s=0):
        checkpoint.prepare_output(STORAGE, out, {"m": 1}, "d1", fresh=False)  # no "foreign files"
        (tmp_path / "part.parquet").write_bytes(b"x")
        checkpoint.prepare_output(STORAGE, out, {"m": 2}, "d2", fresh=True)
        assert not (tmp_path / "part.parquet").exists()
        assert STORAGE.read_json(join(out, checkpoint.LEASE)) is not None
