"""`rerank status` on crafted OUTPUTs (local and on the moto S3 server): no Ray, no scoring."""

from __future__ import annotations

import json
import os
import time

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage, join
from pipeline.rerank.output import checkpoint, paths
from pipeline.rerank.output.fingerprint import fingerprint_digest
from pipeline.rerank.output.lease import process_tag
from pipeline.rerank.output.paths import REPORT_HTML, REPORT_JSON
from pipeline.rerank.output.status import write_shard_list
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.run_report import report_data, write_report
from tests.helpers import pairs_table

FP = {"model": "/models/m3", "dtype": "float16", "max_length": 128}
DIGEST = fingerprint_digest(FP)
COUNTS = {"rows_in": 5, "rows_out": 4, "rows_rejected": 1, "rows_dropped_top_k": 0}


def write_input(storage: Storage, uri: str, n: int) -> None:
    for i in range(n):
        storage.write_parquet_atomic(
            join(uri, f"part-{i}.parquet"), pairs_table(1, 5, seed=i, prefix=f"s{i}")
        )


def craft(storage: Storage, input_uri: str, output: str, *, done: int, success: bool = False) -> None:
    """OUTPUT as a run leaves it: run.json, the shard list, `done` shards published and marked,
    and `_SUCCESS` if asked."""
    shards = storage.list_shards(input_uri)
    checkpoint.claim_output(storage, output, FP, DIGEST, False, [])
    write_shard_list(storage, output, input_uri, shards)
    markers = []
    for shard in shards[:done]:
        storage.write_parquet_atomic(checkpoint.shard_output_uri(output, shard.relpath), pairs_table(1, 4))
        markers.append(checkpoint.write_marker(storage, output, shard, DIGEST, dict(COUNTS)))
    if success:
        checkpoint.write_success(storage, output, markers, FP, DIGEST, {"pairs_scored": 8, "wall_s": 3.5})


def status_of(capsys, *args: str) -> tuple[int, dict]:
    code = main(["status", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def local(tmp_path):
    storage = Storage()
    write_input(storage, str(tmp_path / "in"), 3)
    return storage, str(tmp_path / "in"), str(tmp_path / "out")


def test_an_output_without_a_run_exits_2(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing-here")]) == 2
    assert "no run" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    code, s = status_of(capsys, str(tmp_path / "empty"))
    assert code == 2 and s["state"] == "no_run" and s["lease"] is None


def test_an_incomplete_run_names_pending_and_failed_shards_from_its_own_records(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=2)
    storage.write_json_atomic(
        join(output, REPORT_JSON),
        {
            "outcome": "1 shard(s) failed",
            "ended_at": time.time(),
            "failures": {"count": 1, "shards": {"part-2.parquet": "publish failed: OSError: disk full"}},
            "summary": {"pairs_scored": 10, "wall_s": 4.0},
        },
    )
    storage.write_text_atomic(join(output, REPORT_HTML), "<html></html>")
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "incomplete"
    assert (s["model"], s["dtype"], s["digest"]) == ("/models/m3", "float16", DIGEST)
    assert s["shards_done"] == 2 and s["shards_total"] == 3 and s["pending"] == ["part-2.parquet"]
    assert s["failed"] == {"part-2.parquet": "publish failed: OSError: disk full"}
    assert s["rows"] == {k: 2 * v for k, v in COUNTS.items()}
    assert s["has_success"] is False and s["last_run"]["outcome"] == "1 shard(s) failed"
    assert s["report"] == join(output, REPORT_HTML)
    assert main(["status", output]) == 1
    text = capsys.readouterr().out
    assert "2 of 3 done, 1 pending (1 of them failed" in text and "disk full" in text
    assert "_SUCCESS: not written" in text and "lease: free" in text


def test_a_complete_run_exits_0(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    code, s = status_of(capsys, output)
    assert code == 0 and s["state"] == "complete" and s["pending"] == [] and s["has_success"]
    assert s["last_run"]["summary"]["pairs_scored"] == 8  # no report.json: _SUCCESS's last_run
    assert s["rows"]["rows_out"] == 3 * COUNTS["rows_out"]


def test_input_given_finds_new_and_changed_shards(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    write_input(storage, input_uri, 4)  # part-0..2 rewritten (new mtimes), part-3 new
    pq.write_table(pairs_table(2, 5, seed=9), f"{input_uri}/part-1.parquet")  # and a different size
    code, s = status_of(capsys, output, "--input", input_uri)
    assert code == 1 and s["shards_total"] == 4 and "part-3.parquet" in s["pending"]
    assert "part-1.parquet" in s["pending"] and s["pending_from"] == f"INPUT {input_uri}"
    code, s = status_of(capsys, output)  # against the last run's own list: complete
    assert code == 0


def test_lease_holder_and_heartbeat_age(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=1)
    lease = {"owner": "node-7:4242:ab12cd34", "started_at": time.time() - 100, "ttl_s": 600.0}
    storage.write_json_atomic(join(output, paths.LEASE), {**lease, "heartbeat_at": time.time() - 30})
    code, s = status_of(capsys, output)
    assert code == 1 and s["lease"]["holder"] == "node-7:4242:ab12cd34"
    assert 29 <= s["lease"]["heartbeat_age_s"] < 60 and s["lease"]["is_stale"] is False
    storage.write_json_atomic(join(output, paths.LEASE), {**lease, "heartbeat_at": time.time() - 900})
    assert main(["status", output]) == 1
    assert "(stale)" in capsys.readouterr().out
    boot, namespace, _, _ = str(process_tag(os.getpid())).split("/")  # this machine's process...
    dead = f"{boot}/{namespace}/999999999/1"  # ... that no longer runs: the next start takes over
    storage.write_json_atomic(
        join(output, paths.LEASE), {**lease, "heartbeat_at": time.time(), "process": dead}
    )
    code, s = status_of(capsys, output)
    assert s["lease"]["is_process_gone"] and s["lease"]["is_stale"]


def test_success_of_another_fingerprint_does_not_count(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    success = storage.read_json(join(output, paths.SUCCESS))
    storage.write_json_atomic(join(output, paths.SUCCESS), {**success, "digest": "0000"})
    code, s = status_of(capsys, output)
    assert code == 1 and not s["has_success"] and any("another fingerprint" in n for n in s["notes"])


def test_status_on_object_storage(s3, capsys, tmp_path):
    fs, endpoint = s3
    fs.mkdir("status-out")
    storage = Storage.from_settings(endpoint_url=endpoint)
    write_input(storage, "s3://status-out/in", 3)
    craft(storage, "s3://status-out/in", "s3://status-out/day1", done=2)
    collector = RunCollector(started_at=time.time(), max_length=128, score_columns=["score"])
    data = report_data(
        collector=collector, output="s3://status-out/day1", outcome="interrupted by SIGTERM", shards={},
        failed={}, summary={}, config={}, fingerprint=FP, digest=DIGEST,
    )  # fmt: skip
    assert write_report(storage, "s3://status-out/day1", data) == "s3://status-out/day1/" + REPORT_HTML
    assert b"<svg" in fs.cat_file("status-out/day1/" + REPORT_HTML)
    flags = ["--storage-endpoint-url", endpoint]
    code, s = status_of(capsys, "s3://status-out/day1", *flags)
    assert code == 1 and s["shards_done"] == 2 and s["pending"] == ["part-2.parquet"]
    assert s["last_run"]["outcome"] == "interrupted by SIGTERM" and s["report"].endswith(REPORT_HTML)
    config = tmp_path / "nightly.yaml"  # the job's own config: its storage section is used
    config.write_text(f"input:\n  uri: s3://status-out/in\nstorage:\n  endpoint_url: {endpoint}\n")
    code, s = status_of(
        capsys, "s3://status-out/day1", "--input", "s3://status-out/in", "--config", str(config)
    )
    assert code == 1 and s["pending"] == ["part-2.parquet"]
    assert status_of(capsys, "s3://status-out/nothing", *flags)[0] == 2
    assert main(["status", "s3://no-such-bucket/x", *flags]) == 2
