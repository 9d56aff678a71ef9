"""`rerank status` on crafted OUTPUTs (local and on the moto S3 server): no Ray, no scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage, join
from pipeline.rerank.compare.gate import gate_checks, verdict, write_verdict
from pipeline.rerank.config import CompareConfig
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


def craft(
    storage: Storage,
    input_uri: str,
    output: str,
    *,
    done: int,
    success: bool = False,
    pairs: dict | None = None,
) -> None:
    """OUTPUT as a run leaves it: run.json, the shard list, `done` shards published and marked
    (with `pairs`: each marker's pairs scored and reused), and `_SUCCESS` if asked."""
    shards = storage.list_shards(input_uri)
    checkpoint.claim_output(storage, output, FP, DIGEST, False, [])
    write_shard_list(storage, output, input_uri, shards)
    markers = []
    for shard in shards[:done]:
        storage.write_parquet_atomic(checkpoint.shard_output_uri(output, shard.relpath), pairs_table(1, 4))
        markers.append(checkpoint.write_marker(storage, output, shard, DIGEST, {**COUNTS, **(pairs or {})}))
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


def test_pairs_reused_are_shown_beside_pairs_scored(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True, pairs={"pairs_scored": 1, "pairs_reused": 3})
    for args in ([], ["--input", input_uri]):  # _SUCCESS's totals; the markers of the shards of INPUT
        code, s = status_of(capsys, output, *args)
        assert code == 0 and s["pairs"] == {"pairs_scored": 3, "pairs_reused": 9}
    lookup = {"sources": ["/runs/day0"], "pairs_found": 18_800, "seconds": 6.1, "store_files_skipped": 0}
    summary = {"pairs_scored": 1200, "pairs_reused": 18_800, "wall_s": 12.0, "reuse_lookup": lookup}
    storage.write_json_atomic(join(output, REPORT_JSON), {"outcome": "complete", "summary": summary})
    code, s = status_of(capsys, output)
    assert s["last_run"]["summary"]["pairs_reused"] == 18_800
    assert main(["status", output]) == 0
    text = capsys.readouterr().out
    assert "pairs (done shards): 3 scored, 9 reused (75.0 %)" in text
    assert "; pairs 1,200 scored, 18,800 reused (94.0 %), in 12.0s" in text


def test_shards_marked_before_reuse_existed_show_no_pair_counts(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=2)  # markers without pairs_scored / pairs_reused
    storage.write_json_atomic(join(output, REPORT_JSON), {"summary": {"pairs_scored": 10, "wall_s": 4.0}})
    code, s = status_of(capsys, output)
    assert code == 1 and s["pairs"] == {}
    assert main(["status", output]) == 1
    text = capsys.readouterr().out
    assert "pairs (done shards)" not in text and "reused" not in text and "10 pairs, in 4.0s" in text


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


# --- damaged bookkeeping files: reported and named, exit 1, never 4 --------------------------------

DAMAGED = {
    "lease": (paths.LEASE, b""),
    "heartbeat": (paths.LEASE, b'{"owner": "h:1:x", "started_at": 1, "heartbeat_at": "noon", "ttl_s": 60}'),
    "run manifest": (paths.RUN_MANIFEST, b'{"digest": "ab'),
    "done-marker": (f"{paths.MARKERS}/part-0.parquet.json", b""),
    "success": (paths.SUCCESS, b'{"shards": [{"pa'),
    "report": (REPORT_JSON, b"\x00\x01"),
    "shard list": (paths.SHARD_LIST, b"[]"),
}


@pytest.mark.parametrize(("relpath", "data"), DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_file_is_named_and_the_rest_reported(local, capsys, relpath, data):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    storage.write_json_atomic(join(output, REPORT_JSON), {"outcome": "complete", "summary": {}})
    with open(join(output, relpath), "wb") as f:
        f.write(data)
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "incomplete"
    assert list(s["damaged"]) == [join(output, relpath)]
    assert main(["status", output]) == 1
    text = capsys.readouterr().out
    assert f"damaged: {join(output, relpath)}" in text
    if relpath != paths.RUN_MANIFEST:
        assert s["model"] == "/models/m3"
    if relpath == paths.LEASE:
        assert s["lease"]["is_stale"] and "free" not in text


def test_a_damaged_run_manifest_says_fresh(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=2)
    with open(join(output, paths.RUN_MANIFEST), "wb") as f:
        f.write(b"")
    assert main(["status", output]) == 1
    text = capsys.readouterr().out
    assert "--fresh" in text and "None" not in text


# --- --input: a typo is exit 2, as for `rerank run`; _SUCCESS beyond INPUT is reported -------------


def test_an_input_that_does_not_exist_or_holds_no_shards_exits_2(local, tmp_path, capsys, caplog):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    assert main(["status", output, "--input", str(tmp_path / "typo")]) == 2
    assert "no Parquet shards" in caplog.text
    (tmp_path / "empty").mkdir()
    assert main(["status", output, "--input", str(tmp_path / "empty")]) == 2
    assert "complete" not in capsys.readouterr().out


def test_a_success_shard_not_in_input_is_reported(local, tmp_path, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    fewer = str(tmp_path / "fewer")
    write_input(storage, fewer, 2)  # part-0, part-1: part-2 is in _SUCCESS, not in this INPUT
    for rel in ("part-0.parquet", "part-1.parquet"):  # the same files as the run saw
        os.replace(join(input_uri, rel), join(fewer, rel))
    code, s = status_of(capsys, output, "--input", fewer)
    assert code == 1 and s["not_in_input"] == ["part-2.parquet"] and s["pending"] == []
    assert main(["status", output, "--input", fewer]) == 1
    assert "part-2.parquet" in capsys.readouterr().out


# --- a live lease is a run in progress -------------------------------------------------------------


def live_lease(storage: Storage, output: str) -> None:
    now = time.time()
    storage.write_json_atomic(
        join(output, paths.LEASE),
        {"owner": "node-7:4242:ab12cd34", "started_at": now - 5, "heartbeat_at": now - 1, "ttl_s": 600.0},
    )


def test_a_first_run_before_its_run_manifest_is_in_progress(tmp_path, capsys):
    output = str(tmp_path / "out")
    live_lease(Storage(), output)
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "in_progress"
    assert main(["status", output]) == 1
    assert "in progress" in capsys.readouterr().out


def test_a_rerun_planning_over_a_complete_output_is_in_progress(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    live_lease(storage, output)
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "in_progress" and s["has_success"]


# --- a closed pipe; an interrupted run's line --------------------------------------------------------


def test_a_closed_pipe_exits_quietly_with_the_status_code(local):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    read, write = os.pipe()
    os.close(read)  # `| head -1` that has already exited
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "status", output, "--json"],
        stdout=write, stderr=subprocess.PIPE, env=env, text=True, timeout=120,
    )  # fmt: skip
    os.close(write)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_an_interrupted_run_says_what_is_known(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=1)
    report = {
        "outcome": "interrupted by SIGTERM",
        "ended_at": time.time(),
        "shards": {"total": 3, "skipped": 0, "published": 1, "failed": 0},
        "summary": {},
    }
    storage.write_json_atomic(join(output, REPORT_JSON), report)
    assert main(["status", output]) == 1
    text = capsys.readouterr().out
    assert "None" not in text and "interrupted by SIGTERM" in text and "1 of 3 shards published" in text


# --- the comparison with an earlier run, the quality gate ----------------------------------------


def figures(*, min_ndcg: float) -> dict:
    """The comparison's figures as the run's end makes them (`finish`): the changes, the drift and
    the quality with the gate's verdict (--min-ndcg `min_ndcg`); and that verdict, as written."""
    quality = {
        "queries": 4,
        "first_stage": {"ndcg10": 0.4, "mrr10": 0.3, "recall100": 0.8},
        "reranked": {"ndcg10": 0.5, "mrr10": 0.45, "recall100": 0.8},
    }
    checks = gate_checks(CompareConfig(min_ndcg=min_ndcg), quality, None, None)
    result = verdict(checks, quality, "/qrels.tsv")
    drift = {
        "queries": 6,
        "overlap10": {"median": 0.8, "p10": 0.5},
        "tau": {"median": 0.615, "p10": -0.205},
        "top1_changed_share": 0.5,
        "movers": [],
        "tau_hist": [0] * 200,
        "overlap_hist": [[1, 2, 1], [4, 5, 5]],
    }
    totals = {"added": 2, "removed": 1, "reranked": 1200, "rescored": 3}
    return {
        "changes": {"against": "/runs/day0", "epsilon": 0.0, "totals": totals, "files": [{"path": "p"}] * 3},
        "drift": drift,
        "quality": {
            **quality,
            "first_stage_column": None,
            "gate": {k: result[k] for k in ("passed", "failed", "checks")},
        },
        "verdict": result,
    }


def held_run(storage: Storage, input_uri: str, output: str, *, done: int, min_ndcg: float = 0.6) -> dict:
    """OUTPUT as a run the quality gate held leaves it: `done` shards published, no `_SUCCESS`,
    quality.json's verdict, and its report with the comparison."""
    craft(storage, input_uri, output, done=done)
    made = figures(min_ndcg=min_ndcg)
    write_verdict(storage, output, made.pop("verdict"))
    rec = RunCollector(started_at=time.time() - 5, max_length=128, score_columns=["score"])
    what = "; ".join(c["what"] for c in made["quality"]["gate"]["failed"])
    data = report_data(
        collector=rec, output=output, outcome=f"held by the quality gate: {what}",
        shards={"total": 3, "skipped": 0, "published": done, "failed": 0}, failed={}, summary={},
        config={}, fingerprint=FP, digest=DIGEST, comparison=made,
    )  # fmt: skip
    write_report(storage, output, data)
    return made


def test_a_run_the_quality_gate_held_is_held_and_says_what_to_do(local, capsys):
    storage, input_uri, output = local
    made = held_run(storage, input_uri, output, done=3)
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "held" and not s["has_success"] and s["pending"] == []
    assert s["quality_gate"]["passed"] is False and s["quality_gate"]["qrels"] == "/qrels.tsv"
    assert [c["threshold"] for c in s["quality_gate"]["failed"]] == ["min_ndcg"]
    assert s["comparison"]["changes"] == {**made["changes"], "files": 3}  # the report's: counted
    assert s["comparison"]["drift"] == made["drift"] and s["comparison"]["quality"] == made["quality"]
    assert main(["status", output]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{output}: held by the quality gate"
    assert "quality gate: min_ndcg failed: reranked nDCG@10 0.5000 (at least 0.6 wanted)" in lines[1]
    assert "rerun with the thresholds you accept: nothing is scored again" in lines[2]
    assert (
        "changes against /runs/day0: 2 added, 1 removed, 1,200 reranked, 3 rescored (3 change file(s))"
        in lines
    )
    drift = [line for line in lines if line.startswith("drift over 6 queries")]
    assert (
        drift and "overlap median 0.8000 (p10 0.5000)" in drift[0] and "top-1 changed for 50.0 %" in drift[0]
    )
    quality = [line for line in lines if line.startswith("quality on 4 judged queries")]
    assert quality and "nDCG@10 0.4000 -> 0.5000" in quality[0] and quality[0].endswith("gate failed")


@pytest.mark.parametrize("case", ["a shard pending", "the gate passed", "quality.json damaged"])
def test_held_only_when_every_shard_is_done_and_the_gate_failed(local, capsys, case):
    storage, input_uri, output = local
    held_run(storage, input_uri, output, done=2 if case == "a shard pending" else 3, min_ndcg=0.6)
    if case == "the gate passed":
        write_verdict(storage, output, figures(min_ndcg=0.1)["verdict"])
    if case == "quality.json damaged":
        storage.write_text_atomic(join(output, paths.QUALITY_JSON), '{"passed": fal')
    code, s = status_of(capsys, output)
    assert code == 1 and s["state"] == "incomplete"
    assert (join(output, paths.QUALITY_JSON) in s["damaged"]) == (case == "quality.json damaged")


def test_a_complete_run_shows_the_comparison_of_its_success(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3)
    made = figures(min_ndcg=0.1)
    write_verdict(storage, output, made.pop("verdict"))
    shards = storage.list_shards(input_uri)
    markers = checkpoint.read_markers(storage, output, [s.relpath for s in shards])
    checkpoint.write_success(storage, output, markers, FP, DIGEST, {}, comparison=made)
    code, s = status_of(capsys, output)
    assert code == 0 and s["state"] == "complete" and s["quality_gate"]["passed"] is True
    assert s["comparison"]["changes"]["files"] == 3 and s["comparison"]["drift"]["queries"] == 6
    assert main(["status", output]) == 0
    text = capsys.readouterr().out
    assert "changes against /runs/day0" in text and "drift over 6 queries" in text
    assert "(first stage -> reranked); gate passed" in text and "quality gate:" not in text


def test_a_run_without_a_comparison_shows_none(local, capsys):
    storage, input_uri, output = local
    craft(storage, input_uri, output, done=3, success=True)
    code, s = status_of(capsys, output)
    assert code == 0 and s["comparison"] == {} and s["quality_gate"] is None
    main(["status", output])
    text = capsys.readouterr().out
    assert "changes against" not in text and "drift over" not in text and "quality on" not in text
