"""One local Ray for the whole integration session (2 cores: starting Ray per test is too slow)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Address of the session's local Ray; subprocess drivers join it via RAY_ADDRESS."""
    import ray
    from ray.data import DataContext

    ray.init(
        address="local",  # never a cluster some `ray start` left recorded on this machine
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        object_store_memory=256 * 1024 * 1024,
    )
    DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
