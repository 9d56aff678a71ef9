"""`ray job submit` of the nightly entry point to a local two-node cluster: work on both nodes.

Runs its own cluster (ray start --head + a second ray start node), not the session's Ray.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.io import Storage
from tests.conftest import done_markers, pairs_table
from tests.integration.test_job import assert_output_invariants
from tests.ray_cluster import TwoNodeCluster, cluster_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    c = TwoNodeCluster()
    yield c
    c.stop()


def test_ray_job_submit_nightly_runs_on_both_nodes(cluster, tmp_path, tiny_bert):
    date = "2026-11-27"
    day = tmp_path / "in" / date
    day.mkdir(parents=True)
    for s in range(6):
        pq.write_table(pairs_table(8, 10, seed=s, prefix=f"s{s}q"), day / f"part-{s}.parquet")
    config = tmp_path / "nightly.yaml"
    config.write_text(
        f'input: {{uri: "{tmp_path}/in/{{date}}"}}\n'
        f'output: {{uri: "{tmp_path}/out/{{date}}"}}\n'
        f"model: {{name_or_path: {tiny_bert}, max_length: 128}}\n"
        "scoring: {min_actors: 2, max_actors: 2, cpus_per_actor: 1, rows_per_call: 16, "
        "cpus_per_tokenizer: 0.5}\n"
    )
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--runtime-env",
        "deploy/runtime_env.yaml",
        "--",
        "python",
        "-m",
        "jobs.rerank_nightly",
        "--date",
        date,
        "--config",
        str(config),
    ]
    env = {**cluster_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    for _ in range(20):  # the head's job agent comes up a few seconds after `ray start` returns
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        log = done.stdout + done.stderr
        if "No available agent to submit job" not in log:
            break
        time.sleep(3)
    assert done.returncode == 0, log[-4000:]
    assert (tmp_path / "out" / date / "_SUCCESS").exists()
    assert_output_invariants(day, tmp_path / "out" / date, storage=Storage())
    nodes = re.findall(r"node (\w+): (\d+) scoring actor\(s\), (\d+) pairs", log)
    assert len({n for n, _, _ in nodes}) == 2, log[-4000:]  # scoring actors on both nodes
    assert all(int(pairs) > 0 for _, _, pairs in nodes)
    assert sum(int(pairs) for _, _, pairs in nodes) == 6 * 8 * 10


def test_lost_worker_node_run_completes_or_resumes_to_identical_output(cluster, tmp_path, tiny_bert):
    """Runs last in this module: it takes the second node down for good."""
    from tests.integration.test_bad_input import assert_reconciled
    from tests.integration.test_job import read_output, tables_equal

    inp = tmp_path / "in"
    inp.mkdir()
    for s in range(8):
        pq.write_table(pairs_table(6, 8, seed=s, prefix=f"s{s}q"), inp / f"part-{s}.parquet")
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "4", "--torch-threads", "1"]
    env = {**cluster_env(), "RAY_ADDRESS": cluster.address}

    def rerank(out: Path, *extra: str) -> subprocess.Popen:
        cmd = ["python", "-m", "jobs.rerank", "run", str(inp), str(out), *flags, *extra]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert rerank(tmp_path / "reference", "--actors", "2").wait(timeout=300) == 0
    out = tmp_path / "out"
    run = rerank(out, "--actors", "2")
    markers = out / "_rerank" / "done"
    deadline = time.monotonic() + 120
    while not done_markers(markers):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    cluster.kill_worker_node()
    try:
        first_exit = run.wait(timeout=150)  # completes on the head, or fails the shards it lost
    except subprocess.TimeoutExpired:  # or waits for the lost node: stop it, as an operator would
        run.kill()
        first_exit = run.wait()
    print(f"run with the lost node exited {first_exit}")  # 0: finished on the head; else resumed below
    if first_exit != 0:
        assert rerank(out, "--actors", "1").wait(timeout=300) == 0  # resume on what is left
    tables_equal(read_output(tmp_path / "reference"), read_output(out))
    assert_output_invariants(inp, out, storage=Storage())
    assert_reconciled(inp, out)
