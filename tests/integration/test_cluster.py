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
from tests.conftest import pairs_table
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
