"""A local two-node Ray cluster made with the `ray` CLI, on loopback addresses only.

The head listens on 127.0.0.2 and the second node on 127.0.0.3 (both loopback), so Ray never
resolves "localhost" to the machine's external address, and the two nodes have distinct IPs like
on a real cluster. Token auth is off (loopback only). `stop()` ends exactly this cluster's
processes (matched by those addresses, with their children), never another Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.s3_server import free_port

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


class TwoNodeCluster:
    def __init__(self, cpus_per_node: int = 2) -> None:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"{HEAD_IP}:{self.gcs_port}"
        self.dashboard = f"http://{HEAD_IP}:{self.dashboard_port}"
        ray = str(Path(sys.executable).parent / "ray")
        # The head keeps its job server on loopback (see README, "Local multi-node cluster").
        head_env = {**cluster_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

        def own_ports() -> list[str]:
            # Every agent and metrics port explicit: another Ray on this machine (the test session's)
            # holds the defaults, and a head whose job agent cannot bind accepts no job.
            return [
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
            ]

        subprocess.run(
            [
                ray,
                "start",
                "--head",
                *own_ports(),
                f"--node-ip-address={HEAD_IP}",
                f"--port={self.gcs_port}",
                f"--num-cpus={cpus_per_node}",
                "--include-dashboard=true",
                f"--dashboard-host={HEAD_IP}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                "--disable-usage-stats",
            ],
            env=head_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                ray,
                "start",
                f"--address={self.address}",
                *own_ports(),
                f"--node-ip-address={WORKER_IP}",
                f"--num-cpus={cpus_per_node}",
            ],
            env=cluster_env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def kill_worker_node(self) -> None:
        """Loses the second node: SIGKILL its raylet, workers and agents (as a machine failure would)."""
        self._kill((WORKER_IP,))

    def stop(self) -> None:
        self._kill((HEAD_IP, WORKER_IP))
        # `ray start --head` records itself as "the" cluster of this machine; forget it.
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if HEAD_IP in current.read_text():
                current.unlink()

    @staticmethod
    def _kill(ips: tuple[str, ...]) -> None:
        children: dict[int, list[int]] = {}
        mine: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
            if any(ip in cmdline for ip in ips):
                mine.append(int(entry))
        doomed, stack = set(), list(mine)
        while stack:
            pid = stack.pop()
            if pid not in doomed:
                doomed.add(pid)
                stack.extend(children.get(pid, []))
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
