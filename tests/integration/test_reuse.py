"""Score reuse across runs (`--reuse`): a night that costs what changed.

Night 1 is a plain run; night 2 is the same corpus with passages edited, pairs added and removed,
a query moved to another shard and a query whose ids changed. A night-2 run with `--reuse night1`
scores exactly the pairs whose texts are new, and publishes what a full run of night 2 does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage
from pipeline.rerank import build
from pipeline.rerank.runner import run
from tests.helpers import job, nest_pairs, pairs_table, read_output, tables_equal, unnest_output

pytestmark = pytest.mark.integration

STORAGE = Storage()
SCORING = {"rows_per_call": 32, "max_batch_tokens": 512}


def night1_shards(n_shards: int = 3) -> dict[str, pa.Table]:
    return {f"part-{s}.parquet": pairs_table(6, 5, seed=s, prefix=f"s{s}q") for s in range(n_shards)}


def night2_shards(night1: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Edits: one passage per shard changed, one pair per shard removed, one pair added to part-0,
    query s1q0 moved from part-1 to part-0, and query s0q1's ids renamed (texts unchanged)."""
    out = {}
    for rel, t in night1.items():
        rows = t.to_pylist()
        rows[3]["passage"] += " edited"
        del rows[7]
        out[rel] = rows
    moved = [r for r in out["part-1.parquet"] if r["query_id"] == "s1q0"]
    out["part-1.parquet"] = [r for r in out["part-1.parquet"] if r["query_id"] != "s1q0"]
    out["part-0.parquet"] += moved
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


@pytest.fixture(scope="module")
def nights(ray_address, tmp_path_factory, tiny_bert):
    """Night 1 scored (its store), and night 2 scored in full: what the reuse runs are compared
    with, run once for the tests that share them."""
    root = tmp_path_factory.mktemp("nights")
    n1 = night1_shards()
    n2 = night2_shards(n1)
    in1, in2 = write(root / "in1", n1), write(root / "in2", n2)
    out1, full = root / "out1", root / "full"
    assert run(job(in1, out1, tiny_bert, scoring=SCORING)).ok
    assert run(job(in2, full, tiny_bert, scoring=SCORING)).ok
    return n1, n2, in2, out1, full


@pytest.mark.parametrize("lookup", ["one task", "hash join"])
def test_night2_scores_only_what_changed(nights, tmp_path, tiny_bert, lookup, monkeypatch):
    """Both lookups: a night that fits one join partition is joined in one task; a bigger one (here:
    partitions of 40 keys) by Ray Data's hash join."""
    if lookup == "hash join":
        monkeypatch.setattr(build, "KEYS_PER_PARTITION", 40)
    n1, n2, in2, out1, full = nights
    reused = tmp_path / "reused"
    assert sorted(p.name for p in (out1 / "_rerank" / "scores").iterdir()) == sorted(n1)
    success1 = STORAGE.read_json(str(out1 / "_SUCCESS"))
    assert success1["score_store"]["format"] == 1
    assert success1["totals"]["pairs_stored"] == success1["totals"]["rows_out"] == 90

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
        for key, score in zip(zip(hi.tolist(), lo.tolist()), table.column("score").to_pylist()):
            if key in stored:
                assert np.float32(score) == np.float32(stored[key])


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


def test_reuse_from_s3_into_s3(ray_address, s3, tmp_path, tiny_bert):
    fs, endpoint = s3
    for bucket in ("night-in", "night-out"):
        fs.mkdir(bucket)
    n1 = night1_shards(2)
    n2 = night2_shards({**n1, "part-2.parquet": pairs_table(6, 5, seed=2, prefix="s2q")})
    for night, shards in (("1", n1), ("2", n2)):
        for rel, table in shards.items():
            with fs.open(f"night-in/{night}/{rel}", "wb") as f:
                pq.write_table(table, f)
    storage = {"storage": {"endpoint_url": endpoint}}  # credentials: the session's environment
    s3_storage = Storage.from_settings(endpoint_url=endpoint)
    assert run(job("s3://night-in/1", "s3://night-out/1", tiny_bert, scoring=SCORING, **storage)).ok
    report = run(
        reusing(
            job("s3://night-in/2", "s3://night-out/2", tiny_bert, scoring=SCORING, **storage),
            "s3://night-out/1",
        )
    )
    assert report.ok
    changed = len(texts(n2) - texts(n1))
    assert report.summary["pairs_scored"] == changed
    assert report.summary["pairs_reused"] == sum(t.num_rows for t in n2.values()) - changed
    full = tmp_path / "full"
    assert run(job(write(tmp_path / "in2", n2), full, tiny_bert, scoring=SCORING)).ok
    tables_equal(read_output(full), read_output("s3://night-out/2", s3_storage))


@pytest.mark.timeout(600)
# the reuse stage's own crash point; publish_in_flight with --reuse is the publish path every
# killed-driver test covers (test_faults.py), reuse or not
@pytest.mark.parametrize("point", ["after_reuse_lookup"])
def test_killed_reuse_run_reruns_to_the_same_output(nights, ray_address, tmp_path, tiny_bert, point):
    _, n2, in2, out1, reference = nights  # a reuse run equals the full one (the test above)
    out2 = tmp_path / "out2"
    flags = ["--model", tiny_bert, "--max-length", "128", "--rows-per-call", "32", "--reuse", str(out1)]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(in2), str(out2), *flags],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out2 / "_SUCCESS").exists()
    assert main(["run", str(in2), str(out2), *flags]) == 0
    tables_equal(read_output(reference), read_output(out2))
    assert not (out2 / "_rerank" / "reuse").exists()
    totals = STORAGE.read_json(str(out2 / "_SUCCESS"))["totals"]
    assert totals["pairs_stored"] == sum(t.num_rows for t in n2.values())


@pytest.mark.timeout(600)
def test_nested_chunked_reuse_equals_a_full_run(ray_address, tmp_path, tiny_bert):
    n1 = {rel: nest_pairs(t.drop_columns(["extra"])) for rel, t in night1_shards(2).items()}
    flat1 = {rel: unnest_output(t) for rel, t in n1.items()}
    n2 = {rel: nest_pairs(t) for rel, t in night2_shards(flat1).items()}
    in1, in2 = write(tmp_path / "in1", n1), write(tmp_path / "in2", n2)
    options = {"layout": "nested", "long_passages": "chunk", "max_chunks": 4, "chunk_overlap": 4}

    def cfg(inp: Path, out: Path):
        return job(
            inp,
            out,
            tiny_bert,
            scoring=SCORING,
            input={"uri": str(inp), **options},
            model={"max_length": 32, "query_max_length": 12},
        )

    out1, full, reused = tmp_path / "out1", tmp_path / "full", tmp_path / "reused"
    assert run(cfg(in1, out1)).ok
    assert run(cfg(in2, full)).ok
    report = run(reusing(cfg(in2, reused), out1))
    assert report.ok
    flat = {
        name: {rel: unnest_output(t) for rel, t in read_output(out).items()}
        for name, out in (("full", full), ("reused", reused))
    }
    tables_equal(flat["full"], flat["reused"])  # ranks equal; scores within batch composition's 1e-5
    changed = len(texts(night2_shards(flat1)) - texts(flat1))
    assert report.summary["pairs_scored"] == changed > 0
    windows = STORAGE.read_json(str(reused / "_SUCCESS"))["totals"]["windows_scored"]
    assert 0 < windows < STORAGE.read_json(str(full / "_SUCCESS"))["totals"]["windows_scored"]


def test_pairs_a_cascade_leaves_unscored_are_not_stored(ray_address, tmp_path, tiny_bert):
    shards = {}
    for rel, t in night1_shards(2).items():
        shards[rel] = t.append_column("bm25", pa.array(np.arange(t.num_rows, dtype=np.float64)))
    cascade = {"prefilter_column": "bm25", "prefilter_top_k": 2}
    in1 = write(tmp_path / "in1", shards)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"

    def cfg(out: Path):
        return job(in1, out, tiny_bert, scoring=SCORING, input={"uri": str(in1), **cascade})

    assert run(cfg(out1)).ok
    totals = STORAGE.read_json(str(out1 / "_SUCCESS"))["totals"]
    assert totals["pairs_stored"] == totals["pairs_scored"] == 2 * 6 * 2
    report = run(reusing(cfg(out2), out1))
    assert report.ok and report.summary["pairs_scored"] == 0 and report.summary["pairs_reused"] == 24
    tables_equal(read_output(out1), read_output(out2))


def test_layerwise_reuse_keeps_every_layer_column(ray_address, tmp_path, tiny_layerwise):
    """Every per-layer column is stored and reused; other cutoff layers are another identity."""
    n1 = night1_shards(1)
    n2 = night2_shards({**n1, "part-1.parquet": pairs_table(6, 5, seed=1, prefix="s1q")})
    in1, in2 = write(tmp_path / "in1", n1), write(tmp_path / "in2", n2)

    def cfg(inp: Path, out: Path, layers: list[int]):
        model = {"kind": "layerwise", "cutoff_layers": layers}
        return job(inp, out, tiny_layerwise, scoring=SCORING, model=model)

    out1, full, reused, other = (tmp_path / name for name in ("out1", "full", "reused", "other"))
    assert run(cfg(in1, out1, [4, 2])).ok
    assert run(cfg(in2, full, [4, 2])).ok
    report = run(reusing(cfg(in2, reused, [4, 2]), out1))
    assert report.ok and report.summary["pairs_reused"] > 0
    assert report.summary["pairs_scored"] == len(texts(n2) - texts(n1))
    a, b = read_output(full), read_output(reused)
    assert set(a) == set(b)
    for rel in a:
        assert a[rel].column("rank").to_pylist() == b[rel].column("rank").to_pylist()
        for name in ("score", "score_l4", "score_l2"):
            np.testing.assert_allclose(
                a[rel].column(name).to_numpy(), b[rel].column(name).to_numpy(), atol=1e-5
            )
    assert run(reusing(cfg(in2, other, [4]), out1)).summary["pairs_reused"] == 0
