"""Bad input never crashes the job or loses a row: it is scored, quarantined, or a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage, join
from pipeline.rerank.output import paths
from tests.helpers import assert_reconciled

pytestmark = pytest.mark.integration

STORAGE = Storage()


def test_messy_input_is_scored_quarantined_and_counted(ray_address, tmp_path, tiny_xlmr, caplog):
    inp = tmp_path / "in"
    inp.mkdir()
    huge = "kalo sun ra vel " * 65_000  # ~1 MB passage: truncated to max_length and scored
    messy = pa.table(
        {
            "query_id": ["q1", "q1", "q1", "q1", "q2", "q2", "q2", "q2", "q3"],
            "query": ["kalo", "kalo", "kalo", "kalo", "مرحبا بالعالم", "مرحبا بالعالم", None, "zo", "  "],
            "doc_id": ["d1", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"],
            "passage": [
                "ra vel on",
                "ra vel on",  # the same (query_id, doc_id) again: kept, scored, counted
                huge,
                "emoji 🙂🚀 and \u0000 control \u202e chars \t\n",
                "שלום עולם — RTL text",
                "",
                "no query",
                "café naïve 漢字",
                "empty query",
            ],
        }
    )
    pq.write_table(messy, inp / "messy.parquet")
    pq.write_table(messy.slice(0, 0), inp / "empty.parquet")  # 0 rows, same schema
    out = tmp_path / "out"
    assert main(["run", str(inp), str(out), "--model", tiny_xlmr, "--max-length", "128"]) == 0

    manifest = assert_reconciled(inp, out)
    totals = manifest["totals"]
    assert (totals["rows_in"], totals["rows_out"], totals["rows_rejected"]) == (9, 6, 3)
    assert totals["duplicate_pairs"] == 1
    assert "3 row(s) had a null query id or a null or empty query/passage" in caplog.text
    scored = pq.read_table(out / "messy.parquet")
    assert not np.isnan(scored.column("score").to_numpy()).any()
    assert sorted(scored.column("doc_id").to_pylist()) == ["d1", "d1", "d2", "d3", "d4", "d7"]
    quarantine = pq.read_table(out / "_rejected" / "messy.parquet")
    assert dict(
        zip(quarantine.column("doc_id").to_pylist(), quarantine.column("reject_reason").to_pylist())
    ) == {
        "d5": "empty passage",
        "d6": "null query",
        "d8": "empty query",
    }
    empty = pq.read_table(out / "empty.parquet")
    assert empty.num_rows == 0 and empty.column_names == messy.column_names + ["score", "rank"]
    assert {s["path"] for s in manifest["shards"]} == {"messy.parquet", "empty.parquet"}


def _shard(path: Path, query_ids: list[str]) -> None:
    n = len(query_ids)
    pq.write_table(
        pa.table(
            {
                "query_id": query_ids,
                "query": ["kalo"] * n,
                "doc_id": [f"d{i}" for i in range(n)],
                "passage": ["ra vel"] * n,
            }
        ),
        path,
    )


def test_query_split_across_shards_is_refused_unless_allowed(ray_address, tmp_path, tiny_bert, caplog):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    _shard(inp / "a.parquet", ["q1", "q1", "q2"])
    _shard(inp / "b.parquet", ["q2", "q3"])
    args = ["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "128"]
    assert main(args) == 2
    assert "'q2' in a.parquet, b.parquet" in caplog.text and "--allow-split-queries" in caplog.text
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))  # nothing written
    assert main([*args, "--allow-split-queries"]) == 0
    assert STORAGE.read_json(join(str(out), paths.SUCCESS))["last_run"]["split_queries"] == 1


def test_new_shard_sharing_a_query_with_a_published_one_is_caught(ray_address, tmp_path, tiny_bert, caplog):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    _shard(inp / "a.parquet", ["q1", "q2"])
    args = ["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "128"]
    assert main(args) == 0
    _shard(inp / "b.parquet", ["q9", "q2"])  # arrives later; a.parquet is done and not re-read
    assert main(args) == 2
    assert "in a.parquet, b.parquet" in caplog.text


def test_an_all_null_passage_column_is_quarantined_row_by_row(ray_address, tmp_path, tiny_bert):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    nulls = pa.table(
        {
            "query_id": ["q1", "q1", "q2"],
            "query": ["kalo"] * 3,
            "doc_id": ["d1", "d2", "d3"],
            "passage": pa.nulls(3),  # a writer that saw only nulls: the column's type is null
        }
    )
    pq.write_table(nulls, inp / "nulls.parquet")
    _shard(inp / "ok.parquet", ["q3", "q3"])
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "128"]) == 0

    totals = assert_reconciled(inp, out)["totals"]
    assert (totals["rows_in"], totals["rows_out"], totals["rows_rejected"]) == (5, 2, 3)
    quarantine = pq.read_table(out / "_rejected" / "nulls.parquet")
    assert quarantine.column("doc_id").to_pylist() == ["d1", "d2", "d3"]
    assert quarantine.column("reject_reason").to_pylist() == ["null passage"] * 3
    published = pq.read_table(out / "nulls.parquet")
    assert published.num_rows == 0 and published.column_names == nulls.column_names + ["score", "rank"]
    assert pq.read_table(out / "ok.parquet").num_rows == 2


def test_dictionary_query_ids_come_out_in_first_appearance_order(ray_address, tmp_path, tiny_bert):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    # rows of q0, q1, q2 in this order; the dictionary lists them q2, q1, q0 (kept by Parquet)
    ids = pa.DictionaryArray.from_arrays(pa.array([2, 2, 1, 1, 0, 0], pa.int32()), ["q2", "q1", "q0"])
    table = pa.table(
        {
            "query_id": ids,
            "query": ["kalo"] * 6,
            "doc_id": [f"d{i}" for i in range(6)],
            "passage": ["ra vel", "kalo sun", "vel on", "sun ra", "on kalo", "ra ra"],
        }
    )
    pq.write_table(table, inp / "dict.parquet")
    assert main(["run", str(inp), str(out), "--model", tiny_bert, "--max-length", "128"]) == 0
    ranked = pq.read_table(out / "dict.parquet")
    assert ranked.column("query_id").to_pylist() == ["q0", "q0", "q1", "q1", "q2", "q2"]
    assert ranked.column("rank").to_pylist() == [1, 2] * 3
