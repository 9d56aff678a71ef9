"""Runs one rerank job, in phases:

1. prepare: every check (paths, storage, model, OUTPUT, the input contract, split queries) and
   the device-dependent settings; nothing is written;
2. claim OUTPUT: the run's first writes (fingerprint, --fresh, stale temp files);
3. score and publish: the Ray Data plan streams scores, each complete shard is published;
4. finalize: `_SUCCESS`, once every shard is done.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa

from pipeline.cluster import connect_ray, cpus_per_node, resolve_device
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage, join, storage_error
from pipeline.rerank import checkpoint, legacy_manifest
from pipeline.rerank.assembly import ShardAssembler, ShardScores
from pipeline.rerank.build import build
from pipeline.rerank.config import JobConfig, fingerprint, fingerprint_digest
from pipeline.rerank.discovery import PendingShard, check_pending, check_split_queries, find_shards
from pipeline.rerank.preflight import (
    check_paths,
    checked_model_identity,
    load_model_locally,
    storage_from_config,
)
from pipeline.rerank.progress import Progress
from pipeline.rerank.publisher import ShardPublisher
from pipeline.rerank.settings import ScoringSettings, resolve_settings
from pipeline.rerank.stop import counting_shards, raise_if_stopped, reinstall_signal_handlers

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

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True, kw_only=True)
class PreparedRun:
    """Everything the run found and decided before its first write."""

    cfg: JobConfig  # with the model's kind resolved
    storage: Storage
    settings: ScoringSettings
    fingerprint: dict[str, Any]
    digest: str
    shards: list[ShardFile]
    output_files: list[str]  # OUTPUT's listing, read once
    done: dict[str, dict[str, Any]]  # relpath -> marker of a shard already published
    pending: list[PendingShard]
    split_queries: int
    upgrade_legacy: bool = False  # OUTPUT's manifest predates model_identity (legacy_manifest.py)


def resume_state(
    storage: Storage, output: str, shards: list[ShardFile], fp: dict[str, Any], fresh: bool
) -> tuple[list[str], dict[str, dict[str, Any]], bool]:
    """OUTPUT's listing (read once), the markers of shards already done for this fingerprint, and
    whether they come from an earlier version's manifest of the same config (to upgrade)."""
    digest = fingerprint_digest(fp)
    try:
        legacy = None if fresh else legacy_manifest.legacy_fingerprint(storage, output, fp)
        accepted = legacy or fp  # an earlier version's manifest of this config, or ours
        files = checkpoint.check_output(storage, output, accepted, fingerprint_digest(accepted), fresh)
        done = {} if fresh else checkpoint.load_done(storage, output, shards, digest, files)
        if legacy is not None:
            old = checkpoint.load_done(storage, output, shards, fingerprint_digest(legacy), files)
            done = {**legacy_manifest.upgraded_markers(old, digest), **done}
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    return files, done, legacy is not None


def prepare(cfg: JobConfig) -> PreparedRun:
    """Phase 1: every check, and the settings; writes nothing. Raises RerankError on bad usage."""
    check_paths(cfg)
    storage = storage_from_config(cfg)
    log.info("storage options: %s", storage.redacted())
    output = cfg.output.uri
    shards = find_shards(storage, cfg.input.uri)
    storage.check_root(output, "OUTPUT")
    cfg, kind = load_model_locally(cfg, storage)
    connect_ray(cfg.ray)
    reinstall_signal_handlers()  # ray.init installs its own SIGTERM handler
    device = resolve_device(cfg.model.device)
    settings = resolve_settings(
        cfg.scoring,
        device=device,
        dtype=cfg.model.dtype,
        kind=kind,
        cpus_per_node=cpus_per_node(),
    )
    fp = fingerprint(cfg, settings.dtype, checked_model_identity(cfg, storage))
    digest = fingerprint_digest(fp)
    files, done, legacy = resume_state(storage, output, shards, fp, cfg.output.fresh)
    if legacy:
        legacy_manifest.warn_unverified(output, cfg.model.name_or_path, len(done))
    todo = [s for s in shards if s.relpath not in done]
    pending = check_pending(storage, todo, cfg.input, cfg.model.score_columns)
    split = check_split_queries(storage, pending, done, cfg.input)
    return PreparedRun(
        cfg=cfg,
        storage=storage,
        settings=settings,
        fingerprint=fp,
        digest=digest,
        shards=shards,
        output_files=files,
        done=done,
        pending=pending,
        split_queries=split,
        upgrade_legacy=legacy,
    )


def claim(run: PreparedRun) -> None:
    """Phase 2: the run's first writes."""
    output = run.cfg.output.uri
    try:
        checkpoint.claim_output(
            run.storage, output, run.fingerprint, run.digest, run.cfg.output.fresh, run.output_files
        )
        if run.upgrade_legacy:
            legacy_manifest.upgrade(run.storage, output, run.done, run.fingerprint, run.digest)
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


def score_and_publish(run: PreparedRun, report: RunReport) -> list[dict[str, Any]]:
    """Phase 3: streams every pending shard through the plan and publishes each one complete."""
    cfg = run.cfg
    run.storage.remove(join(cfg.output.uri, checkpoint.SUCCESS))
    by_id: dict[int, ShardFile] = {}
    for i, p in enumerate(run.pending):
        if p.num_rows < 0:
            report.failed[p.shard.relpath] = f"cannot read the shard: {p.error or 'unknown error'}"
        elif p.num_rows > 0:
            by_id[i] = p.shard
    rows = {i: run.pending[i].num_rows for i in by_id}
    progress = Progress(shards_total=len(run.pending), pairs_total=sum(rows.values()))
    publisher = ShardPublisher(
        storage=run.storage,
        output=cfg.output.uri,
        columns=cfg.input,
        ranking=cfg.ranking,
        digest=run.digest,
        score_columns=cfg.model.score_columns,
        query_id_hashes={p.shard.relpath: p.query_hashes for p in run.pending},
        progress=progress,
    )
    empty = [p.shard for p in run.pending if p.num_rows == 0]  # nothing to score: published empty
    publisher.submit([(shard, ShardScores.empty(0, len(cfg.model.score_columns))) for shard in empty])
    assembler = ShardAssembler(rows, cfg.model.score_columns)
    if by_id:
        stream_scores(run, by_id, assembler, publisher, progress, report)
    publisher.drain()
    report.failed.update(publisher.failed)
    report.shards_published = len(publisher.markers)
    for s, reason in {**assembler.failed, **assembler.incomplete()}.items():
        report.failed.setdefault(by_id[s].relpath, reason)
    report.summary = progress.summary()
    return publisher.markers


def stream_scores(
    run: PreparedRun,
    by_id: dict[int, ShardFile],
    assembler: ShardAssembler,
    publisher: ShardPublisher,
    progress: Progress,
    report: RunReport,
) -> None:
    """Iterates the plan's output; hands each shard to the publisher the moment it is complete."""
    cfg = run.cfg
    ds = build(
        shards=by_id,
        rows={i: run.pending[i].num_rows for i in by_id},
        model=cfg.model,
        columns=cfg.input,
        pool=cfg.scoring,
        settings=run.settings,
        storage=run.storage,
    )
    try:
        # prefetch_batches=0: a block is handed over as soon as it exists; with prefetching the
        # iterator holds each block until the next one arrives, so few large calls would publish
        # nothing until the end
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            batch = cast(pa.Table, block)
            added = assembler.add(batch)
            progress.scored(added.pairs, added.tokens, added.padded_tokens)
            progress.placed(batch)
            progress.timed(batch)
            publisher.submit([(by_id[s], assembler.take(s)) for s in added.complete])
            publisher.reap(timeout=0)
    except Exception as e:  # the pipeline itself died: every unfinished shard fails with it
        log.error("scoring pipeline failed: %s", e)
        for s, reason in assembler.incomplete().items():
            report.failed[by_id[s].relpath] = f"scoring pipeline failed: {e} ({reason})"


def finalize(run: PreparedRun, markers: list[dict[str, Any]], report: RunReport, planning_s: float) -> None:
    """Phase 4: the run's last figures, and `_SUCCESS` when every shard is done."""
    report.summary["split_queries"] = run.split_queries
    report.summary["planning_s"] = round(planning_s, 2)
    # ru_maxrss is KiB on Linux: the driver's own peak, whatever the corpus size
    report.summary["driver_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    if not report.ok:
        return
    crash_point("before_success")
    report.success_manifest = checkpoint.write_success(
        run.storage, run.cfg.output.uri, markers, run.fingerprint, run.digest, report.summary
    )


def run(cfg: JobConfig) -> RunReport:
    """Runs the job to completion (or to the shards that failed). Raises RerankError on bad usage."""
    started = time.monotonic()
    raise_if_stopped()  # SIGINT/SIGTERM before any work
    prepared = prepare(cfg)
    planning_s = time.monotonic() - started
    log.info("planning took %.2fs", planning_s)
    crash_point("before_write")  # every check passed; nothing written yet
    with counting_shards(total=len(prepared.shards), done_before=len(prepared.done)):
        raise_if_stopped()  # a signal during prepare: nothing written yet
        claim(prepared)
        report = RunReport(shards_total=len(prepared.shards), shards_skipped=len(prepared.done))
        markers = list(prepared.done.values())
        if prepared.pending:
            markers += score_and_publish(prepared, report)  # stops at a safe point (stop.py)
        raise_if_stopped()  # no _SUCCESS once told to stop (a lost lease forbids any write)
    finalize(prepared, markers, report, planning_s)
    return report
