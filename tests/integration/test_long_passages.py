"""`--long-passages chunk` end to end on local Ray: the output of the stages run without Ray on the
same shards; the output columns, the window counts in `_SUCCESS`, the fingerprint. (A chunk-mode
run killed and resumed: tests/integration/test_family_jobs.py.)"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from tests.helpers import assert_reconciled, pairs_table, publish_without_ray, read_output, tables_equal

pytestmark = pytest.mark.integration

STORAGE = Storage()


def write_input(root):
    """Three shards of pairs_table's passages (lognormal lengths: many past 64 tokens) and one of
    an empty passage and a very long one (past --max-chunks)."""
    for s in range(3):
        path = root / f"part-{s}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pairs_table(3, 5, seed=s, prefix=f"s{s}q"), path, row_group_size=6)
    odd = pa.table(
        {
            "query_id": ["x", "x", "x"],
            "query": ["kalo sun"] * 3,
            "doc_id": ["empty", "huge", "short"],
            "passage": ["  ", "ka lo mi ter " * 400, "ra vel"],
            "extra": [1, 2, 3],
        }
    )
    pq.write_table(odd, root / "part-odd.parquet")


@pytest.mark.timeout(600)
def test_chunk_run_output_equals_the_stages_and_its_fingerprint(ray_address, tmp_path, tiny_bert, caplog):
    """A killed and resumed chunk-mode run: tests/integration/test_family_jobs.py (qwen3)."""
    input_dir, reference, out = tmp_path / "in", tmp_path / "reference", tmp_path / "out"
    write_input(input_dir)
    flags = ["--model", tiny_bert, "--max-length", "64", "--rows-per-call", "16"]
    chunk = ["--long-passages", "chunk", "--chunk-overlap", "8", "--max-chunks", "3"]
    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    columns = InputConfig(uri=str(input_dir), long_passages="chunk", chunk_overlap=8, max_chunks=3)
    publish_without_ray(input_dir, reference, model, columns)
    assert main(["run", str(input_dir), str(out), *flags, *chunk]) == 0
    tables_equal(read_output(reference), read_output(out))

    outputs, inputs = read_output(out), read_output(input_dir)
    for rel, table in outputs.items():
        extra = ["score", "rank", "chunks", "best_chunk_char"]
        assert table.column_names == inputs[rel].column_names + extra
        assert table.schema.field("chunks").type == pa.int16()
        assert table.schema.field("best_chunk_char").type == pa.int32()
    rows = [r for t in outputs.values() for r in t.to_pylist()]
    docs = {r["doc_id"] for t in inputs.values() for r in t.to_pylist()}
    assert {r["doc_id"] for r in rows} == docs - {"empty"}
    assert max(r["chunks"] for r in rows) == 3 and min(r["chunks"] for r in rows) == 1
    assert any(r["chunks"] > 1 and r["best_chunk_char"] > 0 for r in rows)
    assert all(r["best_chunk_char"] < len(r["passage"]) for r in rows)
    manifest = assert_reconciled(input_dir, out)
    totals = manifest["totals"]
    assert totals["rows_rejected"] == 1 and totals["windows_not_scored"] > 0
    assert totals["windows_scored"] == sum(r["chunks"] for r in rows)
    assert manifest["fingerprint"]["long_passages"] == {
        "mode": "chunk",
        "chunk_overlap": 8,
        "max_chunks": 3,
        "chunk_aggregate": "max",
    }

    # the chunk options are part of the fingerprint: truncate mode on this OUTPUT is refused
    caplog.clear()
    assert main(["run", str(input_dir), str(out), *flags]) == 2
    assert "long_passages" in caplog.text and "--fresh" in caplog.text
