"""Progressive checkpoints: with the CPU defaults, a shard is published as soon as its last row is
scored, long before the run's last scoring call, so a crash mid-run loses only the shards in flight."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from tests.helpers import done_markers, pairs_table

pytestmark = pytest.mark.integration


def test_first_shard_is_published_before_the_last_scoring_call_starts(ray_address, tmp_path, tiny_bert):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    # 16 shards of 380 rows: the default 1024 rows per call span several shards, and scoring lasts
    # long enough (one torch thread) that publishing the first shards is not the run's last act
    for s in range(16):
        pq.write_table(pairs_table(38, 10, seed=s, prefix=f"s{s}q"), inp / f"part-{s}.parquet")
    flags = ["--model", tiny_bert, "--max-length", "128", "--torch-threads", "1"]
    assert main(["run", str(inp), str(out), *flags]) == 0
    summary = json.loads((out / "_SUCCESS").read_text())["last_run"]
    published = sorted(
        json.loads(p.read_text())["published_at"] for p in done_markers(out / "_rerank" / "done")
    )
    assert len(published) == 16
    assert summary["last_call_started_at"] > summary["scoring_started_at"]  # more than one call
    assert published[0] < summary["last_call_started_at"], (published, summary)
