"""Data safety on local Ray (issue 13): checks before writes, real failure reasons, every type the
contract accepts runs end to end, and a rerun redoes a published shard whose output was deleted."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage, join
from pipeline.rerank.output import paths
from tests.helpers import synthetic_records, write_jsonl

pytestmark = pytest.mark.integration

STORAGE = Storage()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_finetune_fresh_deletes_no_checkpoint_when_a_later_check_fails(
    ray_address, tmp_path, tiny_bert, caplog
):
    train = write_jsonl(tmp_path / "train.jsonl", synthetic_records(4, 3, seed=1))
    output = tmp_path / "model"
    checkpoints = tmp_path / "model.checkpoints"
    (checkpoints / "checkpoint_000001").mkdir(parents=True)
    (checkpoints / "checkpoint_000001" / "state.pt").write_bytes(b"weights")
    (checkpoints / "_finetune.json").write_text("{}")
    before = tree(checkpoints)
    args = ["finetune", "--train", str(train), "--model", tiny_bert, "--output", str(output)]
    assert main([*args, "--max-length", "48", "--fresh", "--precision", "float16"]) == 2
    assert "--precision float16 needs CUDA workers" in caplog.text
    assert tree(checkpoints) == before and not output.exists()


def test_unreadable_shard_fails_with_its_real_error(ray_address, tmp_path, tiny_bert, caplog):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    assert main(["run", str(inp), str(tmp_path / "out"), "--model", tiny_bert, "--max-length", "64"]) == 1
    assert "shard corrupt.parquet failed: cannot read the shard: ArrowInvalid" in caplog.text
    assert "magic bytes" in caplog.text and "unreadable Parquet footer" not in caplog.text


def test_large_string_and_dictionary_text_run_end_to_end(ray_address, tmp_path, tiny_bert):
    inp = tmp_path / "in"
    inp.mkdir()
    queries = ["kalo sun", "kalo sun", "ra vel", "ra vel"]
    passages = ["mi ter on", "zo pe", "dre is ka", "lo"]
    table = pa.table(
        {
            "query_id": pa.array([7, 7, 8, 8], pa.int32()),
            "query": pa.array(queries).dictionary_encode(),
            "doc_id": pa.array(["a", "b", "c", "d"], pa.large_string()),
            "passage": pa.array(passages, pa.large_string()),
        }
    )
    pq.write_table(table, inp / "part.parquet")
    out = tmp_path / "out"
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "64"]) == 0
    result = pq.read_table(out / "part.parquet")
    assert sorted(result.column("doc_id").to_pylist()) == ["a", "b", "c", "d"]
    assert result.schema.field("passage").type == pa.large_string()
    assert result.column("rank").to_pylist() == [1, 2, 1, 2]


def test_string_view_text_exits_2_before_any_write(ray_address, tmp_path, tiny_bert, caplog):
    inp = tmp_path / "in"
    inp.mkdir()
    view = pa.array(["kalo", "sun"], pa.string_view())
    pq.write_table(
        pa.table({"query_id": ["q", "q"], "query": view, "doc_id": ["a", "b"], "passage": view}),
        inp / "p.parquet",
    )
    out = tmp_path / "out"
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "64"]) == 2
    assert "column 'query' is string_view, not text (string); cast it to string" in caplog.text
    assert tree(out) == {}


def test_actors_the_local_ray_cannot_hold_exit_2_before_any_write(ray_address, tmp_path, tiny_bert, caplog):
    # the session's Ray has 2 CPUs, as the Ray `rerank run` starts on a 2-core machine: two scoring
    # actors (1 CPU each), the tokenizer (0.5) and a writer (0.25) would wait for room forever
    inp = tmp_path / "in"
    inp.mkdir()
    table = pa.table({"query_id": ["q"], "query": ["a"], "doc_id": ["d"], "passage": ["b"]})
    pq.write_table(table, inp / "p.parquet")
    out = tmp_path / "out"
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "64", "--actors", "2"]) == 2
    assert "the Ray this job started cannot hold the run's actors" in caplog.text
    assert "reserve 2.75 CPU at once" in caplog.text and "have 2 CPU in all" in caplog.text
    assert tree(out) == {}


def test_published_shard_whose_output_was_deleted_is_redone(
    ray_address, write_shards, tmp_path, tiny_bert, caplog
):
    inp = write_shards(n_shards=3, n_queries=2, candidates=3)
    out = tmp_path / "out"
    args = ["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "64"]
    assert main(args) == 0
    first = pq.read_table(out / "day=1" / "part-1.parquet")
    (out / "day=1" / "part-1.parquet").unlink()
    kept = {rel: (out / rel).stat().st_mtime_ns for rel in ("day=0/part-0.parquet", "day=0/part-2.parquet")}
    caplog.clear()
    assert main(args) == 0
    assert "day=1/part-1.parquet is missing (deleted?); redoing it" in caplog.text
    assert {rel: (out / rel).stat().st_mtime_ns for rel in kept} == kept  # the others: skipped as done
    again = pq.read_table(out / "day=1" / "part-1.parquet")
    assert again.drop_columns(["score"]) == first.drop_columns(["score"])
    manifest = STORAGE.read_json(join(str(out), paths.SUCCESS))
    assert [s["path"] for s in manifest["shards"]] == [
        "day=0/part-0.parquet",
        "day=0/part-2.parquet",
        "day=1/part-1.parquet",
    ]
