"""Where a stage runs: the Ray node and process, for the run report (work shared across nodes)."""

from __future__ import annotations

import os
import socket


def worker_location() -> tuple[str, int]:
    """(node id, process id) of the calling worker; the host name stands in outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()[:12], os.getpid()
    except ImportError:
        pass
    return socket.gethostname(), os.getpid()
