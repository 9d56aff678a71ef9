"""s3:// in and out (and the model on s3://) against a real S3 endpoint: the session's moto server
(the `s3` fixture, tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs

from jobs.cli import main
from pipeline.demo.processes import free_port, wait_until
from pipeline.io import Storage
from pipeline.model_cache import default_cache_dir
from pipeline.rerank.input import discovery
from tests.helpers import assert_output_invariants, read_output, tables_equal

pytestmark = pytest.mark.integration


@pytest.fixture
def rerank_s3(s3):
    """The `s3` fixture's clean S3 with buckets rerank-in, rerank-out, rerank-models."""
    fs, endpoint = s3
    for bucket in ("rerank-in", "rerank-out", "rerank-models"):
        fs.mkdir(bucket)
    fs.invalidate_cache()
    return fs, endpoint


def upload(fs: s3fs.S3FileSystem, local: Path, remote: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{remote}/{path.relative_to(local)}")


def storage_for(endpoint: str) -> Storage:
    return Storage.from_settings(endpoint_url=endpoint)


def test_s3_to_s3_with_model_on_s3(ray_address, rerank_s3, write_shards, tiny_bert, caplog, monkeypatch):
    fs, endpoint = rerank_s3
    # planning reads the footers in Ray tasks, as for a big corpus on object storage (2 tasks)
    monkeypatch.setattr(discovery, "PARALLEL_PLANNING_MIN_SHARDS", 2)
    monkeypatch.setattr(discovery, "SHARDS_PER_PLANNING_TASK", 2)
    upload(fs, write_shards(n_shards=3), "rerank-in/day1")
    upload(fs, Path(tiny_bert), "rerank-models/tiny-bert")
    args = [
        "run",
        "s3://rerank-in/day1",
        "s3://rerank-out/day1",
        "--model",
        "s3://rerank-models/tiny-bert",
        "--max-length",
        "128",
        "--storage-endpoint-url",
        endpoint,
        "--storage-option",
        "secret=SUPERSECRET-xyz",
        "--storage-option",
        "key=testing",
    ]
    assert main(args) == 0
    assert_output_invariants("s3://rerank-in/day1", "s3://rerank-out/day1", storage=storage_for(endpoint))
    manifest = storage_for(endpoint).read_json("s3://rerank-out/day1/_SUCCESS")
    assert manifest["totals"]["shards"] == 3 and manifest["totals"]["rows_out"] == 3 * 4 * 5
    # the model was fetched once for this node (driver and actors share the cached copy)
    copies = [p for p in default_cache_dir().iterdir() if p.is_dir() and (p / ".complete").exists()]
    assert len(copies) == 1
    # credentials never appear in logs or in what the job writes
    assert "SUPERSECRET" not in caplog.text
    for path in fs.find("rerank-out/day1"):
        assert b"SUPERSECRET" not in fs.cat_file(path)


@pytest.mark.timeout(600)  # two runs of 8 shards; 105 s measured on 2 busy cores
def test_s3_kill_and_resume_equals_uninterrupted(
    ray_address, rerank_s3, write_shards, tiny_bert, spawn, reference_output
):
    fs, endpoint = rerank_s3
    shape = {"n_shards": 8, "n_queries": 6, "candidates": 8}
    upload(fs, write_shards(**shape), "rerank-in/k")
    model_flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "4"]
    flags = [*model_flags, "--storage-endpoint-url", endpoint]
    reference = reference_output(model_flags, **shape)  # the same corpus's uninterrupted local run

    env = {**os.environ, "RAY_ADDRESS": ray_address}
    cmd = [sys.executable, "-m", "jobs.cli", "run", "s3://rerank-in/k", "s3://rerank-out/k", *flags]
    proc = spawn(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def published_a_marker() -> bool:
        fs.invalidate_cache()
        return fs.exists("rerank-out/k/_rerank/done") and bool(fs.find("rerank-out/k/_rerank/done"))

    wait_until(published_a_marker, 180, what="the first done marker", process=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    done_before = len(fs.find("rerank-out/k/_rerank/done"))
    assert 1 <= done_before < 8, f"kill landed after {done_before} of 8 shards"
    assert not fs.exists("rerank-out/k/_SUCCESS")

    assert main(["run", "s3://rerank-in/k", "s3://rerank-out/k", *flags]) == 0
    storage = storage_for(endpoint)
    tables_equal(read_output(reference), read_output("s3://rerank-out/k", storage))
    assert_output_invariants("s3://rerank-in/k", "s3://rerank-out/k", storage=storage)


def test_transient_errors_are_retried_and_aws_endpoint_url_reaches_the_workers(
    ray_address, rerank_s3, flaky_s3, write_shards, tiny_bert, monkeypatch
):
    fs, endpoint = rerank_s3
    upload(fs, write_shards(n_shards=3), "rerank-in/flaky")
    # no --storage-endpoint-url: only the driver's environment names the endpoint, a proxy where
    # one request in three answers 503 SlowDown
    monkeypatch.setenv("AWS_ENDPOINT_URL", flaky_s3.endpoint)
    args = ["s3://rerank-in/flaky", "s3://rerank-out/flaky", "--model", tiny_bert, "--max-length", "128"]
    assert main(["run", *args]) == 0
    assert flaky_s3.counter["failed"] > 5
    assert_output_invariants("s3://rerank-in/flaky", "s3://rerank-out/flaky", storage=storage_for(endpoint))


@pytest.fixture
def fast_fail_config(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("storage:\n  max_attempts: 2\n")
    return str(path)


def test_missing_bucket_exits_2_and_writes_nothing(
    ray_address, rerank_s3, write_shards, tiny_bert, caplog, fast_fail_config
):
    fs, endpoint = rerank_s3
    upload(fs, write_shards(n_shards=1), "rerank-in/m")
    base = ["--model", tiny_bert, "--storage-endpoint-url", endpoint, "--config", fast_fail_config]
    assert main(["run", "s3://no-such-bucket/x", "s3://rerank-out/m", *base]) == 2
    assert "no-such-bucket" in caplog.text
    assert main(["run", "s3://rerank-in/m", "s3://no-such-out-bucket/m", *base]) == 2
    assert "bucket 'no-such-out-bucket' does not exist" in caplog.text
    fs.invalidate_cache()
    assert fs.find("rerank-out") == []


def test_wrong_endpoint_exits_2(ray_address, tiny_bert, caplog, fast_fail_config):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = [
        "run",
        "s3://rerank-in/x",
        "s3://rerank-out/x",
        "--model",
        tiny_bert,
        "--storage-endpoint-url",
        closed,
        "--config",
        fast_fail_config,
    ]
    assert main(args) == 2
    assert "cannot reach the storage endpoint" in caplog.text and closed in caplog.text


def test_bad_credentials_exit_2_and_write_nothing(
    ray_address, moto_server, rerank_s3, write_shards, tiny_bert, caplog, fast_fail_config
):
    fs, endpoint = rerank_s3
    upload(fs, write_shards(n_shards=1), "rerank-in/x")  # readable with good keys
    args = [
        "run",
        "s3://rerank-in/x",
        "s3://rerank-out/x",
        "--model",
        tiny_bert,
        "--storage-endpoint-url",
        endpoint,
        "--config",
        fast_fail_config,
        "--storage-option",
        "key=AKIAWRONG",
        "--storage-option",
        "secret=wrong-secret-value",
    ]
    with moto_server.require_auth():  # checks access keys; none are valid
        assert main(args) == 2
    assert "access denied" in caplog.text
    assert "wrong-secret-value" not in caplog.text
    fs.invalidate_cache()
    assert fs.find("rerank-out") == []
