"""Joining Ray and telling what it offers: shared by `rerank run` and `rerank finetune`."""

from __future__ import annotations

import os

import ray
from ray.data import DataContext

from pipeline.config import Device, RayConfig, ResolvedDevice
from pipeline.errors import ConfigError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def connect_ray(rc: RayConfig) -> None:
    """Joins $RAY_ADDRESS / ray.address if set (as `ray job submit` does), else starts a local Ray."""
    if ray.is_initialized():
        return
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            address="local",  # a new local Ray, never one a `ray start` left on this machine
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=rc.num_cpus,
            object_store_memory=rc.object_store_memory_bytes,
        )
    DataContext.get_current().enable_progress_bars = False


def resolve_device(requested: Device) -> ResolvedDevice:
    """cpu or cuda: `auto` is cuda when the cluster has GPUs."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if requested == "cuda" and gpus <= 0:
        raise ConfigError(["--device cuda, but the Ray cluster has no GPUs; use --device cpu or auto"])
    if requested == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return requested


def cpus_per_node() -> int:
    """The CPU count of the smallest alive node (what a CPU scoring actor may count on)."""
    counts = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(1, min((c for c in counts if c > 0), default=os.cpu_count() or 1))
