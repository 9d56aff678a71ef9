"""`rerank nightly`: dated prefixes, one run per OUTPUT at a time (a second `nightly` or `rerank run`
exits 3 naming the holder), stale leases taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from jobs.cli import main
from pipeline.demo.processes import wait_until
from pipeline.io import Storage, join
from pipeline.rerank.output import paths
from tests.helpers import done_markers

pytestmark = pytest.mark.integration

STORAGE = Storage()
DATE = "2026-11-27"


def nightly_config(tmp_path, tiny_bert, extra: str = "") -> str:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        f'input: {{uri: "{tmp_path}/in/{{date}}"}}\n'
        f'output: {{uri: "{tmp_path}/out/{{date}}"}}\n'
        f"model: {{name_or_path: {tiny_bert}, max_length: 128}}\n{extra}"
    )
    return str(path)


@pytest.mark.timeout(600)  # its waits alone allow 420 s; 98 s measured on 2 busy cores
def test_overlapping_start_exits_3_naming_the_holder_then_first_completes(
    ray_address, write_shards, tmp_path, tiny_bert, caplog, spawn
):
    inp = write_shards(n_shards=8, n_queries=6, candidates=8, root=tmp_path / "in" / DATE)
    config = nightly_config(tmp_path, tiny_bert, "scoring: {rows_per_call: 4}\n")
    out = tmp_path / "out" / DATE
    lease = out / paths.LEASE
    # an earlier run's progress with another config: the first run's --fresh discards it, not its lease
    STORAGE.write_json_atomic(
        join(str(out), paths.RUN_MANIFEST),
        {"digest": "earlier", "fingerprint": {"max_length": 64}, "created_at": 0},
    )
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    first = spawn(
        [sys.executable, "-m", "jobs.rerank_nightly", "--date", DATE, "--config", config, "--fresh"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    holder = wait_until(
        lambda: STORAGE.read_json(str(lease)), 120, what="the first run's lease", process=first
    )
    wait_until(  # past its claim and --fresh
        lambda: done_markers(out / "_rerank" / "done"), 180, 0.02, "a first done-marker", process=first
    )
    assert STORAGE.read_json(str(lease))["owner"] == holder["owner"]  # --fresh kept the lease
    assert STORAGE.read_json(join(str(out), paths.RUN_MANIFEST))["digest"] != "earlier"

    assert main(["nightly", "--date", DATE, "--config", config]) == 3
    assert "already in progress" in caplog.text and holder["owner"] in caplog.text
    caplog.clear()  # `rerank run` on the same OUTPUT, --fresh or not, is refused alike
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "128", "--fresh"]) == 3
    assert "already in progress" in caplog.text and holder["owner"] in caplog.text
    assert first.wait(timeout=300) == 0
    assert (out / "_SUCCESS").exists()
    assert not lease.exists()  # released at the end


def test_stale_lease_is_taken_over_and_dated_output_written(
    ray_address, write_shards, tmp_path, tiny_bert, caplog
):
    write_shards(n_shards=2, root=tmp_path / "in" / DATE)
    out = str(tmp_path / "out" / DATE)
    now = time.time()
    STORAGE.write_json_atomic(
        join(out, paths.LEASE),
        {
            "owner": "crashed-host:42:dead",
            "started_at": now - 9000,
            "heartbeat_at": now - 4000,
            "ttl_s": 600,
        },
    )
    assert main(["nightly", "--date", DATE, "--config", nightly_config(tmp_path, tiny_bert)]) == 0
    assert "taking over the stale lease of crashed-host:42:dead" in caplog.text
    assert STORAGE.read_json(join(out, paths.LEASE)) is None  # the taken-over lease, released
    manifest = STORAGE.read_json(join(out, paths.SUCCESS))
    assert manifest["totals"]["shards"] == 2


def test_bad_date_and_unquoted_yaml_are_usage_errors(tmp_path, tiny_bert, caplog):
    with pytest.raises(SystemExit) as err:
        main(["nightly", "--date", "27/11/2026", "--config", "x.yaml"])
    assert err.value.code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {uri: /data/{date}}\n")
    assert main(["nightly", "--date", DATE, "--config", str(bad)]) == 2
    assert "quote URIs" in caplog.text


def test_each_night_reuses_the_night_before(ray_address, write_shards, tmp_path, tiny_bert, caplog):
    """`output.reuse: [".../{previous_date}"]`: the first night has no previous run (a warning, not
    an error) and scores everything; the next night scores nothing it already scored. Its change
    feed (`compare.diff_against`, `{previous_date}` too) is empty: the same corpus, the same scores."""
    for date in ("2026-11-26", "2026-11-27"):
        write_shards(n_shards=2, n_queries=3, candidates=4, root=tmp_path / "in" / date)
    config = tmp_path / "nightly-reuse.yaml"
    config.write_text(
        f'input: {{uri: "{tmp_path}/in/{{date}}"}}\n'
        f'output: {{uri: "{tmp_path}/out/{{date}}", reuse: ["{tmp_path}/out/{{previous_date}}"]}}\n'
        f"model: {{name_or_path: {tiny_bert}, max_length: 128}}\n"
        f'compare: {{diff_against: "{tmp_path}/out/{{previous_date}}"}}\n'
    )
    config = str(config)
    assert main(["nightly", "--date", "2026-11-26", "--config", config]) == 0
    assert f"--reuse {tmp_path}/out/2026-11-25 skipped" in caplog.text
    assert f"--diff-against {tmp_path}/out/2026-11-25 skipped" in caplog.text
    caplog.clear()
    assert main(["nightly", "--date", "2026-11-27", "--config", config]) == 0
    totals = STORAGE.read_json(str(tmp_path / "out" / "2026-11-27" / "_SUCCESS"))["totals"]
    assert (totals["pairs_scored"], totals["pairs_reused"]) == (0, 24)  # the same corpus, both nights
    record = STORAGE.read_json(str(tmp_path / "out" / "2026-11-27" / paths.RUN_MANIFEST))
    assert record["reuse"]["used"] == [f"{tmp_path}/out/2026-11-26"]
    changes = STORAGE.read_json(str(tmp_path / "out" / "2026-11-27" / "_SUCCESS"))["changes"]
    assert changes["against"] == f"{tmp_path}/out/2026-11-26"
    assert changes["totals"] == {"added": 0, "removed": 0, "reranked": 0, "rescored": 0}
    assert len(changes["files"]) == 2
