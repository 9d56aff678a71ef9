"""Data safety without Ray: every check comes before any write, fails fast with the fix, and the
job never deletes what it did not write (issue 13). Runs of `rerank run` here must stop before
joining Ray: the `no_ray` fixture turns reaching it into a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.demo.processes import free_port
from pipeline.errors import ConfigError, InputContractError
from pipeline.io import ShardFile, Storage, join, location, storage_error
from pipeline.models.limits import position_limit
from pipeline.rerank import prepare as rerank_prepare
from pipeline.rerank.config import InputConfig, load_config
from pipeline.rerank.input.discovery import _is_id, check_pending, contract_problems
from pipeline.rerank.input.quarantine import duplicate_pairs, reject_reasons, split_rejected
from pipeline.rerank.input.split_queries import query_id_hashes
from pipeline.rerank.output import checkpoint
from pipeline.rerank.output.ranking import rank_table

STORAGE = Storage()
FP = {"model": "m", "max_length": 512}


@pytest.fixture
def no_ray(monkeypatch):
    """`rerank run` must fail before it joins Ray (and so before any write or scoring)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("reached connect_ray: the check did not fail first")

    monkeypatch.setattr(rerank_prepare, "connect_ray", refuse)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def shard_schema(**types: pa.DataType) -> pa.Schema:
    base = {"query_id": pa.string(), "query": pa.string(), "doc_id": pa.string(), "passage": pa.string()}
    return pa.schema(list({**base, **types}.items()))


SHARD = ShardFile("in/a.parquet", "a.parquet", 1, "mtime=1")
COLUMNS = InputConfig(uri="in")


# --- 2: every column the job writes is reserved ---------------------------------------------------


def test_every_column_the_job_writes_is_reserved_in_the_input():
    schema = shard_schema(score_l28=pa.float32(), score_l28_norm=pa.float32(), reject_reason=pa.string())
    problems = contract_problems(SHARD, schema, COLUMNS, ["score_l28", "score_l40"])
    assert [p.split("column ")[1].split(",")[0] for p in problems] == [
        "'score_l28'",
        "'score_l28_norm'",
        "'reject_reason'",
    ]
    assert contract_problems(SHARD, schema, COLUMNS, ["score"]) == problems[2:]  # no layer columns then
    with pytest.raises(ConfigError, match="'reject_reason' clashes"):
        load_config(
            None,
            {
                "input": {"uri": "i", "doc_id_column": "reject_reason"},
                "output": {"uri": "o"},
                "model": {"name_or_path": "m"},
            },
        )


# --- 3: an unreadable shard carries its real error ------------------------------------------------


def test_unreadable_shard_keeps_its_real_error(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (pending,) = check_pending(STORAGE, STORAGE.list_shards(str(tmp_path)), COLUMNS, ["score"])
    assert pending.num_rows == -1
    assert pending.error is not None and "ArrowInvalid" in pending.error and "magic bytes" in pending.error


# --- 4: types that pass the check are types the job handles ---------------------------------------


def test_types_the_job_cannot_handle_are_refused_up_front(tmp_path):
    tables = {
        "view.parquet": {"query": pa.array(["q"], pa.string_view())},
        "struct-qid.parquet": {"query_id": pa.array([{"a": 1}])},
        "list-doc.parquet": {"doc_id": pa.array([[1]])},
        "map-doc.parquet": {"doc_id": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))},
        "view-extra.parquet": {"extra": pa.array(["x"], pa.string_view())},
    }
    for name, columns in tables.items():
        base = {"query_id": ["a"], "query": ["q"], "doc_id": ["d"], "passage": ["p"]}
        pq.write_table(pa.table({**base, **columns}), tmp_path / name)
    with pytest.raises(InputContractError) as err:
        check_pending(STORAGE, STORAGE.list_shards(str(tmp_path)), COLUMNS, ["score"])
    text = str(err.value)
    assert "view.parquet' column 'query' is string_view, not text (string); cast it to string" in text
    assert "struct-qid.parquet' column 'query_id' is struct<a: int64>, not a scalar id" in text
    assert "list-doc.parquet' column 'doc_id' is list<element: int64>, not a scalar id" in text
    assert "map-doc.parquet' column 'doc_id' is map<string, int64" in text
    assert "view-extra.parquet' column 'extra' is string_view, which the job cannot carry" in text


def test_text_as_large_string_or_dictionary_passes_the_check(tmp_path):
    table = pa.table(
        {
            "query_id": pa.array([1, 1], pa.int32()),
            "query": pa.array(["q", "q"], pa.large_string()),
            "doc_id": pa.array(["d1", "d2"]).dictionary_encode(),
            "passage": pa.array(["p", "r"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    (pending,) = check_pending(STORAGE, STORAGE.list_shards(str(tmp_path)), COLUMNS, ["score"])
    assert pending.num_rows == 2 and len(pending.query_hashes) == 1


@pytest.mark.parametrize("column", ["query", "passage"])
def test_an_all_null_text_column_passes_the_check_to_the_quarantine(column, tmp_path):
    # a writer that saw only nulls stores the column as type null: each row is a null text,
    # quarantined and counted like any other, not a reason to refuse the whole run
    table = pa.table({"query_id": ["a"] * 2, "query": ["q"] * 2, "doc_id": ["d", "e"], "passage": ["p"] * 2})
    table = table.set_column(table.schema.get_field_index(column), column, pa.nulls(2))
    pq.write_table(table, tmp_path / "a.parquet")
    (pending,) = check_pending(STORAGE, STORAGE.list_shards(str(tmp_path)), COLUMNS, ["score"])
    assert pending.num_rows == 2
    read = STORAGE.read_table(pending.shard.uri)
    assert read.schema.field(column).type == pa.null()
    queries, passages = read.column("query").to_pylist(), read.column("passage").to_pylist()
    assert reject_reasons(queries, passages, "query", "passage") == [f"null {column}"] * 2


@pytest.mark.parametrize(
    "ids",
    [
        pa.array([3, 3, 4], pa.int64()),
        pa.array([3, 3, 4], pa.uint16()),
        pa.array(["a", "a", "b"], pa.large_string()),
        pa.array(["a", "a", "b"]).dictionary_encode(),
        pa.array([b"a", b"a", b"b"]),
        pa.array([b"a", b"a", b"b"], pa.binary(1)),
        pa.array([1, 1, 2], pa.date32()),
        pa.array([1, 1, 2], pa.timestamp("ms")),
        pa.array([1.5, 1.5, 2.5]),
    ],
    ids=lambda a: str(a.type),
)
def test_every_accepted_id_type_goes_through_hashing_ranking_and_quarantine(ids, tmp_path):
    assert _is_id(ids.type)
    table = pa.table({"query_id": ids, "doc_id": ids, "passage": ["x", "y", "z"]})
    assert len(query_id_hashes(table.column("query_id"))) == 2
    assert duplicate_pairs(table, "query_id", "doc_id") == 1
    keep, rejected = split_rejected(table, np.array([2]), ["empty passage"])
    ranked = rank_table(table.filter(pa.array(keep)), np.array([0.1, 0.9], np.float32), "query_id")
    assert ranked.column("rank").to_pylist() == [1, 2]
    pq.write_table(ranked, tmp_path / "out.parquet")
    pq.write_table(rejected, tmp_path / "rejected.parquet")


def test_a_null_query_id_is_a_reject_reason_when_ids_are_given():
    assert reject_reasons(["q", "q"], ["p", "p"], "query", "passage", query_ids=[None, "a"]) == [
        "null query_id",
        None,
    ]
    assert reject_reasons(["q"], ["p"], "query", "passage") == [None]  # without ids: as before


# --- 5: --fresh removes only what the job wrote --------------------------------------------------


def test_fresh_keeps_files_the_job_did_not_write(tmp_path):
    out = tmp_path / "out"
    checkpoint.prepare_output(STORAGE, str(out), FP, "d1", fresh=False)
    shard = ShardFile("in/day=0/a.parquet", "day=0/a.parquet", 10, "mtime=1")
    marker = checkpoint.write_marker(STORAGE, str(out), shard, "d1", {"rows_in": 1, "rows_out": 1})
    STORAGE.write_parquet_atomic(str(out / "day=0" / "a.parquet"), pa.table({"a": [1]}))
    STORAGE.write_parquet_atomic(str(out / "_rejected" / "day=0" / "a.parquet"), pa.table({"a": [2]}))
    checkpoint.write_success(STORAGE, str(out), [marker], FP, "d1", {})
    (out / "day=0" / ".tmp-0123456789abcdef0123456789abcdef-a.parquet").write_bytes(b"half")
    (out / "_rerank" / "lease.json").write_text("{}")
    mine = {"NOTES.md": b"my notes", "analysis/eval.csv": b"q,ndcg\n", ".git/HEAD": b"ref: main\n"}
    mine |= {".git/objects/ab/cdef": b"blob", "day=0/notes.txt": b"next to a shard"}
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)

    checkpoint.prepare_output(STORAGE, str(out), {**FP, "max_length": 256}, "d2", fresh=True)

    left = tree(out)
    assert {rel: left[rel] for rel in mine} == mine
    assert sorted(set(left) - set(mine)) == ["_rerank/lease.json", "_rerank/run.json"]
    assert json.loads(left["_rerank/run.json"])["digest"] == "d2"


# --- 6: INPUT and OUTPUT compared as the locations they resolve to -------------------------------


@pytest.mark.parametrize("spelling", ["relative-input", "symlinked-output"])
def test_output_inside_input_exits_2_without_writing(
    spelling, no_ray, write_shards, tmp_path, tiny_bert, monkeypatch, caplog
):
    write_shards(n_shards=1, root=tmp_path / "in" / "ov")
    monkeypatch.chdir(tmp_path)
    if spelling == "relative-input":
        args = ["in/ov", str(tmp_path / "in" / "ov" / "out")]
    else:
        (tmp_path / "alias").symlink_to(tmp_path / "in")
        args = [str(tmp_path / "in" / "ov"), str(tmp_path / "alias" / "ov" / "out")]
    before = tree(tmp_path / "in")
    assert main(["run", *args, "--model", tiny_bert]) == 2
    assert "overlap" in caplog.text
    assert tree(tmp_path / "in") == before  # no file written (in OUTPUT either: it is inside)


def test_input_inside_output_given_absolute_against_relative_output(
    no_ray, write_shards, tmp_path, tiny_bert, monkeypatch, caplog
):
    out = tmp_path / "out"
    checkpoint.prepare_output(STORAGE, str(out), FP, "d1", fresh=False)  # an earlier run's OUTPUT
    write_shards(n_shards=1, root=out / "in")
    (out / "part.parquet").write_bytes(b"published")
    monkeypatch.chdir(tmp_path)
    before = tree(out)
    for extra in ([], ["--fresh"]):
        assert main(["run", str(out / "in"), "out", "--model", tiny_bert, *extra]) == 2
        assert tree(out) == before  # --fresh deleted nothing
    assert "overlap" in caplog.text


@pytest.mark.parametrize("target", ["output", "inside-output", "output-not-there-yet", "via-elsewhere"])
def test_a_link_in_input_leading_into_output_exits_2_without_writing(
    target, no_ray, write_shards, tmp_path, tiny_bert, caplog
):
    inp, out = write_shards(n_shards=1, root=tmp_path / "in"), tmp_path / "out"
    if target != "output-not-there-yet":  # an earlier run's OUTPUT, with a published shard
        checkpoint.prepare_output(STORAGE, str(out), FP, "d1", fresh=False)
        write_shards(n_shards=1, root=out / "day")
    link = inp / "linked"
    if target == "via-elsewhere":  # a link to a directory outside both, which links into OUTPUT
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "deeper").symlink_to(out)
        link.symlink_to(tmp_path / "elsewhere")
        link = link / "deeper"
    else:
        link.symlink_to(out / "day" if target == "inside-output" else out)
    before = {root: tree(root) for root in (inp, tmp_path / "elsewhere", out) if root.exists()}
    assert main(["run", str(inp), str(out), "--model", tiny_bert]) == 2
    assert f"INPUT entry {str(link)!r} leads into OUTPUT" in caplog.text and "remove the link" in caplog.text
    assert {root: tree(root) for root in before} == before  # nothing written, no lease taken
    assert target != "output-not-there-yet" or not out.exists()


def test_object_store_locations_compare_bucket_and_normalised_prefix():
    assert location("s3://b//runs/day/") == location("s3a://b/runs/day") == "s3://b/runs/day"
    assert location("gs://b/x/") == "gs://b/x" != location("s3://b/x")


# --- 7: a done shard whose output is gone is redone ------------------------------------------------


def test_done_shard_without_its_output_is_redone(tmp_path):
    out = str(tmp_path / "out")
    shard = ShardFile("in/x/a.parquet", "x/a.parquet", 10, "mtime=1")
    checkpoint.write_marker(STORAGE, out, shard, "d1", {"rows_in": 3, "rows_out": 3})
    STORAGE.write_parquet_atomic(join(out, "x/a.parquet"), pa.table({"a": [1]}))
    assert set(checkpoint.load_done(STORAGE, out, [shard], "d1", STORAGE.list_files(out))) == {"x/a.parquet"}
    os.remove(join(out, "x/a.parquet"))
    assert checkpoint.load_done(STORAGE, out, [shard], "d1", STORAGE.list_files(out)) == {}


# --- 8: symlinked directories in a local INPUT are followed, once -----------------------------------


def test_listing_follows_symlinked_directories_once_and_survives_loops(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), elsewhere / "deep" / "x.parquet")
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    pq.write_table(pa.table({"a": [2]}), root / "real" / "y.parquet")
    (root / "linked").symlink_to(elsewhere)  # a symlinked directory: followed
    (root / "again").symlink_to(elsewhere)  # the same directory twice: listed once
    (root / "real" / "up").symlink_to(root)  # a loop back up the tree: not followed
    (root / "real" / "file.parquet").symlink_to(elsewhere / "deep" / "x.parquet")  # same file: once
    shards = STORAGE.list_shards(str(root))
    assert [s.relpath for s in shards] == ["again/deep/x.parquet", "real/y.parquet"]
    assert shards[0].size == (elsewhere / "deep" / "x.parquet").stat().st_size
    assert STORAGE.read_table(shards[0].uri).column("a").to_pylist() == [1]


# --- 9: messages that point at the real fix ----------------------------------------------------------


def test_read_only_local_output_names_permissions_not_credentials(
    no_ray, write_shards, tmp_path, tiny_bert, monkeypatch, caplog
):
    inp = write_shards(n_shards=1)
    error = storage_error(str(tmp_path / "out"), "OUTPUT", PermissionError(13, "Permission denied", "/x"))
    assert "not writable" in str(error) and "AWS" not in str(error)
    monkeypatch.setattr("pipeline.io.os.access", lambda path, mode: False)  # root ignores chmod
    assert main(["run", str(inp), str(tmp_path / "out"), "--model", tiny_bert]) == 2
    assert "is not writable by this user" in caplog.text and "AWS" not in caplog.text


def test_output_that_is_a_file_exits_2(no_ray, write_shards, tmp_path, tiny_bert, caplog):
    inp = write_shards(n_shards=1)
    (tmp_path / "out.parquet").write_bytes(b"x")
    assert main(["run", str(inp), str(tmp_path / "out.parquet"), "--model", tiny_bert]) == 2
    assert "is a file, not a directory" in caplog.text


@pytest.mark.parametrize("model", ["models/rerankers/nope", "/no/such/model", "file:///no/such/model"])
def test_missing_local_model_directory_names_it(model, no_ray, write_shards, tmp_path, caplog):
    inp = write_shards(n_shards=1)
    assert main(["run", str(inp), str(tmp_path / "out"), "--model", model]) == 2
    assert "no such model directory" in caplog.text and "check --model" in caplog.text
    assert "Repo id" not in caplog.text and tree(tmp_path / "out") == {}


def test_config_naming_a_directory_exits_2(no_ray, tmp_path, tiny_bert, caplog):
    assert main(["run", "in", "out", "--model", tiny_bert, "--config", str(tmp_path)]) == 2
    assert "is a directory" in caplog.text


# --- 10: fail fast before any scoring -----------------------------------------------------------------


def test_max_length_beyond_the_position_table_exits_2(no_ray, write_shards, tmp_path, tiny_bert, caplog):
    inp = write_shards(n_shards=1)
    args = ["run", str(inp), str(tmp_path / "out"), "--model", tiny_bert, "--max-length", "100000"]
    assert main(args) == 2
    assert "--max-length 100000 exceeds" in caplog.text and "--max-length 512 or less" in caplog.text
    assert tree(tmp_path / "out") == {}


def test_position_limit_counts_xlmr_padding_offset(tiny_xlmr, tiny_bert):
    xlmr = json.loads((Path(tiny_xlmr) / "config.json").read_text())
    assert position_limit(xlmr) == xlmr["max_position_embeddings"] - xlmr["pad_token_id"] - 1
    assert position_limit(json.loads((Path(tiny_bert) / "config.json").read_text())) == 512


def test_ray_address_nobody_answers_exits_2_naming_it(write_shards, tmp_path, tiny_bert):
    # its own process: this one may already be connected to the integration tests' Ray
    inp = write_shards(n_shards=1)
    address = f"127.0.0.1:{free_port()}"
    args = ["run", str(inp), str(tmp_path / "out"), "--model", tiny_bert, "--ray-address", address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"no Ray cluster answers at {address!r}" in done.stderr and "--ray-address" in done.stderr
