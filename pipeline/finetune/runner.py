"""Runs one fine-tuning job from the driver: checks → data → TorchTrainer → the published model.

Every check that can fail does so before any worker starts: the config, the model's kind, every
data line, OUTPUT (already a model: nothing to do; anything else there: refuse), and the
checkpoints (left by a run with another config: refuse, or `--fresh`), the Ray cluster and the
precision it allows. Only then come the first writes: `--fresh` discarding checkpoints, the run file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.cluster import connect_ray, resolve_device
from pipeline.errors import ConfigError, OutputStateError
from pipeline.faults import ENV as CRASH_ENV
from pipeline.finetune.config import FinetuneConfig, ModelSection, TrainSection, with_kind_defaults
from pipeline.finetune.data import TrainQuery, load_queries
from pipeline.finetune.diagnostics import schedule_warning
from pipeline.finetune.groups import schedule_for
from pipeline.finetune.publish import REPORT
from pipeline.finetune.train_loop import train_worker
from pipeline.io import Storage, join, storage_error
from pipeline.logs import is_verbose
from pipeline.model_cache import check_model_path, local_model_path
from pipeline.models.families.registry import family_named
from pipeline.models.kinds import resolve_model
from pipeline.models.limits import check_max_length

log = logging.getLogger(__name__)

RUN_FILE = "_finetune.json"


def storage_of(cfg: FinetuneConfig) -> Storage:
    return Storage.from_section(cfg.storage)


def _check_teacher(queries: list[TrainQuery], loss: str) -> None:
    if loss == "ce":
        return
    missing = [q.source for q in queries if not q.has_teacher]
    if missing:
        raise ConfigError(
            [
                f"--loss {loss} needs teacher scores, but {len(missing)} training queries have none "
                f"(first: {', '.join(missing[:3])}); add pos_scores/neg_scores, train on scored shards, "
                "or use --loss ce"
            ]
        )


def _check_checkpoints(storage: Storage, cfg: FinetuneConfig) -> None:
    """Checkpoints under the checkpoint URI must come from this config (`--fresh`: they will be
    discarded, so any config may follow). Reads only; `_claim_checkpoints` writes."""
    uri = cfg.output.resolved_checkpoint_uri
    if cfg.output.fresh:
        return
    found = storage.read_json(join(uri, RUN_FILE))
    mine = cfg.fingerprint()
    if found is not None and found != mine:
        changed = sorted(
            f"{section}.{k}"
            for section in mine
            for k in set(mine[section]) | set(found.get(section, {}))
            if mine[section].get(k) != found.get(section, {}).get(k)
        )
        raise OutputStateError(
            f"checkpoints at {uri!r} belong to a run with another config (changed: {', '.join(changed)}); "
            "rerun with that config to resume it, or pass --fresh to discard them"
        )


def _claim_checkpoints(storage: Storage, cfg: FinetuneConfig) -> None:
    """The run's first writes, once every check passed: `--fresh` discards the checkpoints, and
    the checkpoint URI records this config."""
    uri = cfg.output.resolved_checkpoint_uri
    if cfg.output.fresh:
        storage.remove(uri)
    if storage.read_json(join(uri, RUN_FILE)) is None:
        storage.write_json_atomic(join(uri, RUN_FILE), cfg.fingerprint())


def _ray_storage(storage: Storage, uri: str) -> dict[str, Any]:
    """RunConfig's storage_path / name / storage_filesystem for a checkpoint URI on any storage."""
    fs, path = storage.filesystem(uri)
    path = path.rstrip("/")
    parent, name = os.path.dirname(path), os.path.basename(path)
    if storage.is_local(uri):
        return {"storage_path": os.path.abspath(parent or "."), "name": name}
    import pyarrow.fs

    handler = pyarrow.fs.FSSpecHandler(fs)
    return {"storage_path": parent, "name": name, "storage_filesystem": pyarrow.fs.PyFileSystem(handler)}


def _trainer(
    cfg: FinetuneConfig, storage: Storage, model: ModelSection, train: Any, evals: Any, device: str
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    r = cfg.run
    use_gpu = device == "cuda"
    run_options: dict[str, Any] = {
        **_ray_storage(storage, cfg.output.resolved_checkpoint_uri),
        "checkpoint_config": CheckpointConfig(num_to_keep=r.checkpoints_to_keep),
        "failure_config": FailureConfig(max_failures=r.max_failures),
        # Ray Train's own console lines (its file logs keep everything): errors only unless --verbose
        "logging_config": LoggingConfig(log_level="INFO" if is_verbose() else "ERROR"),
    }
    if os.environ.get(CRASH_ENV):  # the test-only crash hook travels to the workers (Ray Train V2 option)
        run_options["worker_runtime_env"] = {"env_vars": {CRASH_ENV: os.environ[CRASH_ENV]}}
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "kind": model.kind,
            "model": model.model_dump(mode="json"),  # kind, family and instruction resolved
            "train": train,
            "eval": evals,
            "storage": storage,
        },
        scaling_config=ScalingConfig(
            num_workers=r.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(**run_options),
    )


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def with_absolute_paths(cfg: FinetuneConfig) -> FinetuneConfig:
    """Local paths made absolute: Ray Train workers run in another working directory."""
    output = cfg.output.model_copy(
        update={
            "uri": _absolute(cfg.output.uri),
            "checkpoint_uri": _absolute(cfg.output.resolved_checkpoint_uri),
        }
    )
    base = cfg.model.name_or_path
    model = cfg.model.model_copy(update={"name_or_path": _absolute(base) if os.path.exists(base) else base})
    return cfg.model_copy(update={"output": output, "model": model})


def published_report(storage: Storage, out: str) -> dict[str, Any] | None:
    """The report of the model OUTPUT already holds (nothing to do then), or None when OUTPUT is
    empty; OutputStateError when it holds anything else."""
    try:
        storage.check_root(out, "OUTPUT")
        done = storage.read_json(join(out, REPORT))
        existing = storage.list_files(out)
    except OSError as e:
        raise storage_error(out, "OUTPUT", e) from e
    if done is not None:
        return dict(done)
    if existing:
        raise OutputStateError(
            f"OUTPUT {out!r} is not empty ({len(existing)} file(s), e.g. {existing[0]!r}) and holds no "
            f"{REPORT}; choose a new directory or remove it"
        )
    return None


def trainable_model(cfg: FinetuneConfig, storage: Storage) -> ModelSection:
    """The base model's section with its kind, family and instruction resolved (fetching it into
    this node's cache if remote), checked trainable and its position limit against --max-length."""
    m = cfg.model
    check_model_path(m.name_or_path)
    try:
        local = local_model_path(m.name_or_path, storage)
    except OSError as e:
        raise storage_error(m.name_or_path, "--model", e) from e
    resolved = resolve_model(local, m)
    family = family_named(resolved.family)
    if not family.trainable:
        raise ConfigError(
            [
                f"--model {m.name_or_path!r} is a {family.label}; fine-tuning supports encoder and "
                "llm rerankers"
            ]
        )
    check_max_length(local, m.name_or_path, m.max_length, family.kind, family.hard_position_limit)
    return resolved


def log_recipe(t: TrainSection, kind: str) -> None:
    log.info(
        "training: learning rate %g, %g epoch(s), warm-up ratio %g, %d queries per step per worker "
        "(defaults: FlagEmbedding's recipe for %s rerankers)",
        t.peak_learning_rate,
        t.num_epochs,
        t.warmup_ratio,
        t.queries_per_step,
        kind,
    )


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tunes and publishes the model; returns its training report (also at OUTPUT/REPORT).
    Every check comes before the first write (`_claim_checkpoints`)."""
    cfg = with_absolute_paths(cfg)
    storage = storage_of(cfg)
    out = cfg.output.uri
    done = published_report(storage, out)
    if done is not None:
        log.info("%s already holds a fine-tuned model (its %s exists); nothing to do", out, REPORT)
        return done
    model = trainable_model(cfg, storage)
    kind = model.kind
    cfg = with_kind_defaults(cfg, kind)
    log_recipe(cfg.train, kind)
    train = load_queries(storage, cfg.data.train_uri, cfg.data)
    _check_teacher(train, cfg.train.loss)
    evals = load_queries(storage, cfg.data.eval_uri, cfg.data, "--eval") if cfg.data.eval_uri else None
    log.info(
        "training queries: %d; eval queries: %d; kind: %s (family %s)",
        len(train),
        len(evals or []),
        kind,
        model.family,
    )
    early_warning = schedule_warning(schedule_for(cfg.train, len(train), cfg.run.workers), cfg.train)
    if early_warning:
        log.warning("%s", early_warning)
    _check_checkpoints(storage, cfg)
    connect_ray(cfg.ray)
    import ray

    device = resolve_device(cfg.model.device)
    if device == "cpu" and cfg.train.precision in ("float16", "bfloat16"):
        raise ConfigError(
            [f"--precision {cfg.train.precision} needs CUDA workers; the Ray cluster has no GPUs"]
        )
    try:
        _claim_checkpoints(storage, cfg)
    except OSError as e:
        raise storage_error(cfg.output.resolved_checkpoint_uri, "--checkpoint-uri", e) from e
    trainer = _trainer(cfg, storage, model, ray.put(train), ray.put(evals) if evals else None, device)
    trainer.fit()
    report = storage.read_json(join(out, REPORT))
    if report is None:
        raise OutputStateError(f"training finished but {join(out, REPORT)!r} was not published")
    for warning in report.get("warnings") or []:
        if warning != early_warning:
            log.warning("%s", warning)
    return dict(report)
