"""The whole job with LLM and layerwise rerankers: same stages, same pool, same output contract."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage
from pipeline.rerank.runner import run
from tests.helpers import job

pytestmark = pytest.mark.integration

STORAGE = Storage()


def write_golden_corpus(tmp_path, pairs, shards: int = 2):
    """The goldens' pairs as `shards` shards; 4 candidates per query id (q<i // 4>), doc d<i>."""
    (tmp_path / "in").mkdir()
    n = len(pairs)
    per_shard = -(-n // shards // 4) * 4  # whole queries per shard
    for s in range(shards):
        rows = list(range(s * per_shard, min(n, (s + 1) * per_shard)))
        table = pa.table(
            {
                "query_id": [f"q{i // 4}" for i in rows],  # a few candidates per query id
                "query": [pairs[i][0] for i in rows],
                "doc_id": [f"d{i}" for i in rows],
                "passage": [pairs[i][1] for i in rows],
                "extra": list(rows),
            }
        )
        pq.write_table(table, tmp_path / "in" / f"part-{s}.parquet")
    return tmp_path / "in"


def read_all(output) -> pa.Table:
    return pa.concat_tables(STORAGE.read_table(s.uri) for s in STORAGE.list_shards(str(output)))


def scored_rows(pairs):
    # FlagEmbedding scores an empty query; the job quarantines it (see test_bad_input.py)
    return [i for i, (q, p) in enumerate(pairs) if q.strip() and p.strip()]


def test_llm_reranker_job_matches_flagembedding(ray_address, tmp_path, tiny_gemma, decoder_goldens):
    (case,) = [c for c in decoder_goldens["cases"] if c["kind"] == "llm" and c["max_length"] == 512]
    pairs = decoder_goldens["pairs"]
    cfg = job(
        write_golden_corpus(tmp_path, pairs),
        tmp_path / "out",
        tiny_gemma,
        model={"max_length": 512},
        ranking={"normalize": True},
    )
    report = run(cfg)
    assert report.ok and report.shards_published == 2
    out = read_all(tmp_path / "out")
    scored = scored_rows(pairs)
    by_doc = {d: i for i, d in enumerate(out.column("doc_id").to_pylist())}
    assert set(by_doc) == {f"d{i}" for i in scored}
    ours = np.array([out.column("score")[by_doc[f"d{i}"]].as_py() for i in scored])
    np.testing.assert_allclose(ours, np.array(case["scores"][0])[scored], atol=1e-4, rtol=0)
    norm = np.array([out.column("score_norm")[by_doc[f"d{i}"]].as_py() for i in scored])
    np.testing.assert_allclose(norm, np.array(case["scores_normalized"][0])[scored], atol=1e-4)
    success = STORAGE.read_json(str(tmp_path / "out" / "_SUCCESS"))
    assert success["fingerprint"]["kind"] == "llm"


def test_layerwise_job_one_column_per_cutoff_layer(ray_address, tmp_path, tiny_layerwise, decoder_goldens):
    (case,) = [c for c in decoder_goldens["cases"] if c["cutoff_layers"] == [2, 4, 6]]
    pairs = decoder_goldens["pairs"]
    input_dir = write_golden_corpus(tmp_path, pairs)
    out_dir = tmp_path / "out"
    args = ["run", str(input_dir), str(out_dir), "--model", tiny_layerwise, "--cutoff-layers", "6,2,4"]
    assert main(args + ["--top-k", "3"]) == 0
    out = read_all(out_dir)
    assert out.column_names[-5:] == ["score", "rank", "score_l6", "score_l2", "score_l4"]
    np.testing.assert_array_equal(out.column("score").to_numpy(), out.column("score_l6").to_numpy())
    golden = dict(zip(case["cutoff_layers"], np.array(case["scores"])))
    for row in out.to_pylist():
        i = int(row["doc_id"][1:])
        for layer in (2, 4, 6):
            assert abs(row[f"score_l{layer}"] - golden[layer][i]) < 1e-4
    for qid in set(out.column("query_id").to_pylist()):  # top-3 by the first listed layer
        rows = [r for r in out.to_pylist() if r["query_id"] == qid]
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) <= 3
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # a rerun with the same options skips everything; other layers are another run's output
    assert main(args + ["--top-k", "3"]) == 0
    assert main(args[:-1] + ["6", "--top-k", "3"]) == 2
