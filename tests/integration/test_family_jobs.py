"""The new reranker families end to end on local Ray (Qwen3-Reranker, mxbai-rerank-v2, ModernBERT):
the family found from the model, `--normalize` and `--top-k` over the scores the stages give
without Ray, `--long-passages chunk`, a driver killed and resumed, and `--instruction` in the
fingerprint. Scores against the model cards' own code: tests/unit/test_family_parity.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.models.families.registry import family_named
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.output.ranking import sigmoid
from tests.helpers import publish_without_ray, read_output, tables_equal

pytestmark = pytest.mark.integration

STORAGE = Storage()
# qwen3's run is the killed-and-resumed one below
FAMILIES = {"mxbai-v2": "tiny_mxbai_v2", "modernbert": "tiny_modernbert"}
# One attention path, as the reference's: chunk windows of repeated words tie exactly on one path,
# and `auto`'s per-run choice could break such a tie another way (scores within 1e-6)
FLAGS = ["--max-length", "128", "--rows-per-call", "16", "--attention", "padded"]
CHUNK = ["--long-passages", "chunk", "--chunk-overlap", "8", "--max-chunks", "3"]
RANKING = ["--normalize", "--top-k", "3"]


def chunked(input_dir) -> InputConfig:
    return InputConfig(uri=str(input_dir), long_passages="chunk", chunk_overlap=8, max_chunks=3)


def write_input(root):
    """Two shards of 3 queries x 4 candidates; passages from a few words to far past 128 tokens."""
    rng = np.random.default_rng(5)
    words = ["what", "river", "Paris", "built?", "1889", "tower", "café", "東京", "is", "the", "ok."]
    for s in range(2):
        n = 12
        passages = [" ".join(rng.choice(words, int(rng.choice([3, 20, 90, 400])))) for _ in range(n)]
        table = pa.table(
            {
                "query_id": [f"s{s}q{i // 4}" for i in range(n)],
                "query": [" ".join(rng.choice(words, 4)) + "?" for i in range(n)],
                "doc_id": [f"s{s}d{i}" for i in range(n)],
                "passage": passages,
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"part-{s}.parquet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("families") / "in"
    write_input(root)
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_family_run_chunk_normalize_top_k(ray_address, corpus, tmp_path, family, request):
    """One run per family with every option on, equal to the stages run without Ray."""
    path = request.getfixturevalue(FAMILIES[family])
    out, reference = tmp_path / "out", tmp_path / "reference"
    assert main(["run", str(corpus), str(out), "--model", path, *FLAGS, *CHUNK, *RANKING]) == 0
    model = ModelConfig(name_or_path=path, max_length=128, attention="padded")  # family found as the run does
    publish_without_ray(corpus, reference, model, chunked(corpus), RankingConfig(normalize=True, top_k=3))
    tables_equal(read_output(reference), read_output(out))
    rows = [r for t in read_output(out).values() for r in t.to_pylist()]
    assert len(rows) == 6 * 3 and max(r["chunks"] for r in rows) == 3  # six queries, their top 3
    assert all(
        r["score_norm"] == pytest.approx(float(sigmoid(np.float32(r["score"]))), abs=1e-6) for r in rows
    )
    fp = STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]
    assert fp["family"] == family_named(family).identity(None)


@pytest.mark.timeout(600)
def test_qwen3_killed_and_resumed_then_instruction_changes_the_fingerprint(
    ray_address, corpus, tmp_path, tiny_qwen3_reranker, caplog
):
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ["--model", tiny_qwen3_reranker, *FLAGS, *CHUNK, *RANKING]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": "publish_in_flight"}
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(corpus), str(out), *args],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    assert main(["run", str(corpus), str(out), *args]) == 0
    model = ModelConfig(name_or_path=tiny_qwen3_reranker, max_length=128, attention="padded")
    publish_without_ray(corpus, reference, model, chunked(corpus), RankingConfig(normalize=True, top_k=3))
    tables_equal(read_output(reference), read_output(out))
    fp = STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]
    assert fp["family"] == family_named("qwen3").identity(None)

    # another instruction is another scoring: refused on this OUTPUT before any scoring
    caplog.clear()
    assert main(["run", str(corpus), str(out), *args, "--instruction", "Find the tower."]) == 2
    assert "family" in caplog.text and "--fresh" in caplog.text
