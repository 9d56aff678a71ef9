"""The `auto` kernels end to end on local Ray (issue 27): `--attention auto` gives the scores of
`--attention padded` (within the kernel-parity tolerance) and the summary names the path the probe
kept and the precision with its reason; CPU `--dtype auto` follows the CPU's bf16 features, and a
rerun on a CPU without them keeps the dtype OUTPUT was scored in."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from tests.helpers import publish_without_ray, read_output, tables_equal

pytestmark = pytest.mark.integration

STORAGE = Storage()
FLAGS = ["--max-length", "64", "--rows-per-call", "300", "--max-batch-tokens", "512"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two shards of 15 queries x 20 candidates, passages of 2 to 60 words."""
    root = tmp_path_factory.mktemp("kernels") / "in"
    root.mkdir()
    rng = np.random.default_rng(3)
    words = ["river", "Paris", "tower", "built", "1889", "kalo", "sen", "the", "is", "east"]
    for s in range(2):
        n = 300
        table = pa.table(
            {
                "query_id": [f"s{s}q{i // 20}" for i in range(n)],
                "query": [f"where is the {words[i % 10]} {i // 20}?" for i in range(n)],
                "doc_id": [f"s{s}d{i}" for i in range(n)],
                "passage": [" ".join(rng.choice(words, int(rng.integers(2, 60)))) for _ in range(n)],
            }
        )
        pq.write_table(table, root / f"part-{s}.parquet")
    return root


def kernels_of(out) -> dict:
    return STORAGE.read_json(str(out / "_SUCCESS"))["last_run"]["kernels"]


def test_attention_auto_scores_as_padded_and_the_summary_names_its_choices(
    ray_address, corpus, tmp_path, tiny_xlmr, caplog
):
    padded, auto = tmp_path / "padded", tmp_path / "auto"
    model = ModelConfig(name_or_path=tiny_xlmr, max_length=64, attention="padded")
    publish_without_ray(corpus, padded, model, InputConfig(uri=str(corpus)))  # the stages, no Ray
    with caplog.at_level(logging.INFO):
        assert main(["run", str(corpus), str(auto), "--model", tiny_xlmr, *FLAGS]) == 0
    tables_equal(read_output(padded), read_output(auto))  # scores within 1e-5, ranks the same
    k = kernels_of(auto)
    (path,) = k["attention"]  # one actor, one path
    assert path in ("padded", "unpadded") and k["reasons"]["attention"] == ["auto: measured"]
    (probe,) = [a["attention_probe"] for a in k["actors"].values()]
    assert probe["attention"] == path and set(probe["rates"]) == {"padded", "unpadded"}
    assert k["dtype"] == {"float32": 1}
    assert k["reasons"]["dtype"] == [
        "auto on CPU: float32, this CPU has no bf16 or AVX-512 features known ($RERANK_CPU_FLAGS)"
    ]
    assert k["compile"] == {"False": 1}
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kernels:")][-1]
    assert f"attention {path} (auto: measured)" in line and "precision float32 (auto on CPU" in line


def test_dtype_auto_is_bf16_where_the_cpu_has_it_and_a_rerun_keeps_it(
    ray_address, corpus, tmp_path, tiny_bert, monkeypatch, caplog
):
    out = tmp_path / "out"
    args = ["run", str(corpus), str(out), "--model", tiny_bert, *FLAGS]
    monkeypatch.setenv("RERANK_CPU_FLAGS", "avx512f avx512_bf16")
    assert main(args) == 0
    k = kernels_of(out)
    assert k["dtype"] == {"bfloat16": 1}
    assert k["reasons"]["dtype"] == ["auto on CPU: bfloat16, every core has AVX512-BF16 ($RERANK_CPU_FLAGS)"]
    success = STORAGE.read_json(str(out / "_SUCCESS"))
    assert success["fingerprint"]["dtype"] == "bfloat16"
    monkeypatch.setenv("RERANK_CPU_FLAGS", "")  # a CPU without bf16: auto alone would be float32
    (out / "_SUCCESS").unlink()  # a rerun that finds work to check (done shards are skipped)
    with caplog.at_level(logging.INFO):
        assert main(args) == 0  # not refused: the fingerprint is OUTPUT's
    assert any(
        "kept from OUTPUT's earlier run (it scored in bfloat16" in r.getMessage() for r in caplog.records
    )
    assert json.loads((out / "_SUCCESS").read_text())["fingerprint"]["dtype"] == "bfloat16"
