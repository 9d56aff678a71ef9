"""One local Ray for the whole integration session (2 cores: starting Ray per test is too slow),
the processes a test starts (drivers, a two-node cluster), and the PIDs of a job's Ray actors.

Every module here sets `pytestmark = pytest.mark.integration`; collection fails for one that does
not, so `-m "not integration"` can never run an integration test by accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.helpers import MODELS, pairs_table
from tests.ray_cluster import TwoNodeCluster

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = sorted(
        {
            item.nodeid
            for item in items
            if item.path.is_relative_to(HERE) and item.get_closest_marker("integration") is None
        }
    )
    if unmarked:
        raise pytest.UsageError(f"integration tests without the integration marker: {unmarked}")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """Address of the session's local Ray, started as `rerank run` starts one (pipeline.cluster:
    quiet workers, no Ray Train preemption watcher, no progress bars) on 2 CPUs with a small object
    store; subprocess drivers join it via RAY_ADDRESS."""
    import ray

    from pipeline.cluster import connect_ray
    from pipeline.config import RayConfig

    os.environ.pop("RAY_ADDRESS", None)  # never a cluster some `ray start` left on this machine
    connect_ray(RayConfig(num_cpus=2, object_store_memory_bytes=256 * 1024 * 1024))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """`spawn(cmd, **popen_kwargs)`: Popen in a session of its own. At teardown, a process still
    running (the test failed or timed out before it ended) is killed with its process group."""
    started: list[subprocess.Popen] = []

    def start(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:  # not reaped yet, so its pid (= its group id) is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def job_actor_pids(ray_address: str) -> Callable[[int, str], list[int]]:
    """`job_actor_pids(driver_pid, title)`: PIDs of the live actors of the Ray job whose driver
    process is `driver_pid`, as the session cluster's GCS records them, whose process title holds
    `title` (Ray titles an actor process `ray::<actor repr>`, e.g. `MapWorker(MapBatches(X))`)."""
    from ray._private import state  # the GCS job and actor tables (the session's Ray is connected)

    def title_of(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            return ""

    def pids(driver_pid: int, title: str) -> list[int]:
        jobs = {j["JobID"] for j in state.jobs() if j["DriverPid"] == driver_pid and not j["IsDead"]}
        alive = [a["Pid"] for a in state.actors().values() if a["JobID"] in jobs and a["State"] == "ALIVE"]
        return [pid for pid in alive if title in title_of(pid)]

    return pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodeCluster]:
    """A two-node cluster of its own (`ray start` twice), not the session's Ray."""
    c = TwoNodeCluster()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def finished_run(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small `rerank run` through the CLI (3 shards, one row quarantined), made once per
    session for the tests that only read its OUTPUT: the run report, `rerank status`."""
    from jobs.cli import main  # imports Ray, as the fixtures above do, only when used

    root = tmp_path_factory.mktemp("finished-run")
    for s in range(3):
        table = pairs_table(4, 6, seed=s, prefix=f"s{s}q")
        if s == 0:  # one row the job quarantines: its passage is empty
            passages = table.column("passage").to_pylist()
            table = table.set_column(3, "passage", [[""] + passages[1:]])
        (root / "in").mkdir(exist_ok=True)
        pq.write_table(table, root / "in" / f"part-{s}.parquet")
    flags = ["--model", str(MODELS / "tiny-bert"), "--max-length", "128", "--rows-per-call", "16"]
    flags += ["--storage-option", "secret=SUPERSECRET-rpt"]
    assert main(["run", str(root / "in"), str(root / "out"), *flags]) == 0
    return {"input": root / "in", "output": root / "out", "flags": flags}


@pytest.fixture
def finished_copy(finished_run: dict, tmp_path: Path) -> dict:
    """A copy of `finished_run`'s OUTPUT (tmp_path/out) for a test that resumes or changes a
    finished output without a run of its own to make one: `args` is `rerank run` of the same job
    into the copy (the fingerprint holds no URI, so the copy resumes as the original would)."""
    out = tmp_path / "out"
    shutil.copytree(finished_run["output"], out)
    return {"output": out, "args": ["run", str(finished_run["input"]), str(out), *finished_run["flags"]]}


# flags that change how a run is cut into calls, not what it writes (scores agree to fp32 rounding)
_CALL_SHAPE_FLAGS = ("--rows-per-call", "--torch-threads")


@pytest.fixture(scope="session")
def reference_output(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`reference_output(flags, n_shards=, n_queries=, candidates=)`: the OUTPUT of one
    uninterrupted run of the `write_shards` corpus of that shape with these flags, made once per
    session (the fault tests compare against it instead of each running their own)."""
    from jobs.cli import main

    made: dict[tuple, Path] = {}

    def reference(flags: list[str], n_shards: int, n_queries: int, candidates: int) -> Path:
        kept, skip = [], False
        for flag in flags:
            if skip or flag in _CALL_SHAPE_FLAGS:
                skip = not skip
                continue
            kept.append(flag)
        key = (tuple(kept), n_shards, n_queries, candidates)
        if key not in made:
            root = tmp_path_factory.mktemp("reference")
            for s in range(n_shards):  # the same corpus as the `write_shards` fixture writes
                path = root / "input" / f"day={s % 2}" / f"part-{s}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                table = pairs_table(n_queries, candidates, seed=s, prefix=f"s{s}q")
                pq.write_table(table, path, row_group_size=7)
            assert main(["run", str(root / "input"), str(root / "out"), *kept]) == 0
            made[key] = root / "out"
        return made[key]

    return reference
