"""Score reuse across runs (`--reuse`): a night that costs what changed.

Night 1 is a plain run; night 2 is the same corpus with passages edited, pairs added and removed,
a query moved to another shard and a query whose ids changed. A night-2 run with `--reuse night1`
scores exactly the pairs whose texts are new, and publishes what a full run of night 2 does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.io import Storage
from pipeline.rerank.runner import run
from tests.helpers import job, pairs_table, read_output, tables_equal

pytestmark = pytest.mark.integration

STORAGE = Storage()
SCORING = {"rows_per_call": 32, "max_batch_tokens": 512}


def night1_shards(n_shards: int = 3) -> dict[str, pa.Table]:
    return {f"part-{s}.parquet": pairs_table(6, 5, seed=s, prefix=f"s{s}q") for s in range(n_shards)}


def night2_shards(night1: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Edits: one passage per shard changed, one pair per shard removed, one pair added to part-0,
    query s1q0 moved from part-1 to part-2, and query s0q1's ids renamed (texts unchanged)."""
    out = {}
    for rel, t in night1.items():
        rows = t.to_pylist()
        rows[3]["passage"] += " edited"
        del rows[7]
        out[rel] = rows
    moved = [r for r in out["part-1.parquet"] if r["query_id"] == "s1q0"]
    out["part-1.parquet"] = [r for r in out["part-1.parquet"] if r["query_id"] != "s1q0"]
    out["part-2.parquet"] += moved
    out["part-0.parquet"].append(dict(out["part-0.parquet"][0], doc_id="s0q0-new", passage="a new candidate"))
    for r in out["part-0.parquet"]:
        if r["query_id"] == "s0q1":
            r["query_id"], r["doc_id"] = "renamed-q", "renamed-" + r["doc_id"]
    schema = next(iter(night1.values())).schema
    return {rel: pa.Table.from_pylist(rows, schema=schema) for rel, rows in out.items()}


def reusing(cfg, *sources: Path | str):
    """`cfg` with `--reuse` of each source (newest first)."""
    output = cfg.output.model_copy(update={"reuse": [str(s) for s in sources]})
    return cfg.model_copy(update={"output": output})


def write(directory: Path, shards: dict[str, pa.Table]) -> Path:
    directory.mkdir(parents=True)
    for rel, table in shards.items():
        pq.write_table(table, directory / rel)
    return directory


def texts(shards: dict[str, pa.Table]) -> set[tuple[str, str]]:
    return {
        (r["query"], r["passage"])
        for t in shards.values()
        for r in t.select(["query", "passage"]).to_pylist()
    }


def test_night2_scores_only_what_changed(ray_address, tmp_path, tiny_bert):
    n1 = night1_shards()
    n2 = night2_shards(n1)
    in1, in2 = write(tmp_path / "in1", n1), write(tmp_path / "in2", n2)
    out1, full, reused = tmp_path / "out1", tmp_path / "full", tmp_path / "reused"
    first = run(job(in1, out1, tiny_bert, scoring=SCORING))
    assert first.ok
    assert sorted(p.name for p in (out1 / "_rerank" / "scores").iterdir()) == sorted(n1)
    success1 = STORAGE.read_json(str(out1 / "_SUCCESS"))
    assert success1["score_store"]["format"] == 1
    assert success1["totals"]["pairs_stored"] == success1["totals"]["rows_out"] == 90

    assert run(job(in2, full, tiny_bert, scoring=SCORING)).ok
    report = run(reusing(job(in2, reused, tiny_bert, scoring=SCORING), out1))
    assert report.ok
    tables_equal(read_output(full), read_output(reused))

    changed = len(texts(n2) - texts(n1))
    assert changed == 4  # three edited passages and one new pair; the moved and renamed are found
    rows = sum(t.num_rows for t in n2.values())
    assert report.summary["pairs_scored"] == changed
    assert report.summary["pairs_reused"] == rows - changed
    totals = STORAGE.read_json(str(reused / "_SUCCESS"))["totals"]
    assert (totals["pairs_scored"], totals["pairs_reused"]) == (changed, rows - changed)
    # night 2's store holds the reused pairs too: a night 3 needs only night 2
    assert totals["pairs_stored"] == rows
    assert not (reused / "_rerank" / "reuse").exists()  # the lookup's scratch is gone
    record = STORAGE.read_json(str(reused / "_rerank" / "run.json"))
    assert record["reuse"] == {"given": [str(out1)], "used": [str(out1)]}

    # reused scores are the stored ones, bit for bit
    store = pa.concat_tables(pq.read_table(p) for p in sorted((out1 / "_rerank" / "scores").iterdir()))
    stored = dict(
        zip(
            zip(store.column("key_hi").to_pylist(), store.column("key_lo").to_pylist()),
            store.column("score").to_pylist(),
        )
    )
    from pipeline.rerank.reuse.keys import pair_keys

    for table in read_output(reused).values():
        hi, lo = pair_keys(table.column("query").to_pylist(), table.column("passage").to_pylist())
        for h, l, score in zip(hi.tolist(), lo.tolist(), table.column("score").to_pylist()):
            if (h, l) in stored:
                assert np.float32(score) == np.float32(stored[(h, l)])


def test_other_max_length_reuses_nothing_and_says_why(ray_address, tmp_path, tiny_bert, caplog):
    n1 = night1_shards(1)
    in1 = write(tmp_path / "in1", n1)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert run(job(in1, out1, tiny_bert, scoring=SCORING)).ok
    cfg = reusing(job(in1, out2, tiny_bert, scoring=SCORING), out1, tmp_path / "nothing")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"max_length": 96})})
    report = run(cfg)
    assert report.ok and report.summary["pairs_reused"] == 0 and report.summary["pairs_scored"] == 30
    lines = [r.getMessage() for r in caplog.records if "--reuse" in r.getMessage()]
    assert any("max_length 128 (this run: 96)" in line for line in lines), lines
    assert any("nothing" in line and "no _SUCCESS" in line for line in lines), lines


def test_damaged_store_file_is_skipped_with_a_warning(ray_address, tmp_path, tiny_bert, caplog):
    n1 = night1_shards(2)
    in1 = write(tmp_path / "in1", n1)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert run(job(in1, out1, tiny_bert, scoring=SCORING)).ok
    damaged = out1 / "_rerank" / "scores" / "part-0.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short
    report = run(reusing(job(in1, out2, tiny_bert, scoring=SCORING), out1))
    assert report.ok
    assert (report.summary["pairs_scored"], report.summary["pairs_reused"]) == (30, 30)
    assert report.summary["reuse_lookup"]["store_files_skipped"] == 1
    tables_equal(read_output(out1), read_output(out2))
