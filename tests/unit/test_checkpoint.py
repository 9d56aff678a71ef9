from pathlib import Path

import pytest

from pipeline.errors import OutputStateError
from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, paths

STORAGE = Storage()

FP = {"model": "m", "max_length": 512}


def test_foreign_output_refused(tmp_path: Path):
    (tmp_path / "someone-elses.parquet").write_bytes(b"x")
    with pytest.raises(OutputStateError, match="did not write"):
        checkpoint.prepare_output(STORAGE, str(tmp_path), FP, "d1", fresh=False)
    with pytest.raises(OutputStateError):
        checkpoint.prepare_output(STORAGE, str(tmp_path), FP, "d1", fresh=True)  # never deletes foreign files


def test_mismatch_names_fresh_and_the_change(tmp_path: Path):
    out = str(tmp_path / "out")
    checkpoint.prepare_output(STORAGE, out, FP, "d1", fresh=False)
    checkpoint.prepare_output(STORAGE, out, FP, "d1", fresh=False)  # same config resumes
    with pytest.raises(OutputStateError, match="--fresh") as err:
        checkpoint.prepare_output(STORAGE, out, {**FP, "max_length": 256}, "d2", fresh=False)
    assert "max_length: 512 -> 256" in str(err.value)


def test_fresh_discards_progress(tmp_path: Path):
    out = str(tmp_path / "out")
    checkpoint.prepare_output(STORAGE, out, FP, "d1", fresh=False)
    shard = ShardFile("in/a.parquet", "a.parquet", 10, "mtime=1")
    checkpoint.write_marker(STORAGE, out, shard, "d1", {"rows_in": 1, "rows_out": 1})
    checkpoint.prepare_output(STORAGE, out, {**FP, "max_length": 256}, "d2", fresh=True)
    assert checkpoint.load_done(STORAGE, out, [shard], "d2") == {}
    assert STORAGE.read_json(join(out, paths.RUN_MANIFEST))["digest"] == "d2"


def test_done_requires_same_digest_and_unchanged_input(tmp_path: Path):
    out = str(tmp_path)
    shard = ShardFile("in/x/a.parquet", "x/a.parquet", 10, "mtime=1")
    checkpoint.write_marker(STORAGE, out, shard, "d1", {"rows_in": 3, "rows_out": 3})
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.parquet").write_bytes(b"published")  # a done shard's output exists
    assert set(checkpoint.load_done(STORAGE, out, [shard], "d1")) == {"x/a.parquet"}
    assert checkpoint.load_done(STORAGE, out, [shard], "other") == {}
    changed = ShardFile(shard.uri, shard.relpath, 11, "mtime=2")
    assert checkpoint.load_done(STORAGE, out, [changed], "d1") == {}


def test_success_manifest_totals(tmp_path: Path):
    markers = [
        {"shard": "b.parquet", "rows_in": 5, "rows_out": 3, "tokens": 40, "padded_tokens": 50},
        {"shard": "a.parquet", "rows_in": 2, "rows_out": 2, "tokens": 10, "padded_tokens": 10},
    ]
    m = checkpoint.write_success(STORAGE, str(tmp_path), markers, FP, "d", {"wall_s": 1.0})
    assert [s["path"] for s in m["shards"]] == ["a.parquet", "b.parquet"]
    assert m["totals"]["rows_in"] == 7 and m["totals"]["rows_out"] == 5
    assert m["totals"]["padding_efficiency"] == 0.8333
    assert STORAGE.read_json(str(tmp_path / "_SUCCESS")) == m
