"""Damaged bookkeeping files in OUTPUT (an interrupted copy, a full disk, a manual edit): a run
takes a damaged lease over, redoes a shard whose done-marker is damaged, ignores an informational
file it cannot read, and refuses a damaged run manifest naming it and --fresh; `--fresh` needs to
read none of them. No Ray: the run's OUTPUT functions, on crafted OUTPUTs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from pipeline.errors import OutputStateError
from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, legacy_manifest, paths
from pipeline.rerank.output.bookkeeping import LEASE_RECORD, Damaged, read_record
from pipeline.rerank.output.lease import LeaseFile, RunLease

STORAGE = Storage()
FP = {"model": "m", "max_length": 512}
SHARD = ShardFile("in/a.parquet", "a.parquet", 10, "mtime=1")
# what an interrupted copy, a full disk or an edit leaves: empty, cut short, not an object
DAMAGE = {"empty": b"", "truncated": b'{"digest": "d1", "finger', "not an object": b"[1, 2]"}


def damage(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def finished(out: Path) -> None:
    """OUTPUT of a finished run of one shard, digest d1."""
    checkpoint.prepare_output(STORAGE, str(out), FP, "d1", fresh=False)
    (out / "a.parquet").write_bytes(b"published")
    marker = checkpoint.write_marker(STORAGE, str(out), SHARD, "d1", {"rows_in": 1, "rows_out": 1})
    checkpoint.write_success(STORAGE, str(out), [marker], FP, "d1", {})


@pytest.mark.parametrize("data", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_lease_counts_as_stale_and_is_taken_over(tmp_path, data, caplog):
    damage(tmp_path / paths.LEASE, data)
    with RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0) as lease:
        assert STORAGE.read_json(join(str(tmp_path), paths.LEASE))["owner"] == lease.owner
    assert f"{tmp_path / paths.LEASE} is damaged" in caplog.text and "taking it over" in caplog.text


def test_a_lease_whose_heartbeat_is_not_a_number_is_taken_over(tmp_path, caplog):
    record = {"owner": "h:1:x", "started_at": time.time(), "heartbeat_at": "yesterday", "ttl_s": 600}
    STORAGE.write_json_atomic(join(str(tmp_path), paths.LEASE), record)
    with RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0) as lease:
        assert STORAGE.read_json(join(str(tmp_path), paths.LEASE))["owner"] == lease.owner
    assert "heartbeat_at" in caplog.text and "taking it over" in caplog.text


def test_a_damaged_lease_on_s3_is_taken_over_conditionally(s3):
    fs, endpoint = s3
    fs.mkdir("damaged-lease")
    storage = Storage.from_settings(endpoint_url=endpoint)
    fs.pipe_file("damaged-lease/out/" + paths.LEASE, b'{"owner": "h:1')
    record, _ = LeaseFile(storage, "s3://damaged-lease/out/" + paths.LEASE).read()
    assert isinstance(record, Damaged)
    with RunLease(storage, "s3://damaged-lease/out", ttl_s=600, settle_s=0) as lease:
        assert storage.read_json("s3://damaged-lease/out/" + paths.LEASE)["owner"] == lease.owner


def test_a_holder_whose_lease_file_is_damaged_rewrites_it(tmp_path):
    with RunLease(STORAGE, str(tmp_path), ttl_s=600, settle_s=0) as lease:
        damage(tmp_path / paths.LEASE, b"")
        lease.beat()
        assert lease.lost() is None
        assert STORAGE.read_json(join(str(tmp_path), paths.LEASE))["owner"] == lease.owner


@pytest.mark.parametrize("data", [*DAMAGE.values(), b'{"shard": "a.parquet", "digest": "d1"}'])
def test_a_damaged_done_marker_means_not_done(tmp_path, data, caplog):
    finished(tmp_path)
    damage(tmp_path / paths.MARKERS / "a.parquet.json", data)
    assert checkpoint.load_done(STORAGE, str(tmp_path), [SHARD], "d1") == {}
    assert f"{tmp_path / paths.MARKERS / 'a.parquet.json'} is damaged" in caplog.text


@pytest.mark.parametrize("data", [*DAMAGE.values(), b'{"digest": 7}'])
def test_a_damaged_run_manifest_is_refused_naming_it_and_fresh(tmp_path, data):
    finished(tmp_path)
    damage(tmp_path / paths.RUN_MANIFEST, data)
    for check in (
        lambda: checkpoint.check_output(STORAGE, str(tmp_path), FP, "d1", fresh=False),
        lambda: legacy_manifest.legacy_fingerprint(STORAGE, str(tmp_path), FP),
    ):
        with pytest.raises(OutputStateError) as err:
            check()
        assert str(tmp_path / paths.RUN_MANIFEST) in str(err.value) and "--fresh" in str(err.value)


def test_fresh_reads_none_of_the_damaged_files(tmp_path):
    finished(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    for relpath in (paths.RUN_MANIFEST, paths.SUCCESS, f"{paths.MARKERS}/a.parquet.json", paths.LEASE):
        damage(tmp_path / relpath, b'{"cut')
    damage(tmp_path / paths.SHARD_LIST, b"")
    damage(tmp_path / paths.REPORT_JSON, b"\x00\xff")
    checkpoint.prepare_output(STORAGE, str(tmp_path), FP, "d2", fresh=True)
    assert STORAGE.read_json(join(str(tmp_path), paths.RUN_MANIFEST))["digest"] == "d2"
    left = sorted(STORAGE.list_files(str(tmp_path)))
    assert left == [paths.LEASE, paths.RUN_MANIFEST, "notes.txt"]  # the lease survives --fresh


def test_a_damaged_success_names_no_shards_for_fresh_but_the_markers_do(tmp_path, caplog):
    finished(tmp_path)
    damage(tmp_path / paths.SUCCESS, b"")
    files = STORAGE.list_files(str(tmp_path))
    assert "a.parquet" in checkpoint.own_files(STORAGE, str(tmp_path), files)
    assert f"{tmp_path / paths.SUCCESS} is damaged" in caplog.text


def test_a_resumed_run_removes_a_damaged_report_it_would_otherwise_keep(tmp_path, caplog):
    finished(tmp_path)
    damage(tmp_path / paths.REPORT_JSON, b'{"outcome": "compl')
    (tmp_path / paths.REPORT_HTML).write_text("<html></html>")
    with caplog.at_level(logging.WARNING):
        checkpoint.prepare_output(STORAGE, str(tmp_path), FP, "d1", fresh=False)
    assert not (tmp_path / paths.REPORT_JSON).exists() and (tmp_path / paths.REPORT_HTML).exists()
    assert f"{tmp_path / paths.REPORT_JSON} is damaged" in caplog.text


def test_read_record_tells_absent_damaged_and_whole_apart(tmp_path):
    uri = str(tmp_path / paths.LEASE)
    assert read_record(STORAGE, uri, LEASE_RECORD) is None
    damage(Path(uri), b"")
    found = read_record(STORAGE, uri, LEASE_RECORD)
    assert isinstance(found, Damaged) and found.uri == uri and "empty" in found.problem
    record = {"owner": "h:1:x", "started_at": 1.0, "heartbeat_at": True, "ttl_s": 600}
    STORAGE.write_json_atomic(uri, record)  # a bool is no number
    found = read_record(STORAGE, uri, LEASE_RECORD)
    assert isinstance(found, Damaged) and "heartbeat_at" in found.problem
    STORAGE.write_json_atomic(uri, {**record, "heartbeat_at": 2.5})
    assert read_record(STORAGE, uri, LEASE_RECORD) == {**record, "heartbeat_at": 2.5}
    error = Damaged(uri, "empty", LEASE_RECORD).error()
    assert isinstance(error, OutputStateError) and uri in str(error)
