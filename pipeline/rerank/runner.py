"""Runs one rerank job, in phases:

1. prepare (`prepare.py`): every check (paths, storage, model, OUTPUT, the input contract,
   split queries) and the device-dependent settings; nothing is written;
2. claim OUTPUT: the run's first writes (fingerprint, --fresh, stale temp files);
3. score and publish: the Ray Data plan streams scores, each complete shard is published;
4. finalize: `_SUCCESS`, once every shard is done.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa

from pipeline.errors import RunInterrupted, RunStopped
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage, join, storage_error
from pipeline.rerank.build import build, build_lookup
from pipeline.rerank.compare.finish import finish as finish_comparisons
from pipeline.rerank.config import JobConfig
from pipeline.rerank.output import checkpoint, legacy_manifest, paths
from pipeline.rerank.output.lease import LeaseClaim
from pipeline.rerank.output.status import write_shard_list
from pipeline.rerank.prepare import PreparedRun, prepare
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.console import open_console
from pipeline.rerank.report.run_report import publish_report, report_data
from pipeline.rerank.reuse.lookup import lookup_notes, reused_uri
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import WriteSettings, not_published_disk_full
from pipeline.rerank.stop import counting_shards, deferring_forced_stops, raise_if_stopped
from pipeline.rerank.stream.assembly import ShardAssembler
from pipeline.rerank.stream.publisher import ShardPublisher, writers_for

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a run did; `jobs/` turns it into an exit code and the final summary."""

    shards_total: int
    shards_skipped: int
    shards_published: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    success_manifest: dict[str, Any] | None = None
    collector: RunCollector | None = None  # the run's figures (pipeline/rerank/report/collector.py)
    disk_full: str | None = None  # OUTPUT's disk (or quota) filled up: the first shard's reason
    comparison: dict[str, Any] = field(default_factory=dict)  # changes, drift, quality (compare/finish.py)

    @property
    def held(self) -> bool:
        """Every shard published, but the quality gate kept `_SUCCESS` back."""
        return self.ok and not self.comparison.get("quality", {}).get("gate", {}).get("passed", True)

    @property
    def ok(self) -> bool:
        return not self.failed


def claim(run: PreparedRun) -> None:
    """Phase 2: the run's first writes."""
    output = run.cfg.output.uri
    try:
        checkpoint.claim_output(
            run.storage, output, run.fingerprint, run.digest, run.cfg.output.fresh, run.output_files
        )
        if run.upgrade_legacy:
            legacy_manifest.upgrade(run.storage, output, run.done, run.fingerprint, run.digest)
        checkpoint.record_reuse(run.storage, output, run.cfg.output.reuse, [r.uri for r in run.reuse])
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    s = run.settings
    log.info(
        "%d shard(s) under %s: %d already done, %d to score (device=%s, dtype=%s)",
        len(run.shards),
        run.cfg.input.uri,
        len(run.done),
        len(run.pending),
        s.device,
        s.dtype,
    )


def score_and_publish(
    run: PreparedRun, report: RunReport, collector: RunCollector, claim: LeaseClaim | None = None
) -> list[dict[str, Any]]:
    """Phase 3: streams every pending shard through the plan and publishes each one complete
    (checking, with a lease `claim`, that the run still holds OUTPUT before each write); every
    figure goes to `collector`."""
    cfg = run.cfg
    run.storage.remove(join(cfg.output.uri, paths.SUCCESS))
    by_id: dict[int, ShardFile] = {}
    for i, p in enumerate(run.pending):
        if p.num_rows < 0:
            report.failed[p.shard.relpath] = f"cannot read the shard: {p.error or 'unknown error'}"
        elif p.num_rows > 0:
            by_id[i] = p.shard
    rows = {i: run.pending[i].num_rows for i in by_id}
    shards_total, pairs_total = len(run.pending), sum(rows.values())
    console = open_console(cfg.progress.interval_s, shards_total, pairs_total)
    collector.show_progress(console, shards_total=shards_total, pairs_total=pairs_total)
    publisher = ShardPublisher(
        settings=write_settings(run, claim),
        query_id_hashes={p.shard.relpath: p.query_hashes for p in run.pending},
        on_published=collector.published,
        writers=writers_for(cfg.scoring.max_actors),
    )
    empty = [p.shard for p in run.pending if p.num_rows == 0]  # nothing to score: published empty
    publisher.submit([(shard, ShardScores.empty(0, len(cfg.model.score_columns))) for shard in empty])
    chunked = cfg.input.long_passages == "chunk"  # rows arrive as windows, aggregated per row
    assembler = ShardAssembler(rows, cfg.model.score_columns, cfg.input.chunk_aggregate if chunked else None)
    try:
        reused = find_reused(run, by_id, report) if by_id and run.reuse else None
        collector.reused_expected = report.summary.get("reuse_lookup", {}).get("pairs_found", 0)
        if by_id:
            stream_scores(run, by_id, assembler, publisher, collector, report, reused)
        publisher.drain()
    except RunStopped:  # at once (a second signal, a lost lease): what did finish still counts
        publisher.collect_finished()
        raise
    finally:
        collector.close()  # the live bar ends before anything else is printed
        publisher.close()
        if run.reuse:
            remove_scratch(run)
    report.failed.update(publisher.failed)
    report.shards_published = collector.shards_done  # one count of published shards (collector.py)
    report.disk_full = publisher.disk_full
    for s, reason in {**assembler.failed, **assembler.incomplete()}.items():
        unscored = not_published_disk_full(cfg.output.uri) if publisher.disk_full else reason
        report.failed.setdefault(by_id[s].relpath, unscored)
    report.summary = {**report.summary, **collector.summary()}
    return publisher.markers


def remove_scratch(run: PreparedRun) -> None:
    """The --reuse lookup's files (OUTPUT/_rerank/reuse/): only this run reads them."""
    try:
        run.storage.remove(join(run.cfg.output.uri, paths.REUSE))
    except OSError as e:  # the next run's lookup removes them first
        log.warning("could not remove the --reuse lookup's files: %s", e)


def write_settings(run: PreparedRun, claim: LeaseClaim | None) -> WriteSettings:
    """What every shard of this run is published with (the writers hold it)."""
    cfg = run.cfg
    return WriteSettings(
        storage=run.storage,
        output=cfg.output.uri,
        columns=cfg.input,
        ranking=cfg.ranking,
        digest=run.digest,
        score_columns=cfg.model.score_columns,
        claim=claim,
        store=run.store,
        compare=run.compare,
    )


def find_reused(run: PreparedRun, by_id: dict[int, ShardFile], report: RunReport) -> dict[int, str]:
    """--reuse: runs the lookup (build.build_lookup) before anything is tokenized; returns, per
    shard with stored scores, the file of them the tokenize stage reads. A lookup that fails costs
    the reuse, not the run: every pair is scored."""
    cfg, started = run.cfg, time.monotonic()
    scratch = join(cfg.output.uri, paths.REUSE)
    found: dict[int, str] = {}
    pairs = 0
    try:
        run.storage.remove(scratch)  # an earlier run's lookup, if it was killed
        ds = build_lookup(
            shards=by_id,
            rows={i: run.pending[i].num_rows for i in by_id},
            store_files=[source.files for source in run.reuse],
            columns=cfg.input,
            score_columns=cfg.model.score_columns,
            storage=run.storage,
            output=cfg.output.uri,
            digest=run.store.digest,
            stored_pairs=sum(source.pairs for source in run.reuse),
        )
        for row in ds.iter_rows():
            found[int(row["shard"])] = reused_uri(cfg.output.uri, int(row["shard"]))
            pairs += int(row["pairs"])
        notes = lookup_notes(run.storage, cfg.output.uri)
        crash_point("after_reuse_lookup")
    except RunStopped:
        raise
    except Exception as e:
        log.warning("--reuse lookup failed, every pair is scored: %s: %s", type(e).__name__, e)
        return {}
    seconds = time.monotonic() - started
    report.summary["reuse_lookup"] = {
        "sources": [r.uri for r in run.reuse],
        "pairs_found": pairs,
        "seconds": round(seconds, 2),
        "store_files_skipped": len(notes),
    }
    log.info(
        "--reuse: %s stored score(s) found for %d pending shard(s) in %.1fs%s",
        f"{pairs:,}",
        len(found),
        seconds,
        f"; {len(notes)} store file(s) skipped (see the warnings)" if notes else "",
    )
    return found


def stream_scores(
    run: PreparedRun,
    by_id: dict[int, ShardFile],
    assembler: ShardAssembler,
    publisher: ShardPublisher,
    collector: RunCollector,
    report: RunReport,
    reused: dict[int, str] | None = None,
) -> None:
    """Iterates the plan's output; hands each shard to the publisher the moment it is complete.
    `reused`: `find_reused`'s files (None: the run reuses nothing)."""
    cfg = run.cfg
    ds = build(
        shards=by_id,
        rows={i: run.pending[i].num_rows for i in by_id},
        model=cfg.model,
        columns=cfg.input,
        pool=cfg.scoring,
        settings=run.settings,
        storage=run.storage,
        reused=reused,
    )
    try:
        for batch in scored_blocks(ds):
            added = assembler.add(batch)  # which rows count: the assembler's to say (collector.py)
            collector.add(batch, scored=added.scored, fresh=added.fresh, reused=added.reused)
            collector.completed([by_id[s].relpath for s in added.complete])
            publisher.submit([(by_id[s], assembler.take(s)) for s in added.complete])
            publisher.reap(timeout=0)
            if publisher.disk_full:  # nothing more can be published: scoring the rest is wasted
                break
    except Exception as e:  # the pipeline itself died: every unfinished shard fails with it
        log.exception("scoring pipeline failed: %s", e)
        for s, reason in assembler.incomplete().items():
            report.failed[by_id[s].relpath] = f"scoring pipeline failed: {e} ({reason})"
    try:  # Ray Data's own figures of the plan (a developer API): the tokenize stage's time
        collector.operator_stats(ds.get_stats_summary())
    except Exception as e:
        log.debug("no Ray Data stats for the run report: %s", e)


def scored_blocks(ds: Any) -> Iterator[pa.Table]:
    """The plan's blocks of scores, each as soon as it exists (prefetch_batches=0: with prefetching
    the iterator holds each block until the next one arrives, so few large calls would publish
    nothing until the end). A second signal while Ray Data fetches one is raised once it returns."""
    blocks = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    while True:
        with deferring_forced_stops():
            block = next(blocks, None)
        if block is None:
            return
        yield cast(pa.Table, block)


def finalize(run: PreparedRun, markers: list[dict[str, Any]], report: RunReport, planning_s: float) -> None:
    """Phase 4: the run's last figures, and `_SUCCESS` when every shard is done."""
    report.summary["split_queries"] = run.split_queries
    report.summary["planning_s"] = round(planning_s, 2)
    if report.ok:  # every shard done: its comparisons (compare/finish.py), then the gate
        markers, report.comparison = finish_comparisons(
            run.compare, run.storage, run.cfg, run.shards, markers
        )
    # ru_maxrss is KiB on Linux: the driver's own peak, whatever the corpus size
    report.summary["driver_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    if not report.ok:
        return
    if report.held:  # the shards stay published; no _SUCCESS announces them
        run.storage.remove(join(run.cfg.output.uri, paths.SUCCESS))
        return
    crash_point("before_success")
    report.success_manifest = checkpoint.write_success(
        run.storage,
        run.cfg.output.uri,
        markers,
        run.fingerprint,
        run.digest,
        report.summary,
        store=run.store.manifest(),
        comparison=report.comparison,
    )


def run(cfg: JobConfig, lease_claim: LeaseClaim | None = None, storage: Storage | None = None) -> RunReport:
    """Runs the job to completion (or to the shards that failed). Raises RerankError on bad usage.
    `lease_claim`: the OUTPUT lease this run holds (exclusive_run.py), checked by every writer;
    `storage`: what `prepare.check_locations` returned before that lease was taken."""
    started, started_at = time.monotonic(), time.time()
    raise_if_stopped()  # SIGINT/SIGTERM before any work
    prepared = prepare(cfg, storage)
    planning_s = time.monotonic() - started
    log.info("planning took %.2fs", planning_s)
    crash_point("before_write")  # every check passed; nothing written yet
    report = RunReport(shards_total=len(prepared.shards), shards_skipped=len(prepared.done))
    report.collector = collector = RunCollector(
        started_at=started_at, max_length=cfg.model.max_length, score_columns=cfg.model.score_columns
    )
    with (
        counting_shards(
            total=len(prepared.shards),
            done_before=len(prepared.done),
            published_now=lambda: collector.shards_done,
        ),
        reporting_stops(prepared, report),
    ):
        raise_if_stopped()  # a signal during prepare: nothing written yet
        claim(prepared)
        write_shard_list(prepared.storage, cfg.output.uri, cfg.input.uri, prepared.shards)
        markers = list(prepared.done.values())
        if prepared.pending:
            collector.plan_started(planning_s)
            # stops at a safe point (stop.py)
            markers += score_and_publish(prepared, report, collector, lease_claim)
        raise_if_stopped()  # no _SUCCESS once told to stop (a lost lease forbids any write)
    finalize(prepared, markers, report, planning_s)
    write_run_report(prepared, report)
    return report


def write_run_report(run: PreparedRun, report: RunReport, outcome: str | None = None) -> None:
    """OUTPUT/_rerank/report.{json,html} of a run that scored (pipeline/rerank/report/run_report.py); a run
    with nothing to score keeps the report of the last one that did."""
    if report.collector is None or not report.collector.has_numbers:
        return
    counts = (report.shards_total, report.shards_skipped, report.shards_published, len(report.failed))
    data = report_data(
        collector=report.collector,
        output=run.cfg.output.uri,
        outcome=outcome or outcome_of(report),
        shards=dict(zip(("total", "skipped", "published", "failed"), counts, strict=True)),
        failed=report.failed,
        summary=report.summary,
        config=run.cfg.redacted(),
        fingerprint=run.fingerprint,
        digest=run.digest,
        totals=(report.success_manifest or {}).get("totals"),
        comparison=report.comparison,
    )
    publish_report(run.storage, run.cfg.output.uri, data)


def outcome_of(report: RunReport) -> str:
    if report.held:
        failed = report.comparison["quality"]["gate"]["failed"]
        return "held by the quality gate: " + "; ".join(c["what"] for c in failed)
    if report.ok:
        return "complete"
    full = ": OUTPUT's disk (or quota) is full" if report.disk_full else ""
    return f"{len(report.failed)} shard(s) failed{full}"


@contextmanager
def reporting_stops(run: PreparedRun, report: RunReport) -> Iterator[None]:
    """A run stopped by SIGINT/SIGTERM still writes its report (a lost lease: nothing more)."""
    try:
        yield
    except RunInterrupted as stop:
        if report.collector is not None:  # the shards published before the stop (collector.py)
            report.shards_published = report.collector.shards_done
        write_run_report(run, report, outcome=stop.reason)
        raise
