"""vLLM's CPU build in bench/throughput.py: bench/vllm_peer.py run in its side venv, timed from outside.

Each precision runs the peer twice, on the big corpus and on the small one (one query per shard) the
job's marginal rate uses, so the three figures read like the job's:
  steady      the peer's own timed `llm.score` call over every pair (after its warm-up)
  whole wall  pairs / the subprocess' wall time: interpreter start, vLLM's start-up (engine process,
              torch.compile), warm-up, scoring and exit
  marginal    (pairs - small pairs) / (wall - small wall): per-pair cost without the fixed start-up
A run counts once its result line is printed, even when the process then exits non-zero (vLLM's
engine shutdown aborted in some earlier runs): the exit status goes into a note. A run with no
result line (the venv is missing, vLLM failed) is returned as {"error": ...}, which becomes a row
saying so, not a crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
PEER_SCRIPT = ROOT / "bench" / "vllm_peer.py"
TIMEOUT_S = 1800.0  # a hung engine shutdown must not hang the benchmark
Rate = tuple[float | None, float | None]  # (pairs/s, seconds)


def run_vllm(
    python: Path,
    input_dir: Path,
    model_dir: Path,
    dtype: str,
    log_stem: Path,
    *,
    scores_out: Path | None = None,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """bench/vllm_peer.py in the side venv: its JSON line plus `wall_s` and `exit_code`, or
    {"error": ...}. stdout goes to LOG_STEM.out, stderr (vLLM's logging) to LOG_STEM.log."""
    if not python.exists():
        return {"error": f"side venv python {python} not found (`make vllm-venv` creates .venv-vllm)"}
    cmd = [str(python), str(PEER_SCRIPT), str(input_dir), str(model_dir), "--dtype", dtype]
    cmd += ["--threads", str(os.cpu_count() or 1)]
    cmd += ["--scores-out", str(scores_out)] if scores_out else []
    cmd += ["--enforce-eager"] if enforce_eager else []
    out_path, log_path = log_stem.with_suffix(".out"), log_stem.with_suffix(".log")
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    with out_path.open("w") as out, log_path.open("w") as log:
        # its own session: a timeout ends vLLM's engine process too, not only the peer script
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=log, start_new_session=True)
        try:
            rc: int | str = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = f"killed after {TIMEOUT_S:.0f} s"
    wall = time.perf_counter() - t0
    result = last_result(out_path.read_text())
    if result is None:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-10:]) or "(empty)\n"
        return {"error": f"exit {rc}, no result line; last lines of {log_path}:\n{tail}"}
    return result | {"wall_s": round(wall, 2), "exit_code": rc}


def last_result(stdout: str) -> dict[str, Any] | None:
    """The peer's last JSON result line, if it printed one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            if parsed.get("peer") == "vllm":
                return parsed
    return None


def vllm_rates(big: dict[str, Any], small: dict[str, Any], small_pairs: int) -> dict[str, Rate]:
    """Steady, whole-wall and marginal (pairs/s, seconds) of one precision's two runs; a figure that
    needs a failed run is (None, None)."""
    if "error" in big:
        return {"steady": (None, None), "whole wall": (None, None), "marginal": (None, None)}
    pairs, wall = big["pairs"], big["wall_s"]
    marginal: Rate = (None, None)
    if "error" not in small:
        span = wall - small["wall_s"]
        # start-up times vary by seconds run to run: a span that small gives no rate
        marginal = ((pairs - small_pairs) / span if span > 0 else None, span)
    return {
        "steady": (big["pairs_per_s"], big["seconds"]),
        "whole wall": (pairs / wall, wall),
        "marginal": marginal,
    }


def run_notes(tag: str, big: dict[str, Any], small: dict[str, Any]) -> list[str]:
    """What the table cannot show: failures, exit codes after a result, start-up times."""
    notes = []
    runs = [("big", big)] + ([] if small is big else [("small", small)])  # small is big: not tried
    for size, r in runs:
        if "error" in r:
            notes.append(f"vllm {tag} ({size} corpus) failed: {r['error']}")
        elif r["exit_code"] != 0:
            notes.append(
                f"vllm {tag} ({size} corpus) exited {r['exit_code']} after printing its result (counted)"
            )
    if "error" not in big:
        small_wall = f"{small['wall_s']} s" if "wall_s" in small else "failed"
        notes.append(
            f"vllm {tag}: subprocess wall {big['wall_s']} s (small corpus: {small_wall}), "
            f"start-up {big['startup_s']} s (process start to LLM ready), steady {big['seconds']} s"
        )
    return notes
