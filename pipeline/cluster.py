"""Joining Ray and telling what it offers: shared by `rerank run` and `rerank finetune`. What
Ray's processes print is `pipeline/logs.py`."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

import ray

from pipeline.config import Device, RayConfig, ResolvedDevice
from pipeline.errors import ConfigError
from pipeline.logs import configure_library_logging, is_verbose, quiet_environment, worker_runtime_env

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect at once; ray.init would retry for minutes
# A local Ray: nothing preempts its one node, so no Ray Train preemption watcher (an actor whose
# creation Ray's core warns about on the console, as it does about Ray Data's actors; see
# absorb_restart_notice).
LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class RestartNotice:
    """An actor that never runs: see `absorb_restart_notice`."""

    def __init__(self, _unused: Any) -> None:
        pass


def absorb_restart_notice() -> None:
    """Ray's core prints, once per driver process, an ERROR line on stderr the first time an actor
    that may restart gets a constructor argument by reference ("has constructor arguments in the
    object store and max_restarts > 0", ray-project/ray#53727). Ray Data passes every argument of
    its actors that way, so each run printed it, about Ray Data's own actors. No setting turns
    that console copy off (RAY_BACKEND_LOG_LEVEL prints a line of its own in every process), so
    this process's first such actor is created here, with stderr pointed at /dev/null for that
    one call, and killed at once. The line stays in the driver's Ray log file."""
    actor_class: Any = ray.remote(num_cpus=0, max_restarts=1)(RestartNotice)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            actor = actor_class.remote(ray.put(None))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    ray.kill(actor, no_restart=True)


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


def dashboard_url(context: Any) -> str | None:
    """The dashboard's http:// URL from what ray.init returned, None without a dashboard."""
    url = getattr(context, "dashboard_url", None)
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def cluster_address(rc: RayConfig) -> str | None:
    """The cluster the job joins ($RAY_ADDRESS / ray.address), None when it starts a local Ray."""
    return rc.address or os.environ.get("RAY_ADDRESS") or None


def connect_ray(rc: RayConfig) -> None:
    """Joins $RAY_ADDRESS / ray.address if set (as `ray job submit` does), else starts a local Ray
    (with its dashboard on 127.0.0.1 when `rc.dashboard`)."""
    if ray.is_initialized():
        return
    env = quiet_environment()
    for key, value in env.items():
        os.environ.setdefault(key, value)
    options: dict[str, Any] = {
        "logging_level": logging.INFO if is_verbose() else logging.ERROR,  # the driver's "ray" logger
        "log_to_driver": True,  # workers' errors and our warnings; their noise is off (quiet_worker)
        "runtime_env": worker_runtime_env(env),
    }
    address = cluster_address(rc)
    if address:
        check_reachable(address)
        try:
            context = ray.init(address=address, **options)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
            raise ConfigError([f"cannot join the Ray cluster at {address!r}: {e}; {_fix(address)}"]) from e
    else:
        options["runtime_env"]["env_vars"] |= {k: os.environ.get(k, v) for k, v in LOCAL_ENV.items()}
        context = ray.init(
            address="local",  # a new local Ray, never one a `ray start` left on this machine
            _node_ip_address="127.0.0.1",
            include_dashboard=rc.dashboard,
            dashboard_host="127.0.0.1",
            num_cpus=rc.num_cpus,
            object_store_memory=rc.object_store_memory_bytes,
            **options,
        )
    from ray.data import DataContext  # here, not at the top: quiet_worker's import stays light

    DataContext.get_current().enable_progress_bars = False
    configure_library_logging(is_verbose())  # ray.data sets its console up when imported
    if not is_verbose():
        absorb_restart_notice()
    if rc.dashboard:
        report_dashboard(dashboard_url(context), address)


def report_dashboard(url: str | None, address: str | None) -> None:
    if url and os.environ.get("RAY_AUTH_MODE") == "token":  # set by ray.init when the cluster uses tokens
        log.info("Ray dashboard: %s (it asks for the cluster's token: `ray get-auth-token` prints it)", url)
    elif url:
        log.info("Ray dashboard: %s", url)
    elif address:
        log.warning(
            "--dashboard: the Ray cluster at %r runs no dashboard; start its head with "
            "`ray start --head --include-dashboard=true`",
            address,
        )
    else:
        log.warning("--dashboard: the local Ray started without its dashboard (see its dashboard.log)")


def resolve_device(requested: Device) -> ResolvedDevice:
    """cpu or cuda: `auto` is cuda when the cluster has GPUs."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if requested == "cuda" and gpus <= 0:
        raise ConfigError(["--device cuda, but the Ray cluster has no GPUs; use --device cpu or auto"])
    if requested == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return requested


def node_resources() -> list[dict[str, float]]:
    """Each alive node's resources (CPU, GPU, memory, ...)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def cpus_per_node() -> int:
    """The CPU count of the smallest alive node (what a CPU scoring actor may count on)."""
    counts = [int(n.get("CPU", 0)) for n in node_resources()]
    return max(1, min((c for c in counts if c > 0), default=os.cpu_count() or 1))
