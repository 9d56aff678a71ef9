"""Runs one job: plan (all checks before scoring) → stream scores → publish shards → _SUCCESS."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa

from pipeline import checkpoint
from pipeline.assembly import ShardAssembler, ShardScores
from pipeline.config import (
    DEFAULT_MAX_BATCH_TOKENS,
    JobConfig,
    RayConfig,
    fingerprint,
    fingerprint_digest,
)
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.faults import crash_point
from pipeline.io import ShardFile, Storage, join, storage_error
from pipeline.kinds import check_model, load_pair_tokenizer, resolve_kind
from pipeline.model_cache import local_model_path
from pipeline.plan import PendingShard, check_pending, check_split_queries, find_shards
from pipeline.progress import Progress
from pipeline.reranker import resolve_dtype
from pipeline.split_queries import encode_hashes

log = logging.getLogger(__name__)

PUBLISH_CPUS = 0.25  # publishing is I/O; it must not starve the scoring pool of CPUs


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


def connect_ray(rc: RayConfig) -> None:
    """Joins $RAY_ADDRESS / ray.address if set (as `ray job submit` does), else starts a local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            address="local",  # a new local Ray, never one a `ray start` left on this machine
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=rc.num_cpus,
            object_store_memory=rc.object_store_memory_bytes,
        )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False


def resolve_device(requested: str) -> str:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if requested == "cuda" and gpus <= 0:
        raise ConfigError(["--device cuda, but the Ray cluster has no GPUs; use --device cpu or auto"])
    if requested == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return requested


def _check_paths(cfg: JobConfig) -> None:
    a, b = cfg.input.uri.rstrip("/") + "/", cfg.output.uri.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise ConfigError(
            [
                f"INPUT {cfg.input.uri!r} and OUTPUT {cfg.output.uri!r} overlap; "
                "write the output outside the input tree"
            ]
        )


def storage_from_config(cfg: JobConfig) -> Storage:
    return Storage.from_section(cfg.storage)


def _load_model_locally(cfg: JobConfig, storage: Storage) -> JobConfig:
    """Checks --model (fetching it into this node's cache if remote) before any shard work; returns
    the config with the model's kind resolved (auto -> encoder, llm or layerwise)."""
    m = cfg.model
    try:
        path = local_model_path(m.name_or_path, storage)
    except Exception as e:
        raise storage_error(m.name_or_path, "--model", e) from e
    kind = resolve_kind(path, m.kind)
    resolved = m.model_copy(update={"kind": kind})
    if kind == "encoder" and m.prompt is not None:
        raise ModelLoadError(
            f"--prompt is for llm/layerwise rerankers; --model {m.name_or_path!r} is an encoder"
        )
    if kind != "layerwise" and m.cutoff_layers is not None:
        raise ModelLoadError(
            f"--cutoff-layers is for layerwise rerankers; --model {m.name_or_path!r} is an {kind} reranker"
        )
    check_model(path, resolved)
    load_pair_tokenizer(path, resolved)
    log.info("model %s: %s reranker", m.name_or_path, kind)
    return cfg.model_copy(update={"model": resolved})


def run(cfg: JobConfig) -> RunReport:
    """Runs the job to completion (or to the shards that failed). Raises RerankError on bad usage."""
    _check_paths(cfg)
    storage = storage_from_config(cfg)
    log.info("storage options: %s", storage.redacted())
    output = cfg.output.uri
    shards = find_shards(storage, cfg.input.uri)
    storage.check_root(output, "OUTPUT")
    cfg = _load_model_locally(cfg, storage)
    connect_ray(cfg.ray)
    device = resolve_device(cfg.model.device)
    dtype = resolve_dtype(cfg.model.dtype, device)
    fp = fingerprint(cfg, dtype)
    digest = fingerprint_digest(fp)
    fresh = cfg.output.fresh
    try:
        files = checkpoint.check_output(storage, output, fp, digest, fresh)
        done = {} if fresh else checkpoint.load_done(storage, output, shards, digest)
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    todo = [s for s in shards if s.relpath not in done]
    pending = check_pending(storage, todo, cfg.input)
    split = check_split_queries(pending, done, cfg.input)
    crash_point("before_write")  # every check passed; nothing written yet
    try:
        checkpoint.claim_output(storage, output, fp, digest, fresh, files)
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    log.info(
        "%d shard(s) under %s: %d already done, %d to score (device=%s, dtype=%s)",
        len(shards),
        cfg.input.uri,
        len(done),
        len(todo),
        device,
        dtype,
    )
    report = RunReport(shards_total=len(shards), shards_skipped=len(done))
    markers = list(done.values())
    if pending:
        storage.remove(join(output, checkpoint.SUCCESS))
        budget = cfg.scoring.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS[device]  # or "auto"
        markers += _score_and_publish(cfg, storage, pending, device, dtype, budget, digest, report)
    report.summary["split_queries"] = split
    if report.ok:
        crash_point("before_success")
        report.success_manifest = checkpoint.write_success(
            storage, output, markers, fp, digest, report.summary
        )
    return report


def _score_and_publish(
    cfg: JobConfig,
    storage: Storage,
    pending: list[PendingShard],
    device: str,
    dtype: str,
    budget: int | str,
    digest: str,
    report: RunReport,
) -> list[dict[str, Any]]:
    import ray

    from pipeline.build import build
    from pipeline.publish import publish_shard

    by_id: dict[int, ShardFile] = {}
    for i, p in enumerate(pending):
        if p.num_rows < 0:
            report.failed[p.shard.relpath] = "unreadable Parquet footer"
        elif p.num_rows == 0:
            pass  # published below without scoring
        else:
            by_id[i] = p.shard
    rows = {i: pending[i].num_rows for i in by_id}
    progress = Progress(shards_total=len(pending), pairs_total=sum(rows.values()))
    publish = ray.remote(publish_shard).options(num_cpus=PUBLISH_CPUS, max_retries=3)
    common = {
        "storage": storage,
        "output": cfg.output.uri,
        "columns": cfg.input,
        "ranking": cfg.ranking,
        "digest": digest,
        "score_columns": cfg.model.score_columns,
    }
    inflight: dict[Any, ShardFile] = {}
    markers: list[dict[str, Any]] = []

    query_hashes = {p.shard.relpath: encode_hashes(set(p.query_ids)) for p in pending}

    def submit(shard: ShardFile, scored: ShardScores) -> None:
        ref = publish.remote(
            shard=shard, scored=scored, query_id_hashes=query_hashes[shard.relpath], **common
        )
        inflight[ref] = shard
        crash_point("publish_in_flight")

    def reap(timeout: float | None) -> None:
        ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=timeout)
        for ref in ready:
            shard = inflight.pop(ref)
            try:
                stats = ray.get(ref)
            except Exception as e:
                report.failed[shard.relpath] = f"publish failed: {e}"
                continue
            crash_point("between_publish_and_marker")
            marker = checkpoint.write_marker(storage, cfg.output.uri, shard, digest, stats)
            markers.append(marker)
            report.shards_published += 1
            progress.published(shard.relpath, marker["rows_out"])

    for p in pending:
        if p.num_rows == 0:
            submit(p.shard, ShardScores.empty(0, len(cfg.model.score_columns)))
    assembler = ShardAssembler(rows, cfg.model.score_columns)
    if by_id:
        ds = build(cfg, storage, by_id, device, dtype, budget)
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                batch = cast(pa.Table, block)
                added = assembler.add(batch)
                progress.scored(added.pairs, added.tokens, added.padded_tokens)
                progress.placed(batch)
                progress.timed(batch)
                for s in added.complete:
                    submit(by_id[s], assembler.take(s))
                if inflight:
                    reap(timeout=0)
        except Exception as e:  # the pipeline itself died: every unfinished shard fails with it
            log.error("scoring pipeline failed: %s", e)
            for s, reason in assembler.incomplete().items():
                report.failed[by_id[s].relpath] = f"scoring pipeline failed: {e} ({reason})"
    while inflight:
        reap(timeout=None)
    for s, reason in {**assembler.failed, **assembler.incomplete()}.items():
        report.failed.setdefault(by_id[s].relpath, reason)
    report.summary = progress.summary()
    return markers
