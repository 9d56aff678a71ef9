"""The run report without Ray: the bounded collector, report.json's numbers, the HTML page, and
the summary lines `rerank run` ends with."""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from jobs.rerank import log_summary
from pipeline.errors import RunInterrupted
from pipeline.io import Storage
from pipeline.rerank.compare.drift import describe, drift_summary
from pipeline.rerank.compare.gate import gate_checks, verdict
from pipeline.rerank.compare.shard import Comparison
from pipeline.rerank.config import CompareConfig
from pipeline.rerank.output.paths import REPORT_HTML, REPORT_JSON
from pipeline.rerank.report import collector as collector_module
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.histogram import LENGTH_BINS
from pipeline.rerank.report.html import render_html
from pipeline.rerank.report.run_report import report_data, write_report
from pipeline.rerank.report.svg import nice_ticks
from pipeline.rerank.report.timeline import TimeBins
from pipeline.rerank.reuse.store import StoreIdentity
from pipeline.rerank.runner import PreparedRun, RunReport, reporting_stops, write_run_report
from pipeline.rerank.stages.score import scored_schema
from pipeline.rerank.stream.assembly import ShardAssembler
from tests.helpers import job, scoring_settings

T0 = 1_800_000_000.0


def call(
    start: float,
    n: int = 8,
    *,
    shard: int = 0,
    node: str = "n1",
    actor: int = 7,
    duration: float = 1.0,
    tokens: int = 20,
    rejects: dict[int, str] | None = None,
    seed: int = 0,
) -> pa.Table:
    """One scoring call's block, as `ScorePairs` returns it."""
    rng = np.random.default_rng(seed)
    reject = [None] * n
    for i, reason in (rejects or {}).items():
        reject[i] = reason
    tok = np.full(n, tokens, np.int32)
    return pa.Table.from_pydict(
        {
            "shard": np.full(n, shard, np.int32),
            "row": np.arange(n, dtype=np.int64),
            "score": rng.normal(0.0, 2.0, n).astype(np.float32),
            "tokens": tok,
            "padded_tokens": tok + 4,
            "error": [None] * n,
            "reject": reject,
            "node": [node] * n,
            "actor": np.full(n, actor, np.int32),
            "call_start": np.full(n, start),
            "call_end": np.full(n, start + duration),
        },
        schema=scored_schema(["score"]),
    )


def recorder() -> RunCollector:
    rec = RunCollector(started_at=T0, max_length=128, score_columns=["score"])
    rec.planning_s = 2.0
    rec.scoring_started_at = T0 + 2.5
    return rec


def feeder(rec: RunCollector) -> Callable[[pa.Table], None]:
    """Feeds `rec` as the runner does: each block through the assembler first, which says which
    of its rows count (shards of up to 8 rows)."""
    assembler = ShardAssembler(dict.fromkeys(range(1000), 8))

    def feed(block: pa.Table) -> None:
        added = assembler.add(block)
        rec.add(block, scored=added.scored, fresh=added.fresh)

    return feed


def test_time_bins_keep_every_amount_and_their_size_as_the_run_grows():
    bins = TimeBins(T0, bins=8, width_s=1.0)
    bins.add("pairs", T0 + 1.0, T0 + 3.0, 100)  # spread over bins 1 and 2
    assert bins.rates("pairs")[:3] == [0.0, 50.0, 50.0]
    bins.add("pairs", T0 + 30.0, T0 + 31.0, 40)  # past 8 s: widened twice, to 4 s bins
    assert bins.width_s == 4.0 and bins.used == 8
    assert sum(r * bins.width_s for r in bins.rates("pairs")) == pytest.approx(140)
    for i in range(1000):  # a long run: still 8 bins
        bins.add("pairs", T0 + i * 10.0, T0 + i * 10.0 + 5.0, 1)
    assert len(bins.rates("pairs")) <= 8
    assert sum(r * bins.width_s for r in bins.rates("pairs")) == pytest.approx(1140)


def test_recorder_counts_calls_actors_rejects_lengths_and_scores():
    rec = recorder()
    feed = feeder(rec)
    feed(call(T0 + 5.0, rejects={0: "empty passage", 1: "null query_id"}))
    feed(call(T0 + 6.0, shard=1, actor=8, node="n2", tokens=90, seed=1))
    feed(call(T0 + 5.0))  # the first call's block delivered again: counted once
    d = rec.to_dict(ended_at=T0 + 10.0)
    assert d["rejects"] == {"empty passage": 1, "null query_id": 1}
    assert d["actors"]["n1:7"]["pairs"] == 6 and d["actors"]["n1:7"]["calls"] == 1
    assert d["actors"]["n2:8"]["tokens"] == 8 * 90
    assert d["phases"]["first_call_s"] == 5.0 and d["phases"]["first_scored_s"] == 6.0
    assert d["phases"]["last_call_end_s"] == 7.0 and d["phases"]["wall_s"] == 10.0
    assert d["token_lengths"]["tokens"]["count"] == 14 and d["token_lengths"]["tokens"]["max"] == 90
    assert d["token_lengths"]["padded"]["mean"] == pytest.approx((6 * 24 + 8 * 94) / 14)
    assert d["scores"]["score"]["count"] == 14
    tp = d["throughput"]
    assert sum(tp["pairs_per_s"]) * tp["bin_s"] == pytest.approx(14)
    assert set(tp["nodes"]) == {"n1", "n2"} and set(tp["actors"]) == {"n1:7", "n2:8"}
    assert d["stage_busy_s"]["score"] == 2.0


def test_recorder_stays_bounded_whatever_the_corpus(monkeypatch):
    monkeypatch.setattr(collector_module, "RECENT_CALLS", 64)  # calls remembered to drop a repeat
    rec = recorder()
    feed = feeder(rec)
    for i in range(400):  # many calls, many actors and reasons
        rejects = {0: f"reason {i % 80}"}
        feed(call(T0 + i, n=4, shard=i, actor=i % 100, duration=0.5, tokens=1 + i % 500, rejects=rejects))
    d = rec.to_dict(ended_at=T0 + 5000)
    assert len(d["actors"]) == 65  # 64 of their own and "other"
    assert len(d["rejects"]) == 51  # 50 reasons and "other"
    assert len(d["throughput"]["pairs_per_s"]) <= 240
    assert len(d["token_lengths"]["tokens"]["counts"]) == LENGTH_BINS
    assert sum(a["pairs"] for a in d["actors"].values()) == 400 * 3
    assert len(rec._recent) == 64


def test_publish_time_and_rows_come_from_the_markers():
    rec = recorder()
    rec._completed_at = {"a.parquet": T0 + 8.0, "b.parquet": T0 + 9.0}
    for marker in [
        {
            "shard": "a.parquet",
            "published_at": T0 + 8.5,
            "rows_in": 10,
            "rows_out": 9,
            "rows_rejected": 1,
        },
        {"shard": "b.parquet", "published_at": T0 + 10.0, "rows_in": 5, "rows_out": 5},
    ]:
        rec.published(marker)
    assert rec.stage_busy_s["publish"] == 1.5
    assert rec.rows() == {"rows_in": 15, "rows_out": 14, "rows_rejected": 1, "rows_dropped_top_k": 0}


class _Op:
    def __init__(self, name: str, total: float) -> None:
        self.operator_name = name
        self.wall_time = type("S", (), {"sum": total})()


def test_tokenize_time_is_read_from_ray_data_stats():
    rec = recorder()
    parent = type("Summary", (), {"operators_stats": [_Op("MapBatches(TokenizeShard)", 1.25)], "parents": []})
    summary = type(
        "Summary", (), {"operators_stats": [_Op("MapBatches(ScorePairs)", 9.0)], "parents": [parent]}
    )
    rec.operator_stats(summary)
    assert rec.stage_busy_s["tokenize"] == 1.25


def report(tmp_path, **overrides) -> dict:
    rec = recorder()
    feed = feeder(rec)
    feed(call(T0 + 5.0, rejects={3: "empty <passage>"}))
    feed(call(T0 + 6.5, shard=1, actor=8))
    cfg = job(
        tmp_path / "in",
        tmp_path / "out <b>",
        "/models/m",
        storage={"options": {"secret": "SUPERSECRET-1", "key": "AKIA-XYZ"}},
    )
    args = {
        "collector": rec,
        "output": cfg.output.uri,
        "outcome": "1 shard(s) failed",
        "shards": {"total": 3, "skipped": 0, "published": 2, "failed": 1},
        "failed": {"day=1/c.parquet": "cannot read the shard: ArrowInvalid <bad>"},
        "summary": {"pairs_scored": 15, "padding_efficiency": 0.83},
        "config": cfg.redacted(),
        "fingerprint": {"model": "/models/m", "max_length": 128},
        "digest": "0123abcd",
        "ended_at": T0 + 9.0,
    }
    return report_data(**{**args, **overrides})


def test_report_json_holds_what_it_draws_and_no_credentials(tmp_path):
    data = report(tmp_path)
    text = json.dumps(data)
    assert "SUPERSECRET" not in text and "AKIA-XYZ" not in text
    assert data["failures"] == {
        "count": 1,
        "shards": {"day=1/c.parquet": "cannot read the shard: ArrowInvalid <bad>"},
    }
    assert data["rows"]["rows_in"] == 0  # nothing published: the run's own (empty) counts
    assert data["shards"]["failed"] == 1 and data["digest"] == "0123abcd"
    assert data["phases"]["planning_s"] == 2.0


def test_the_page_is_self_contained_escaped_and_has_every_chart(tmp_path):
    page = render_html(report(tmp_path))
    charts = set(re.findall(r'data-chart="([^"]+)"', page))
    assert {
        "phases",
        "stage-busy",
        "pairs-per-s",
        "tokens-per-s",
        "actor-pairs-per-s",
        "node-pairs",
        "actor-pairs",
        "token-lengths",
        "scores-score",
    } <= charts
    assert "<script" not in page and "src=" not in page and "href=" not in page and "url(" not in page
    assert "out <b>" not in page and "out &lt;b&gt;" in page  # every string from the run escaped
    assert "ArrowInvalid &lt;bad&gt;" in page and "empty &lt;passage&gt;" in page
    assert "SUPERSECRET" not in page


def test_an_interrupted_run_without_a_summary_still_renders(tmp_path):
    page = render_html(report(tmp_path, outcome="interrupted by SIGTERM", summary={}, failed={}))
    assert "interrupted by SIGTERM" in page and 'data-chart="node-pairs"' in page


def test_report_is_written_under_output_and_renders_from_its_json(tmp_path):
    data = report(tmp_path)
    out = str(tmp_path / "out")
    uri = write_report(Storage(), out, data)
    assert uri == f"{out}/{REPORT_HTML}"
    stored = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert (tmp_path / "out" / REPORT_HTML).read_text() == render_html(stored)


@pytest.mark.parametrize(("lo", "hi"), [(0, 88), (-0.8, 0.33), (0, 7.14), (3, 3), (0, 1e9)])
def test_ticks_cover_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2


def prepared(tmp_path) -> PreparedRun:
    cfg = job(tmp_path / "in", tmp_path / "out", "/models/m")
    return PreparedRun(
        cfg=cfg,
        storage=Storage(),
        settings=scoring_settings(),
        fingerprint={"model": "/models/m"},
        digest="d1",
        shards=[],
        output_files=[],
        done={},
        pending=[],
        split_queries=0,
        store=StoreIdentity({"model": "/models/m"}, "s1"),
        reuse=[],
        compare=Comparison(),
    )


def test_a_run_with_failed_shards_and_one_interrupted_write_their_report(tmp_path):
    run = prepared(tmp_path)
    failed = RunReport(shards_total=2, shards_skipped=0, failed={"b.parquet": "publish failed: boom"})
    failed.collector = recorder()
    feeder(failed.collector)(call(T0 + 5.0))
    write_run_report(run, failed)
    data = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert data["outcome"] == "1 shard(s) failed" and data["failures"]["count"] == 1

    stopped = RunReport(shards_total=2, shards_skipped=0, collector=recorder())
    stopped.collector.published({"shard": "a.parquet", "rows_in": 4, "rows_out": 4})  # before the stop
    with pytest.raises(RunInterrupted), reporting_stops(run, stopped):
        raise RunInterrupted(signal.SIGTERM, forced=True)  # a second signal: published_now never set
    data = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert data["outcome"].startswith("interrupted by SIGTERM twice") and data["shards"]["published"] == 1
    assert (tmp_path / "out" / REPORT_HTML).exists()


def test_a_run_that_scored_nothing_keeps_the_last_report(tmp_path):
    nothing = RunReport(shards_total=2, shards_skipped=2)
    nothing.collector = RunCollector(started_at=T0, max_length=128, score_columns=["score"])
    write_run_report(prepared(tmp_path), nothing)
    assert not (tmp_path / "out" / REPORT_JSON).exists()


# --- score reuse (--reuse): report.json's part, the page's section, the summary line -----------------


def reusing_collector() -> RunCollector:
    """8 pairs scored, 8 reused; 20 shards published that scored only, 5 that reused only, 1 empty."""
    rec = recorder()
    feeder(rec)(call(T0 + 5.0))
    none, every = np.zeros(8, bool), np.ones(8, bool)
    rec.add(call(T0 + 6.0, shard=1), scored=none, fresh=none, reused=every)
    for i in range(26):
        scored, reused = (100 + i, 0) if i < 20 else (0, 10) if i < 25 else (0, 0)
        rec.published({"shard": f"part-{i:02d}.parquet", "pairs_scored": scored, "pairs_reused": reused})
    return rec


def test_report_json_holds_the_pairs_reused_in_total_and_per_shard(tmp_path):
    lookup = {"sources": ["/runs/day0"], "pairs_found": 8, "seconds": 6.12, "store_files_skipped": 1}
    data = report(tmp_path, collector=reusing_collector(), summary={"reuse_lookup": lookup})
    r = data["reuse"]
    assert (r["pairs_scored"], r["pairs_reused"], r["share_reused"]) == (8, 8, 0.5)
    assert r["sources"] == ["/runs/day0"]
    assert r["lookup"] == {"pairs_found": 8, "seconds": 6.12, "store_files_skipped": 1}
    assert len(r["shards"]) == 26 and [s["path"] for s in r["shards"]] == sorted(
        s["path"] for s in r["shards"]
    )
    assert r["shards"][21] == {"path": "part-21.parquet", "pairs_scored": 0, "pairs_reused": 10}
    page = render_html(data)
    assert 'data-chart="reuse-share"' in page and "Score reuse" in page and "/runs/day0" in page
    assert "0–10: 20</title>" in page and "90–100: 5</title>" in page  # the share reused per shard
    assert "1 with no pairs left out of the histogram" in page
    busiest = re.findall(r"<td>(part-\d+\.parquet)</td>", page)  # the 20 that scored the most
    assert busiest == [f"part-{i:02d}.parquet" for i in range(19, -1, -1)]


def test_the_reuse_section_shows_only_for_a_run_with_reuse_or_sources(tmp_path):
    plain = report(tmp_path)
    assert plain["reuse"]["pairs_reused"] == 0 and plain["reuse"]["lookup"] is None
    for page in (render_html(plain), render_html({k: v for k, v in plain.items() if k != "reuse"})):
        assert "Score reuse" not in page and 'data-chart="reuse-share"' not in page
    given = report(tmp_path, config={"output": {"reuse": ["/runs/gone"]}})  # no source was usable
    assert given["reuse"]["sources"] == ["/runs/gone"] and given["reuse"]["share_reused"] == 0.0
    page = render_html(given)
    assert "Score reuse" in page and "No lookup ran" in page


def summary_lines(caplog, summary: dict, given: list[str]) -> list[str]:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="rerank")
    report = RunReport(shards_total=2, shards_skipped=0, shards_published=2, summary=summary)
    log_summary(report, given)
    return [r.getMessage() for r in caplog.records if r.name == "rerank"]


def test_the_summary_lines_tell_pairs_reused_from_pairs_scored(caplog):
    lookup = {"sources": ["/runs/day0"], "pairs_found": 18_800, "seconds": 6.12, "store_files_skipped": 0}
    both = {"pairs_scored": 1200, "pairs_reused": 18_800, "reuse_lookup": lookup}
    lines = summary_lines(caplog, both, ["/runs/day0"])
    assert "pairs: 1,200 scored, 18,800 reused (94.0 %) from 1 source(s); lookup 6.1 s" in lines
    lines = summary_lines(caplog, {**both, "pairs_scored": 0}, ["/runs/day0"])  # every pair reused
    assert "nothing scored" in lines[0] and "pairs: 0 scored, 18,800 reused (100.0 %)" in lines[1]
    unused = summary_lines(caplog, {"pairs_scored": 20, "pairs_reused": 0}, ["/runs/gone"])
    assert "pairs: 20 scored, 0 reused (0.0 %); none taken from the 1 --reuse source(s)" in unused[1]
    assert not any("reused" in line for line in summary_lines(caplog, {"pairs_scored": 20}, []))
    assert not any("reused" in line for line in summary_lines(caplog, {}, ["/runs/day0"]))  # all done


def comparison_figures(*, min_ndcg: float) -> dict:
    """What `finish` returns for a run compared with an earlier one and measured on judged queries,
    made by the compare package's own functions (the gate with --min-ndcg `min_ndcg`)."""
    drift = pa.table(
        {
            "query_id": [f"q<{i}>" for i in range(30)],
            "overlap10": [i / 29 for i in range(30)],
            "tau": [-1.0 + 2 * i / 29 for i in range(30)],
            "top1_changed": [i % 4 == 0 for i in range(30)],
            "common": [10] * 30,
        }
    )
    summary = {
        "queries": 12,
        "first_stage": {"ndcg10": 0.41, "mrr10": 0.38, "recall100": 0.9},
        "reranked": {"ndcg10": 0.52, "mrr10": 0.47, "recall100": 0.9},
    }
    checks = gate_checks(CompareConfig(min_ndcg=min_ndcg, max_ndcg_drop=0.05), summary, None, "/runs/day0")
    result = verdict(checks, summary, "/qrels.tsv")
    totals = {"added": 3, "removed": 1, "reranked": 40, "rescored": 7}
    return {
        "changes": {"against": "/runs/<day0>", "epsilon": 1e-4, "totals": totals, "files": [{"path": "a"}]},
        "drift": describe(drift_summary(drift)),
        "quality": {
            **summary,
            "first_stage_column": "bm25",
            "gate": {k: result[k] for k in ("passed", "failed", "checks")},
        },
    }


def test_the_comparison_and_quality_sections_show_the_figures_a_plot_and_the_gate(tmp_path):
    data = report(tmp_path, outcome="complete", comparison=comparison_figures(min_ndcg=0.5))
    assert data["comparison"]["changes"]["files"] == 1  # counted, not listed
    page = render_html(json.loads(json.dumps(data)))  # as read back from report.json
    assert "Comparison with the earlier run" in page and "Quality on judged queries" in page
    assert "/runs/&lt;day0&gt;" in page and "<td>rows reranked</td>" in page
    charts = set(re.findall(r'data-chart="([^"]+)"', page))
    assert {"drift-tau", "drift-overlap"} <= charts
    tau_chart = page.split('data-chart="drift-tau"')[1].split("</svg>")[0]
    assert tau_chart.count('class="bar"') == 30  # one query per 0.05-wide bin here
    assert "The 20 queries that moved most" in page and "<td>q&lt;0&gt;</td>" in page
    assert re.search(r"<td>nDCG@10</td><td>0\.4100</td><td>0\.5200</td><td>\+0\.1100</td>", page)
    assert "12 judged queries" in page and "bm25" in page
    assert 'Quality gate: <span class="ok">passed</span>' in page
    assert page.count('class="check-passed"') == 2 and 'class="check-failed"' not in page
    assert '<div class="gate-failed">' not in page


def test_a_failed_gate_is_marked_at_the_top_and_in_its_checks(tmp_path):
    figures = comparison_figures(min_ndcg=0.6)
    what = figures["quality"]["gate"]["failed"][0]["what"]
    held = report(tmp_path, outcome=f"held by the quality gate: {what}", comparison=figures)
    page = render_html(held)
    banner = page.index('<div class="gate-failed">')
    assert banner < page.index("<h2>Figures</h2>") and what in page[banner:]
    assert "Quality gate failed." in page and "nothing is scored again" in page
    assert 'Quality gate: <span class="bad">failed</span>' in page
    assert page.count('class="check-failed"') == 1 and page.count('class="check-passed"') == 1
    assert f'<b class="bad">held by the quality gate: {what}</b>' in page


def test_a_report_without_a_comparison_has_none_of_it(tmp_path):
    for data in (report(tmp_path), {k: v for k, v in report(tmp_path).items() if k != "comparison"}):
        page = render_html(data)
        assert "Comparison with the earlier run" not in page and "Quality on judged queries" not in page
        assert "drift-tau" not in page and '<div class="gate-failed">' not in page
        assert "Quality gate" not in page
    only_quality = {k: v for k, v in comparison_figures(min_ndcg=0.5).items() if k == "quality"}
    page = render_html(report(tmp_path, comparison=only_quality))
    assert "Quality on judged queries" in page and "Comparison with the earlier run" not in page
