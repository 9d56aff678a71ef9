import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputContractError
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.discovery import check_pending, find_shards

STORAGE = Storage()


def test_listing_is_recursive_sorted_and_skips_bookkeeping(tmp_path):
    for rel in [
        "b/2.parquet",
        "a/1.parquet",
        "a/_tmp/x.parquet",
        ".hidden.parquet",
        "notes.txt",
        "_SUCCESS",
        "c.parquet",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert [s.relpath for s in STORAGE.list_shards(str(tmp_path))] == [
        "a/1.parquet",
        "b/2.parquet",
        "c.parquet",
    ]
    single = STORAGE.list_shards(str(tmp_path / "c.parquet"))
    assert [s.relpath for s in single] == ["c.parquet"] and single[0].size == 1
    assert STORAGE.list_shards(f"file://{tmp_path}")[0].relpath == "a/1.parquet"


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(InputContractError, match="no Parquet shards"):
        find_shards(STORAGE, str(tmp_path))


def test_contract_lists_every_problem_with_the_flag(tmp_path):
    pq.write_table(
        pa.table({"qid": ["a"], "query": ["q"], "docid": ["d"], "body": ["p"]}), tmp_path / "one.parquet"
    )
    pq.write_table(
        pa.table({"query_id": ["a"], "query": ["q"], "doc_id": ["d"], "passage": [3]}),
        tmp_path / "two.parquet",
    )
    with pytest.raises(InputContractError) as err:
        check_pending(STORAGE, STORAGE.list_shards(str(tmp_path)), InputConfig(uri=str(tmp_path)), ["score"])
    text = str(err.value)
    assert (
        "one.parquet' has no column 'passage' (found: qid, query, docid, body); set --passage-column" in text
    )
    assert "--query-id-column" in text and "--doc-id-column" in text
    assert "two.parquet' column 'passage' is int64, not text" in text


def test_unreadable_footer_is_pending_not_fatal(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    (pending,) = check_pending(
        STORAGE, STORAGE.list_shards(str(tmp_path)), InputConfig(uri=str(tmp_path)), ["score"]
    )
    assert pending.num_rows == -1


def test_atomic_writes_leave_no_temp_files(tmp_path):
    STORAGE.write_json_atomic(str(tmp_path / "d" / "x.json"), {"a": 1})
    STORAGE.write_parquet_atomic(str(tmp_path / "d" / "y.parquet"), pa.table({"a": [1]}))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.json", "y.parquet"]
    assert STORAGE.read_json(str(tmp_path / "missing.json")) is None
