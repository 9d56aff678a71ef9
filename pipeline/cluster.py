"""Joining Ray and telling what it offers: shared by `rerank run` and `rerank finetune`."""

from __future__ import annotations

import os
import socket

import ray
from ray.data import DataContext

from pipeline.config import Device, RayConfig, ResolvedDevice
from pipeline.errors import ConfigError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CONNECT_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect at once; ray.init would retry for minutes


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address (`host:port`, `ray://host:port`), None if it has none."""
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _fix(address: str) -> str:
    return (
        f"start the cluster or fix --ray-address / ray.address / $RAY_ADDRESS (tried {address!r}); "
        "without an address the job starts a local Ray"
    )


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fails fast with a ConfigError if nothing answers at a cluster address (`auto` is Ray's)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError([f"no Ray cluster answers at {address!r} ({e}); {_fix(address)}"]) from None


def connect_ray(rc: RayConfig) -> None:
    """Joins $RAY_ADDRESS / ray.address if set (as `ray job submit` does), else starts a local Ray."""
    if ray.is_initialized():
        return
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
            raise ConfigError([f"cannot join the Ray cluster at {address!r}: {e}; {_fix(address)}"]) from e
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
