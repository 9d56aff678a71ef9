"""OUTPUT on a small disk that fills up mid-run (a tmpfs of a few pages: needs root to mount, and is
skipped elsewhere; tests/unit/test_disk_full.py covers the same without a mount). The shards that
fit are published, the others fail naming the full disk and the fix, nothing more is handed to the
writers, no temp file is left holding the space, and once there is room the rerun completes to
the same output as an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cli import main
from tests.helpers import assert_output_invariants, assert_reconciled, done_markers, read_output, tables_equal

pytestmark = pytest.mark.integration

FLAGS = ["--max-length", "128", "--rows-per-call", "4"]
SHAPE = {"n_shards": 8, "n_queries": 6, "candidates": 8}


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 KiB tmpfs: OUTPUT's bookkeeping and about three of the eight shards fit."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or (done := mount("-t", "tmpfs", "-o", "size=48k", "tmpfs", str(where))).returncode:
        pytest.skip("mounting a small tmpfs needs root (and CAP_SYS_ADMIN)")
    assert not done.stderr
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.timeout(600)
def test_a_full_disk_is_named_leaves_no_temp_files_and_the_rerun_completes(
    ray_address, write_shards, small_disk, tiny_bert, reference_output, caplog
):
    input_dir, out = write_shards(**SHAPE), small_disk / "out"
    args = ["run", str(input_dir), str(out), "--model", tiny_bert, *FLAGS]
    assert main(args) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "rerank"]
    failed = [line for line in lines if line.startswith("shard ") and " failed: " in line]
    published = len(done_markers(out / "_rerank" / "done"))
    assert failed and published and len(failed) + published == 8
    assert all("is full: free space there" in line for line in failed), failed
    assert any("not published: OUTPUT" in line for line in failed)  # not handed to a writer at all
    assert f"{len(failed)} shard(s) failed, {published} published by this run" in lines[-1]
    assert "full disk" in lines[-1] and "Free space there" in lines[-1]
    report = [r.getMessage() for r in caplog.records if "could not write the run report" in r.getMessage()]
    assert report and "is full" in report[0]  # the report is all that was left to write
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]  # nothing holds the space
    assert not (out / "_SUCCESS").exists()

    assert mount("-o", "remount,size=4m", str(small_disk)).returncode == 0  # room made
    assert main(args) == 0
    tables_equal(read_output(reference_output(["--model", tiny_bert, *FLAGS], **SHAPE)), read_output(out))
    assert_output_invariants(input_dir, out)
    assert_reconciled(input_dir, out)
