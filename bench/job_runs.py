"""The rerank job as bench/throughput.py runs it: `rerank run` in a subprocess, timed from outside.

Kept apart from the table and the targets so that each job configuration (an explicit precision, or
the job's own defaults) is one call with its flags. Besides the wall time the run gives its phases
(from landmark lines of its log), OUTPUT/_SUCCESS `last_run` and the dtype its fingerprint resolved
(what `--dtype auto` chose), and its scores in input order, to compare with a peer's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
# Landmark lines of the job's log, in order: (phase that ends at the line, text in the line).
PHASE_MARKERS = [
    ("Ray start", "Started a local Ray instance"),
    ("checks before scoring", "Starting execution of Dataset"),
    ("dataset: tokenize + score", "execution finished in"),
    ("publish, markers, _SUCCESS", "rerank: summary:"),
]
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+\w+\s+(.*)$")
ID_COLUMNS = ["query_id", "doc_id"]


def run_job(
    input_dir: Path, output: Path, model_dir: Path, budget: int, gpu: bool, flags: list[str]
) -> dict[str, Any]:
    """`rerank run` in a subprocess with `flags` added: its wall time, phases from its log,
    OUTPUT/_SUCCESS `last_run` and the fingerprint's resolved dtype."""
    cmd = [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(output), "--model", str(model_dir)]
    cmd += ["--max-batch-tokens", str(budget), "--fresh", *flags]
    cmd += ["--device", "cuda"] if gpu else ["--device", "cpu", "--torch-threads", str(os.cpu_count())]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    log_path = output.with_suffix(".log")
    launched, t0 = time.time(), time.perf_counter()
    with log_path.open("w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    log_text = log_path.read_text()
    if rc != 0:
        tail = "".join(log_text.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"`{' '.join(cmd)}` exited {rc}; last lines of its log:\n{tail}")
    manifest = json.loads((output / "_SUCCESS").read_text())
    return {
        "flags": flags,
        "subprocess_wall_s": round(wall, 2),
        "phases_s": job_phases(log_text, launched, launched + wall),
        "summary": manifest["last_run"],
        "resolved_dtype": manifest.get("fingerprint", {}).get("dtype"),
    }


def job_phases(log_text: str, launched: float, ended: float) -> dict[str, float]:
    """Seconds between the job's landmark log lines (best effort: a missing landmark is skipped)."""
    stamps = []
    for line in log_text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamps.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2)))
    if not stamps:
        return {}
    phases = {"python start, imports, config": stamps[0][0] - launched}
    last = stamps[0][0]
    for name, marker in PHASE_MARKERS:
        at = next((t for t, text in stamps if marker in text), None)
        if at is not None and at >= last:
            phases[name], last = at - last, at
    phases["exit (Ray shutdown)"] = ended - last
    return {k: round(v, 2) for k, v in phases.items()}


def choices_made(job: dict[str, Any]) -> dict[str, Any]:
    """What the job chose for itself: the fingerprint's dtype and any `last_run` key naming a
    dtype, attention or compile choice, at the top or under `kernels` (with its reasons), where
    the job's `auto` records them."""
    summary, wanted = job["summary"], re.compile("dtype|attention|compile|reasons")
    picked = {k: v for k, v in summary.items() if wanted.search(k)}
    kernels = summary.get("kernels")
    if isinstance(kernels, dict):
        picked |= {f"kernels.{k}": v for k, v in kernels.items() if wanted.search(k)}
    return {"fingerprint dtype": job["resolved_dtype"]} | picked


def scores_in_input_order(input_dir: Path, output: Path) -> np.ndarray:
    """The job's scores in the order of the input shards (sorted, as the peers read them): the
    output is grouped by query and ranked, so rows are matched on (query_id, doc_id)."""
    inputs = pa.concat_tables(
        pq.read_table(p, columns=ID_COLUMNS) for p in sorted(input_dir.glob("*.parquet"))
    )
    scored = pa.concat_tables(
        pq.read_table(p, columns=[*ID_COLUMNS, "score"]) for p in sorted(output.glob("*.parquet"))
    )
    keys = zip(*(scored.column(c).to_pylist() for c in ID_COLUMNS), strict=True)
    by_pair = dict(zip(keys, scored.column("score").to_pylist(), strict=True))
    order = zip(*(inputs.column(c).to_pylist() for c in ID_COLUMNS), strict=True)
    return np.array([by_pair[k] for k in order], dtype=np.float64)
