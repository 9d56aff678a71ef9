"""A local two-node Ray cluster made with the `ray` CLI, on loopback addresses only, for the
`cluster` fixture (tests/integration/conftest.py imports this module; tests do not).

The head listens on 127.0.0.2 and the second node on 127.0.0.3 (both loopback), so Ray never
resolves "localhost" to the machine's external address, and the two nodes have distinct IPs like
on a real cluster. Token auth is off (loopback only).

Each `ray start` runs in a session of its own, and every process it leaves behind (GCS, raylet,
agents, and the workers a raylet spawns, which take process groups of their own but keep the
session) carries that session id. `kill_worker_node()` and `stop()` kill exactly the processes of
those sessions, never another Ray on the machine, whatever its addresses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.demo.processes import free_port, wait_until

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`, from /proc/PID/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # "PID (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def kill_session(sid: int) -> None:
    """SIGKILLs every process of session `sid` until none is left (a raylet may fork a worker
    while its session is being killed)."""

    def killed_all() -> bool:
        members = session_members(sid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not members

    wait_until(killed_all, timeout_s=30, interval_s=0.1, what=f"the processes of session {sid} to die")


def ray_start(args: list[str], env: dict[str, str]) -> int:
    """Runs `ray start ARGS` in a new session; returns that session's id (the CLI's pid)."""
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray, "start", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        proc.communicate()
        raise
    if proc.returncode != 0:
        kill_session(proc.pid)  # what it started before failing
        raise RuntimeError(f"ray start {' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}")
    return proc.pid


class TwoNodeCluster:
    def __init__(self, cpus_per_node: int = 2) -> None:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"{HEAD_IP}:{self.gcs_port}"
        self.dashboard = f"http://{HEAD_IP}:{self.dashboard_port}"
        self._sessions: list[int] = []
        # The head keeps its job server on loopback (see deploy/README.md, `ray job submit`).
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

        head = [
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
        ]
        worker = [
            f"--address={self.address}",
            *own_ports(),
            f"--node-ip-address={WORKER_IP}",
            f"--num-cpus={cpus_per_node}",
        ]
        self._head_session = ray_start(head, head_env)
        self._sessions.append(self._head_session)
        try:
            self._worker_session = ray_start(worker, cluster_env())
        except BaseException:
            self.stop()
            raise
        self._sessions.append(self._worker_session)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a `ray` CLI call or a driver aimed at this cluster (not the session's Ray)."""
        return {**cluster_env(), **extra}

    def kill_worker_node(self) -> None:
        """Loses the second node: SIGKILL its raylet, workers and agents (as a machine failure would)."""
        kill_session(self._worker_session)

    def stop(self) -> None:
        for sid in self._sessions:
            kill_session(sid)
        # `ray start --head` records itself as "the" cluster of this machine; forget it if it is ours.
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if self.address in current.read_text():
                current.unlink()
