"""Phase 1 of a run: every check (paths, storage, model, OUTPUT, the input contract, split
queries) and the device-dependent settings, resolved into a `PreparedRun`; nothing is written."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, cast

from pipeline.cluster import cluster_address, connect_ray, cpus_per_node, node_resources, resolve_device
from pipeline.config import ResolvedDtype
from pipeline.errors import ConfigError
from pipeline.io import ShardFile, Storage, storage_error
from pipeline.rerank.capacity import capacity_message, run_reservations, shortfalls
from pipeline.rerank.compare.plan import plan_comparison
from pipeline.rerank.compare.shard import Comparison
from pipeline.rerank.config import JobConfig
from pipeline.rerank.input.discovery import PendingShard, check_pending, check_split_queries, find_shards
from pipeline.rerank.output import checkpoint, legacy_manifest
from pipeline.rerank.output.fingerprint import (
    fingerprint,
    fingerprint_digest,
    recorded_fingerprint,
    with_recorded_model,
)
from pipeline.rerank.preflight import (
    check_paths,
    checked_model_identity,
    load_model_locally,
    storage_from_config,
)
from pipeline.rerank.reuse.identity import identity_digest, store_identity
from pipeline.rerank.reuse.sources import ReuseSource, usable_sources
from pipeline.rerank.reuse.store import StoreIdentity
from pipeline.rerank.settings import ScoringSettings, resolve_settings
from pipeline.rerank.stop import keeping_signal_handlers

log = logging.getLogger(__name__)


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
    store: StoreIdentity  # what this run's score store is made with (pipeline/rerank/reuse/)
    reuse: list[ReuseSource]  # --reuse: the sources this run takes stored scores from
    compare: Comparison  # --diff-against, --qrels: what each shard is compared with (compare/)
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


def check_locations(cfg: JobConfig) -> Storage:
    """Phase 1's first checks, which come before anything is written (OUTPUT's lease included):
    INPUT and OUTPUT apart, OUTPUT's storage usable. Returns the job's storage."""
    check_paths(cfg)  # OUTPUT inside INPUT: refused before any write creates anything there
    storage = storage_from_config(cfg)
    log.info("storage options: %s", storage.redacted())
    storage.check_root(cfg.output.uri, "OUTPUT")  # a missing bucket, denied access: named, exit 2
    return storage


def keep_recorded_dtype(recorded: Any, settings: ScoringSettings) -> ScoringSettings:
    """`--dtype auto` resuming an OUTPUT that an earlier run scored in another dtype this device
    runs (float32 before bf16 became CPU's `auto`, or on a node without bf16): the rerun keeps that
    dtype (`recorded`: OUTPUT's fingerprint), so that every shard of OUTPUT is scored alike and the
    resume is not refused."""
    dtype = recorded.get("dtype") if isinstance(recorded, dict) else None
    usable = ("float32", "bfloat16") if settings.device == "cpu" else ("float16", "bfloat16", "float32")
    if dtype is None or dtype == settings.dtype or dtype not in usable:
        return settings
    reason = f"auto, kept from OUTPUT's earlier run (it scored in {dtype}; --fresh lets auto choose again)"
    log.info("--dtype %s", reason)
    return replace(settings, dtype=cast(ResolvedDtype, dtype), dtype_reason=reason)


def check_capacity(cfg: JobConfig, settings: ScoringSettings) -> None:
    """The run's actors must fit the Ray it runs on (pipeline/rerank/capacity.py): an error on the
    Ray the job started, a warning on a cluster that may still grow."""
    problems = shortfalls(run_reservations(cfg.scoring, settings.gpus_per_actor), node_resources())
    if not problems:
        return
    local = cluster_address(cfg.ray) is None
    if local:
        raise ConfigError([capacity_message(problems, local=True)])
    log.warning("%s", capacity_message(problems, local=False))


def prepare(cfg: JobConfig, storage: Storage | None = None) -> PreparedRun:
    """Phase 1: every check, and the settings; writes nothing. Raises RerankError on bad usage.
    `storage`: what `check_locations(cfg)` returned when the caller ran it first (to take OUTPUT's
    lease in between); without it, prepare runs it."""
    storage = storage if storage is not None else check_locations(cfg)
    output = cfg.output.uri
    shards = find_shards(storage, cfg.input.uri)
    cfg, kind = load_model_locally(cfg, storage)
    with keeping_signal_handlers():  # ray.init would set a SIGTERM handler of its own (exit 15)
        connect_ray(cfg.ray)
    device = resolve_device(cfg.model.device)
    settings = resolve_settings(
        cfg.scoring,
        device=device,
        dtype=cfg.model.dtype,
        kind=kind,
        cpus_per_node=cpus_per_node(),
    )
    check_capacity(cfg, settings)
    # --fresh reads no bookkeeping file: it discards the progress
    recorded = None if cfg.output.fresh else recorded_fingerprint(storage, output)
    if cfg.model.dtype == "auto" and recorded is not None:
        settings = keep_recorded_dtype(recorded, settings)
    identity = checked_model_identity(cfg, storage)
    fp = fingerprint(cfg, settings.dtype, identity)
    scoring = store_identity(cfg, settings.dtype, identity)
    store = StoreIdentity(scoring, identity_digest(scoring))
    if recorded is not None:
        fp = with_recorded_model(fp, recorded)  # /m, /m/, ./m: one model (the identity decides)
    digest = fingerprint_digest(fp)
    files, done, legacy = resume_state(storage, output, shards, fp, cfg.output.fresh)
    if legacy:
        legacy_manifest.warn_unverified(output, cfg.model.name_or_path, len(done))
    todo = [s for s in shards if s.relpath not in done]
    pending = check_pending(storage, todo, cfg.input, cfg.model.score_columns)
    split = check_split_queries(storage, pending, done, cfg.input)
    reuse = usable_sources(storage, cfg.output.reuse, scoring, store.digest, output) if pending else []
    compare = plan_comparison(cfg, storage, pending, done, split)
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
        store=store,
        reuse=reuse,
        compare=compare,
        upgrade_legacy=legacy,
    )
