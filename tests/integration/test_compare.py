"""Feeding the index: the change feed and ranking drift against an earlier run (`--diff-against`),
quality on judged queries (`--qrels`) and the gate before `_SUCCESS` (`--min-ndcg`,
`--max-ndcg-drop`, exit 5).

Night 1 is a plain run. Night 2 has passages edited, pairs removed and added, a query moved to
another shard, a query whose ids changed, a shard gone and a new one. The change files are checked
against a diff of the two outputs written here, row by row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import ir_measures
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.io import Storage
from pipeline.rerank.runner import run
from tests.helpers import job, nest_pairs, pairs_table, read_output, unnest_output
from tests.integration.test_reuse import SCORING, night1_shards, night2_shards, write

# Change files are compared exactly across runs: one attention path, not `auto`'s per-run choice
# (the two paths agree within 1e-7 in fp32, which a change feed at epsilon 0 would show).
PADDED = {"attention": "padded"}

pytestmark = pytest.mark.integration

STORAGE = Storage()


def night2(n1: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """test_reuse's night 2, without part-2 (its queries are gone) and with a new part-3."""
    shards = night2_shards(n1)
    del shards["part-2.parquet"]
    shards["part-3.parquet"] = pairs_table(3, 4, seed=9, prefix="s3q")
    return shards


@pytest.fixture(scope="module")
def nights(ray_address, tmp_path_factory, tiny_bert) -> tuple[Path, Path, Path]:
    """(INPUT of night 1, INPUT of night 2, night 1's OUTPUT), scored once for this module."""
    root = tmp_path_factory.mktemp("nights")
    n1 = night1_shards()
    in1, in2 = write(root / "in1", n1), write(root / "in2", night2(n1))
    assert run(job(in1, root / "out1", tiny_bert, scoring=SCORING, model=PADDED)).ok
    return in1, in2, root / "out1"


@pytest.fixture(scope="module")
def compared(nights, tmp_path_factory, tiny_bert) -> Path:
    """Night 2 compared with night 1 as it was scored: the reference of the reruns below."""
    _, in2, out1 = nights
    out = tmp_path_factory.mktemp("compared") / "out"
    assert run(
        job(in2, out, tiny_bert, scoring=SCORING, model=PADDED, compare={"diff_against": str(out1)})
    ).ok
    return out


def rows_of(output: Path) -> dict[tuple[str, str], tuple[int, float]]:
    """(query_id, doc_id) -> (rank, score) of every output row."""
    rows = {}
    for table in read_output(output).values():
        for r in table.select(["query_id", "doc_id", "rank", "score"]).to_pylist():
            rows[(r["query_id"], r["doc_id"])] = (r["rank"], r["score"])
    return rows


def expected_changes(before: Path, after: Path) -> set[tuple[str, str, str]]:
    old, new = rows_of(before), rows_of(after)
    out = {(q, d, "added") for q, d in new.keys() - old.keys()}
    out |= {(q, d, "removed") for q, d in old.keys() - new.keys()}
    for key in old.keys() & new.keys():
        if old[key][0] != new[key][0]:
            out.add((*key, "reranked"))
        elif old[key][1] != new[key][1]:
            out.add((*key, "rescored"))
    return out


def change_files(output: Path) -> dict[str, pa.Table]:
    root = output / "_changes"
    return {p.relative_to(root).as_posix(): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))}


def test_change_feed_lists_exactly_what_changed(nights, compared):
    _, _, out1 = nights
    out2 = compared

    files = change_files(out2)
    # one per shard of night 2, and one for part-2, whose queries no shard holds any more
    assert sorted(files) == ["part-0.parquet", "part-1.parquet", "part-2.parquet", "part-3.parquet"]
    listed = {(r["query_id"], r["doc_id"], r["change"]) for t in files.values() for r in t.to_pylist()}
    assert listed == expected_changes(out1, out2)
    assert sum(t.num_rows for t in files.values()) == len(listed)  # each change once
    # the moved query is compared with its old rows: in part-0's file only, never removed
    moved = [r for t in files.values() for r in t.to_pylist() if r["query_id"] == "s1q0"]
    assert all(r["change"] in ("reranked", "rescored") for r in moved)
    assert {r["change"] for r in files["part-2.parquet"].to_pylist()} == {"removed"}
    assert {r["change"] for r in files["part-3.parquet"].to_pylist()} == {"added"}
    renamed = {r["change"] for r in files["part-0.parquet"].to_pylist() if r["query_id"] == "renamed-q"}
    assert renamed == {"added"}

    success = STORAGE.read_json(str(out2 / "_SUCCESS"))
    changes = success["changes"]
    assert changes["against"] == str(out1)
    assert [f["path"] for f in changes["files"]] == sorted(files)
    for kind in ("added", "removed", "reranked", "rescored"):
        assert changes["totals"][kind] == sum(1 for *_, c in listed if c == kind)
    drift = success["drift"]
    both = {q for q, _ in rows_of(out1)} & {q for q, _ in rows_of(out2)}
    assert drift["queries"] == len(both)
    report = STORAGE.read_json(str(out2 / "_rerank" / "report.json"))
    assert report["comparison"]["drift"] == drift
    assert report["comparison"]["changes"]["files"] == len(files)


def test_drift_by_hand(ray_address, tmp_path, tiny_bert):
    """The earlier run's output edited by hand (query h0's ranks reversed), so every figure is
    known: h0's tau is -1 and its top-1 changed, h1 did not move."""
    shard = pairs_table(2, 4, seed=3, prefix="h")
    inp = write(tmp_path / "in", {"part-0.parquet": shard})
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert run(job(inp, out1, tiny_bert, scoring=SCORING, model=PADDED)).ok
    # reverse query h0's order in the earlier output: tau -1, its top-1 changed; h1 unchanged
    path = out1 / "part-0.parquet"
    table = pq.read_table(path)
    rank = np.array(table.column("rank").to_pylist())
    is_h0 = np.array(table.column("query_id").to_pylist()) == "h0"
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("rank"),
            "rank",
            pa.array(np.where(is_h0, 5 - rank, rank), pa.int32()),
        ),
        path,
    )
    assert run(
        job(inp, out2, tiny_bert, scoring=SCORING, model=PADDED, compare={"diff_against": str(out1)})
    ).ok
    drift = STORAGE.read_json(str(out2 / "_SUCCESS"))["drift"]
    assert drift["queries"] == 2
    assert drift["top1_changed_share"] == 0.5
    assert drift["movers"][0]["query_id"] == "h0"
    assert drift["movers"][0]["tau"] == pytest.approx(-1.0)
    assert drift["movers"][0]["overlap10"] == 1.0  # the same four candidates in the top 10
    changes = pq.read_table(out2 / "_changes" / "part-0.parquet").to_pylist()
    assert {r["query_id"] for r in changes} == {"h0"}
    assert {r["change"] for r in changes} == {"reranked"}


def judged(output: Path, best: bool) -> list[tuple[str, str, int]]:
    """Qrels judging, per query, the doc the model ranked first (`best`) or last as relevant."""
    out = []
    for table in read_output(output).values():
        rows = table.select(["query_id", "doc_id", "rank"]).to_pylist()
        for q in {r["query_id"] for r in rows}:
            mine = sorted((r for r in rows if r["query_id"] == q), key=lambda r: r["rank"])
            out.append((q, (mine[0] if best else mine[-1])["doc_id"], 1))
    return out


def write_trec(path: Path, qrels: list[tuple[str, str, int]]) -> Path:
    path.write_text("".join(f"{q} 0 {d} {rel}\n" for q, d, rel in qrels))
    return path


def library_figures(inp: Path, out: Path, qrels: list[tuple[str, str, int]]) -> dict[str, dict[str, float]]:
    """nDCG@10, MRR@10, R@100 of the input order and of the output ranks, by ir_measures itself."""
    measures = {
        "ndcg10": ir_measures.nDCG @ 10,
        "mrr10": ir_measures.RR @ 10,
        "recall100": ir_measures.R @ 100,
    }
    given = [ir_measures.Qrel(q, d, rel) for q, d, rel in qrels]
    first, reranked = [], []
    for table in read_output(inp).values():
        rows = table.to_pylist()
        for i, r in enumerate(rows):
            position = sum(1 for x in rows[:i] if x["query_id"] == r["query_id"])
            first.append(ir_measures.ScoredDoc(r["query_id"], r["doc_id"], -float(position)))
    for table in read_output(out).values():
        for r in table.to_pylist():
            reranked.append(ir_measures.ScoredDoc(r["query_id"], r["doc_id"], -float(r["rank"])))
    judged_queries = {q for q, _, _ in qrels}
    return {
        order: {
            name: ir_measures.calc_aggregate([m], given, [s for s in run if s.query_id in judged_queries])[m]
            for name, m in measures.items()
        }
        for order, run in (("first_stage", first), ("reranked", reranked))
    }


def test_quality_gate_passes_then_holds_then_publishes(nights, tmp_path, tiny_bert, capsys):
    inp, _, plain = nights
    good = write_trec(tmp_path / "good.qrels", judged(plain, best=True))
    bad = write_trec(tmp_path / "bad.qrels", judged(plain, best=False))

    out = tmp_path / "good"
    args = [str(inp), str(out), "--model", tiny_bert, "--max-length", "128", "--rows-per-call", "32"]
    assert main(["run", *args, "--qrels", str(good), "--min-ndcg", "0.99", "--max-ndcg-drop", "0"]) == 0
    success = STORAGE.read_json(str(out / "_SUCCESS"))
    quality = success["quality"]
    assert quality["gate"]["passed"] and quality["reranked"]["ndcg10"] == pytest.approx(1.0)
    figures = library_figures(inp, out, judged(plain, best=True))
    for order in ("first_stage", "reranked"):
        for m in ("ndcg10", "mrr10", "recall100"):
            assert quality[order][m] == pytest.approx(figures[order][m], abs=1e-6), (order, m)
    per_query = pq.read_table(out / "_rerank" / "quality.parquet")
    assert per_query.num_rows == quality["queries"] == 18

    held = tmp_path / "held"
    args[1] = str(held)
    # against the run above too (--diff-against): it recorded a reranked nDCG@10 of 1.0
    gate = ["--min-ndcg", "0.5", "--max-ndcg-drop", "0.05", "--diff-against", str(out)]
    assert main(["run", *args, "--qrels", str(bad), *gate]) == 5
    assert not (held / "_SUCCESS").exists()
    assert len(list(held.glob("part-*.parquet"))) == 3  # the shards stay published
    verdict = STORAGE.read_json(str(held / "_rerank" / "quality.json"))
    assert not verdict["passed"] and verdict["failed"][0]["threshold"] == "min_ndcg"
    reranked = verdict["summary"]["reranked"]["ndcg10"]
    previous = [c for c in verdict["checks"] if c.get("against") == "previous_run"]
    assert len(previous) == 1 and previous[0]["value"] == pytest.approx(1.0 - reranked)
    assert not previous[0]["passed"] and str(out) in previous[0]["what"]
    capsys.readouterr()
    assert main(["status", str(held)]) == 1
    shown = capsys.readouterr().out
    assert "held by the quality gate" in shown and "min_ndcg failed" in shown

    # a lower threshold checks again without scoring anything: _SUCCESS
    assert main(["run", *args, "--qrels", str(bad), "--min-ndcg", "0.0", "--diff-against", str(out)]) == 0
    success = STORAGE.read_json(str(held / "_SUCCESS"))
    assert success["quality"]["gate"]["passed"]
    report = STORAGE.read_json(str(held / "_rerank" / "report.json"))
    assert report["outcome"].startswith("held by the quality gate")  # the last run that scored


def test_qrels_on_s3(nights, s3, tmp_path, tiny_bert):
    fs, endpoint = s3
    fs.mkdir("judged")
    inp, _, plain = nights
    table = pa.table(
        {
            k: v
            for k, v in zip(("query_id", "doc_id", "relevance"), zip(*judged(plain, best=True)), strict=True)
        }
    )
    with fs.open("judged/q.parquet", "wb") as f:
        pq.write_table(table, f)
    storage = {"storage": {"endpoint_url": endpoint}}
    compare = {"qrels": "s3://judged/q.parquet", "min_ndcg": 0.99, "first_stage_column": "extra"}
    report = run(
        job(inp, tmp_path / "out", tiny_bert, scoring=SCORING, model=PADDED, compare=compare, **storage)
    )
    assert report.ok and not report.held
    quality = report.comparison["quality"]
    assert quality["queries"] == 18 and quality["first_stage_column"] == "extra"
    # the first stage is the `extra` column's order, highest first: by ir_measures on that order
    given = [ir_measures.Qrel(q, d, rel) for q, d, rel in judged(plain, best=True)]
    order = [
        ir_measures.ScoredDoc(r["query_id"], r["doc_id"], float(r["extra"]))
        for t in read_output(inp).values()
        for r in t.to_pylist()
    ]
    ndcg = ir_measures.nDCG @ 10
    # (ties in `extra` would order by doc id in the library and by input order here: none in this corpus)
    assert quality["first_stage"]["ndcg10"] == pytest.approx(
        ir_measures.calc_aggregate([ndcg], given, order)[ndcg], abs=1e-6
    )


@pytest.mark.parametrize(
    "qrels, says",
    [
        ("missing.qrels", "no such file"),
        ("columns.parquet", "relevance"),
        ("elsewhere.qrels", "none of its"),
    ],
)
def test_bad_qrels_exit_2_before_scoring(ray_address, tmp_path, tiny_bert, qrels, says, caplog):
    inp = write(tmp_path / "in", night1_shards(1))
    pq.write_table(pa.table({"qid": ["s0q0"], "docno": ["d"], "rel": [1]}), tmp_path / "columns.parquet")
    (tmp_path / "elsewhere.qrels").write_text("other-q 0 d1 1\n")
    out = tmp_path / "out"
    args = [
        "run",
        str(inp),
        str(out),
        "--model",
        tiny_bert,
        "--max-length",
        "128",
        "--qrels",
        str(tmp_path / qrels),
    ]
    assert main(args) == 2
    assert says in caplog.text
    assert not list(out.glob("part-*.parquet")) and not (out / "_rerank" / "done").exists()


def test_done_shards_are_compared_at_the_end_without_scoring(nights, compared, tmp_path, tiny_bert):
    """A rerun that adds --diff-against (or changes --change-epsilon) compares the shards already
    published from their output: change files equal those of a run that compared as it scored
    `compared`)."""
    _, in2, out1 = nights
    direct, later = compared, tmp_path / "later"
    compare = {"diff_against": str(out1)}
    assert run(job(in2, later, tiny_bert, scoring=SCORING, model=PADDED)).ok
    assert not (later / "_changes").exists()
    report = run(job(in2, later, tiny_bert, scoring=SCORING, model=PADDED, compare=compare))
    assert report.ok and report.shards_published == 0  # nothing scored
    for rel, table in change_files(direct).items():
        assert change_files(later)[rel].equals(table), rel
    markers = [STORAGE.read_json(str(p)) for p in (later / "_rerank" / "done").iterdir()]
    assert all(m["changes"]["against"] == str(out1) for m in markers)
    # a huge epsilon: the rescored rows go, at the end again
    report = run(
        job(in2, later, tiny_bert, scoring=SCORING, model=PADDED, compare={**compare, "change_epsilon": 1e9})
    )
    assert report.comparison["changes"]["totals"]["rescored"] == 0
    # no --diff-against: the change files of the earlier attempt are removed
    assert run(job(in2, later, tiny_bert, scoring=SCORING, model=PADDED)).ok
    assert not (later / "_changes").exists()
    assert "changes" not in STORAGE.read_json(str(later / "_SUCCESS"))


@pytest.mark.timeout(600)
def test_nested_chunked_top_k_change_feed(ray_address, tmp_path, tiny_bert):
    """Nested candidate lists, long passages in windows, --top-k 3: a candidate that left the top 3
    is removed, one that entered it added; quality on the published top 3."""
    n1 = {rel: nest_pairs(t.drop_columns(["extra"])) for rel, t in night1_shards(2).items()}
    flat1 = {rel: unnest_output(t) for rel, t in n1.items()}
    n2 = {rel: nest_pairs(t) for rel, t in night2_shards(flat1).items()}
    in1, in2 = write(tmp_path / "in1", n1), write(tmp_path / "in2", n2)
    options = {"layout": "nested", "long_passages": "chunk", "max_chunks": 4, "chunk_overlap": 4}

    def cfg(inp: Path, out: Path, **compare):
        return job(
            inp,
            out,
            tiny_bert,
            scoring=SCORING,
            input={"uri": str(inp), **options},
            model={"max_length": 32, "query_max_length": 12, **PADDED},
            ranking={"top_k": 3},
            compare=compare,
        )

    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert run(cfg(in1, out1)).ok
    qrels = write_trec(
        tmp_path / "q.qrels",
        [(r["query_id"], r["doc_id"], 1) for t in flat1.values() for r in t.to_pylist()[::5]],
    )
    report = run(cfg(in2, out2, diff_against=str(out1), qrels=str(qrels)))
    assert report.ok

    def flat_rows(out: Path) -> dict[tuple[str, str], tuple[int, float]]:
        rows = {}
        for table in read_output(out).values():
            for r in unnest_output(table).select(["query_id", "doc_id", "rank", "score"]).to_pylist():
                rows[(r["query_id"], r["doc_id"])] = (r["rank"], r["score"])
        return rows

    old, new = flat_rows(out1), flat_rows(out2)
    assert max(rank for rank, _ in new.values()) == 3
    expected = {(q, d, "added") for q, d in new.keys() - old.keys()} | {
        (q, d, "removed") for q, d in old.keys() - new.keys()
    }
    expected |= {(*k, "reranked") for k in old.keys() & new.keys() if old[k][0] != new[k][0]}
    expected |= {
        (*k, "rescored") for k in old.keys() & new.keys() if old[k][0] == new[k][0] and old[k][1] != new[k][1]
    }
    listed = {
        (r["query_id"], r["doc_id"], r["change"]) for t in change_files(out2).values() for r in t.to_pylist()
    }
    assert listed == expected
    assert report.comparison["quality"]["queries"] > 0


@pytest.mark.timeout(600)
def test_killed_run_reruns_to_the_same_change_files(nights, compared, ray_address, tmp_path, tiny_bert):
    _, in2, out1 = nights
    out2, reference = tmp_path / "out2", compared
    flags = [
        "--model",
        tiny_bert,
        "--max-length",
        "128",
        "--rows-per-call",
        "32",
        "--attention",
        "padded",
        "--diff-against",
        str(out1),
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RERANK_TEST_CRASH_AT": "publish_in_flight"}
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(in2), str(out2), *flags],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out2 / "_SUCCESS").exists()
    assert main(["run", str(in2), str(out2), *flags]) == 0
    assert change_files(out2).keys() == change_files(reference).keys()
    for rel, table in change_files(reference).items():
        assert change_files(out2)[rel].equals(table), rel
