"""python -m bench.gpu --smoke: the GPU benchmark's whole code path (model shapes, corpus, tokenizing
workers -> queue -> ScorePairs, baselines, sentence-transformers, parity, report) on CPU with the
tiny test models, so the benchmark bench/gpu/check.sh runs on a GPU cannot rot. No Ray: it is here
for its length (a subprocess of about a minute), not for the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

ROW_KEYS = {
    "pairs_per_s",
    "tokens_per_s",
    "padding_efficiency",
    "mfu_datasheet",
    "mfu_measured",
    "peak_memory_bytes",
}


@pytest.mark.timeout(900)
def test_the_gpu_benchmark_smoke_run_writes_its_json(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu",
            "--smoke",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert {"meta", "parity", "kinds", "targets"} <= result.keys()
    assert result["meta"]["smoke"] is True and result["meta"]["device"] == "cpu"
    assert set(result["kinds"]) == {"m3", "llm", "layerwise", "qwen3"}
    for kind, section in result["kinds"].items():
        rows = section["rows"]
        assert {"forward", "pipeline", "flag-style", "naive", "forward unpadded eager"} <= rows.keys(), kind
        for name, row in rows.items():
            if "skipped" in row:  # sentence-transformers, when it is not installed
                continue
            assert row.keys() >= ROW_KEYS, (kind, name)
            assert row["pairs_per_s"] > 0
        assert rows["pipeline"]["tokenizer_cores_per_gpu"] > 0 and rows["pipeline"]["non_finite_scores"] == 0
        assert rows["forward unpadded eager"]["padding_efficiency"] == 1.0
        assert section["corpus"]["pairs"] >= 60
    assert "sentence-transformers" in result["kinds"]["m3"]["rows"]
    kernels = result["parity"]["kernels"]
    assert kernels and all(r["max_abs_diff"] <= 1e-5 * max(1.0, r["max_abs_score"]) for r in kernels)
    assert {r["dtype"] for r in result["parity"]["precision"]} == {"float16", "bfloat16"}
    assert {t["kind"] for t in result["targets"]} == {"m3", "llm", "layerwise", "qwen3"}
    assert "pairs/s" in done.stdout  # the table
