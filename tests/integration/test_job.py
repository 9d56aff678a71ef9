"""The whole job on local Ray: invariants, resume, kill-and-resume, fingerprint mismatch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage
from pipeline.rerank.runner import run
from tests.helpers import assert_output_invariants, job, read_output

pytestmark = pytest.mark.integration

STORAGE = Storage()


def test_multi_shard_run_end_to_end(ray_address, write_shards, tmp_path, tiny_bert):
    input_dir = write_shards(n_shards=4, n_queries=5, candidates=6)
    out = tmp_path / "out"
    report = run(job(input_dir, out, tiny_bert, scoring={"rows_per_call": 16, "max_batch_tokens": 512}))
    assert report.ok and report.shards_published == 4
    assert_output_invariants(input_dir, out)
    manifest = STORAGE.read_json(str(out / "_SUCCESS"))
    assert manifest["totals"]["rows_in"] == manifest["totals"]["rows_out"] == 4 * 5 * 6
    assert [s["path"] for s in manifest["shards"]] == sorted(read_output(out))
    assert manifest["fingerprint"]["model"] == tiny_bert
    assert 0 < manifest["totals"]["padding_efficiency"] <= 1
    assert manifest["last_run"]["pairs_scored"] == 120

    # a rerun after success does no scoring and rewrites no shard
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = run(job(input_dir, out, tiny_bert))
    assert again.shards_skipped == 4 and again.shards_published == 0
    # no scoring phase at all: only that phase puts pairs_scored (even 0) in the summary
    assert "pairs_scored" not in again.summary, again.summary
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


def test_job_scores_match_flagembedding(ray_address, tmp_path, tiny_xlmr, goldens):
    (case,) = [c for c in goldens["cases"] if c["model"] == "tiny-xlmr" and c["max_length"] == 512]
    pairs = goldens["pairs"]
    table = pa.table(
        {
            "query_id": [f"q{i}" for i in range(len(pairs))],
            "query": [p[0] for p in pairs],
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "passage": [p[1] for p in pairs],
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "golden.parquet")
    args = ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--model", tiny_xlmr, "--max-length", "512"]
    assert main([*args, "--normalize"]) == 0  # score_norm: FlagEmbedding's normalize=True
    out = STORAGE.read_table(str(tmp_path / "out" / "golden.parquet"))
    by_doc = dict(zip(out.column("doc_id").to_pylist(), out.column("score").to_pylist()))
    norm = dict(zip(out.column("doc_id").to_pylist(), out.column("score_norm").to_pylist()))
    # FlagEmbedding scores an empty query; the job quarantines it (see test_bad_input.py)
    scored = [i for i, (q, p) in enumerate(pairs) if q.strip() and p.strip()]
    assert len(scored) == len(pairs) - 1 and set(by_doc) == {f"d{i}" for i in scored}
    ours = np.array([by_doc[f"d{i}"] for i in scored])
    np.testing.assert_allclose(ours, np.array(case["scores"])[scored], atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        [norm[f"d{i}"] for i in scored], np.array(case["scores_normalized"])[scored], atol=1e-4, rtol=0
    )


def test_config_mismatch_exits_2_naming_fresh(finished_copy, caplog):
    args, out = finished_copy["args"], finished_copy["output"]  # a finished run with --max-length 128
    assert main([*args, "--max-length", "64"]) == 2
    assert "--fresh" in caplog.text and "max_length: 128 -> 64" in caplog.text
    assert main([*args, "--max-length", "64", "--fresh"]) == 0
    assert STORAGE.read_json(str(out / "_SUCCESS"))["fingerprint"]["max_length"] == 64


def test_bad_model_and_missing_column_exit_2_before_any_work(
    ray_address, write_shards, tmp_path, tiny_bert, caplog
):
    input_dir = write_shards(n_shards=1)
    out = tmp_path / "out"
    assert main(["run", str(input_dir), str(out), "--model", str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in caplog.text
    assert main(["run", str(input_dir), str(out), "--model", tiny_bert, "--passage-column", "body"]) == 2
    assert "has no column 'body'" in caplog.text and "--passage-column" in caplog.text
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))  # nothing written


def test_corrupt_shard_fails_alone(ray_address, write_shards, tmp_path, tiny_bert, caplog):
    input_dir = write_shards(n_shards=3)
    (input_dir / "zz-corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "out"
    assert main(["run", str(input_dir), str(out), "--model", tiny_bert, "--max-length", "128"]) == 1
    assert "zz-corrupt.parquet failed" in caplog.text
    assert len(read_output(out)) == 3 and not (out / "_SUCCESS").exists()
    (input_dir / "zz-corrupt.parquet").unlink()
    assert main(["run", str(input_dir), str(out), "--model", tiny_bert, "--max-length", "128"]) == 0
    assert (out / "_SUCCESS").exists()
