"""A full disk (or quota) under OUTPUT, without Ray: a failed local write leaves no temp file
holding the space, the run report's write says what is wrong, a writer names the full disk in the
shard's reason and writes nothing more of its batch, the publisher hands out nothing more, and the
run's last line names the disk and the fix."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from jobs.rerank import finish
from pipeline.io import ShardFile, Storage, storage_error
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.output import paths
from pipeline.rerank.report import run_report
from pipeline.rerank.runner import RunReport, outcome_of
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import WriteSettings, publish_shards
from pipeline.rerank.stream import publisher as publisher_module
from pipeline.rerank.stream.publisher import ShardPublisher
from tests.helpers import batch_of, job, write_inputs

STORAGE = Storage()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


class FullDisk:
    """os.fsync failing with ENOSPC (EDQUOT) from the `after`-th sync on: what a full disk does
    to a write that has put its bytes in a file."""

    def __init__(self, after: int = 0, code: int = errno.ENOSPC) -> None:
        self.after, self.code, self.calls = after, code, 0
        self._fsync = os.fsync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise OSError(self.code, os.strerror(self.code))
        self._fsync(fd)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("write", ["parquet", "json", "text", "create"])
def test_a_failed_local_write_removes_its_temp_file(tmp_path, monkeypatch, write, code):
    monkeypatch.setattr(os, "fsync", FullDisk(code=code))
    target = str(tmp_path / "out" / "part-0.x")
    calls = {
        "parquet": lambda: STORAGE.write_parquet_atomic(target, pa.table({"a": [1, 2]})),
        "json": lambda: STORAGE.write_json_atomic(target, {"a": 1}),
        "text": lambda: STORAGE.write_text_atomic(target, "<html>"),
        "create": lambda: STORAGE.create_json_local(target, {"a": 1}),
    }
    with pytest.raises(OSError) as err:
        calls[write]()
    assert err.value.errno == code
    assert not temp_files(tmp_path) and not os.path.exists(target)
    message = str(storage_error(str(tmp_path / "out"), "OUTPUT", err.value))
    assert "is full" in message and "free space there" in message


def test_a_failed_rename_removes_its_temp_file(tmp_path, monkeypatch):
    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        STORAGE.write_json_atomic(str(tmp_path / "a.json"), {"a": 1})
    assert not temp_files(tmp_path) and not (tmp_path / "a.json").exists()


def test_the_run_report_on_a_full_disk_is_a_warning_naming_it_and_leaves_no_temp_file(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(run_report, "render_html", lambda data: "<html></html>")
    out = tmp_path / "out"
    for after in (0, 1):  # report.json fails; report.json written, report.html fails
        monkeypatch.setattr(os, "fsync", FullDisk(after=after))
        caplog.clear()
        run_report.publish_report(STORAGE, str(out), {"version": 1, "outcome": "complete"})
        warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warning) == 1 and "is full: free space there" in warning[0]
        assert not temp_files(tmp_path)
    assert not (out / paths.REPORT_HTML).exists()


def test_a_writer_on_a_full_disk_names_it_and_writes_nothing_more_of_its_batch(tmp_path, monkeypatch):
    shards = write_inputs(tmp_path, 3)
    out = tmp_path / "out"
    settings = WriteSettings(STORAGE, str(out), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d")
    full = FullDisk(after=2)  # the first shard and its marker fit; the second shard does not
    monkeypatch.setattr(os, "fsync", full)
    results = publish_shards(batch_of(shards), settings)
    assert results[0][1] is not None and results[0][2] is None
    (_, marker, first), (_, marker2, second) = results[1], results[2]
    assert marker is None and marker2 is None
    assert first is not None and f"OUTPUT {str(out)!r}" in first and "is full: free space there" in first
    assert second is not None and second.startswith("not published") and "is full" in second
    assert full.calls == 3  # the third shard was not tried: it would only have filled the disk again
    assert not temp_files(tmp_path)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-0.parquet"]


class FakeWriters:
    """Stand-in writer actors: `publish.remote(batch)` records the batch and returns a ref that
    `ray.get` (patched) answers with the results the test set for it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.results: dict[int, list[tuple[str, dict | None, str | None]]] = {}
        self.publish = self

    def remote(self, batch: list[Any]) -> int:
        self.batches.append([shard.relpath for shard, _, _ in batch])
        return len(self.batches)


def shard(i: int) -> tuple[ShardFile, ShardScores]:
    return ShardFile(f"/in/part-{i}.parquet", f"part-{i}.parquet", 1, "v"), ShardScores.empty(4)


def test_the_publisher_hands_out_nothing_more_once_the_disk_is_full(tmp_path, monkeypatch):
    writers = FakeWriters()
    monkeypatch.setattr(publisher_module.ray, "wait", lambda refs, **_: (list(refs), []))
    monkeypatch.setattr(publisher_module.ray, "get", lambda ref: writers.results[ref])
    out = str(tmp_path / "out")
    published: list[dict] = []
    p = ShardPublisher(
        settings=WriteSettings(STORAGE, out, InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d"),
        query_id_hashes={f"part-{i}.parquet": np.zeros(1, np.uint64) for i in range(4)},
        on_published=published.append,
        should_stop=lambda: None,
        writers=[writers],
    )
    full = f"publish failed: {storage_error(out, 'OUTPUT', OSError(errno.ENOSPC, 'No space left'))}"
    writers.results[1] = [
        ("part-0.parquet", {"shard": "part-0.parquet"}, None),
        ("part-1.parquet", None, full),
    ]
    p.submit([shard(0), shard(1)])
    p.reap()
    assert p.disk_full == full and len(published) == 1
    p.submit([shard(2), shard(3)])
    p.drain()
    assert writers.batches == [["part-0.parquet", "part-1.parquet"]]  # nothing more handed out
    assert set(p.failed) == {"part-1.parquet", "part-2.parquet", "part-3.parquet"}
    assert all("is full" in reason for reason in p.failed.values())


def test_the_last_line_of_a_run_the_full_disk_stopped_names_it_and_the_fix(tmp_path, tiny_bert, caplog):
    cfg = job(tmp_path / "in", tmp_path / "out", tiny_bert)
    reason = f"publish failed: {storage_error(cfg.output.uri, 'OUTPUT', OSError(errno.ENOSPC, 'No space'))}"
    report = RunReport(
        shards_total=8,
        shards_skipped=0,
        shards_published=3,
        failed={f"part-{i}.parquet": reason for i in range(3, 8)},
        disk_full=reason,
    )
    assert finish(report, cfg) == 1
    last = [r.getMessage() for r in caplog.records if r.name == "rerank"][-1]
    assert "5 shard(s) failed, 3 published" in last and "full disk" in last
    assert "Free space there" in last and "rerun the same command" in last


def test_the_run_report_names_the_full_disk_in_its_outcome():
    report = RunReport(shards_total=2, shards_skipped=0, failed={"a": "x"}, disk_full="x")
    assert outcome_of(report) == "1 shard(s) failed: OUTPUT's disk (or quota) is full"  # report.json's
