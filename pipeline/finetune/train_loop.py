"""One Ray Train worker's loop: build → restore the last checkpoint → steps → publish (rank 0).

Runs inside `TorchTrainer` workers (DDP via `ray.train.torch.prepare_model`); everything it needs
comes in `config` (the validated FinetuneConfig as a dict, object refs of the training and eval
queries, the Storage). Step k trains the same groups whatever happened before (see groups.py), and
each step reseeds dropout, so a resumed run continues an uninterrupted one's loss curve.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.faults import crash_point
from pipeline.finetune.config import FinetuneConfig, ModelSection
from pipeline.finetune.data import TrainQuery
from pipeline.finetune.diagnostics import run_warnings
from pipeline.finetune.evaluate import evaluate
from pipeline.finetune.groups import Schedule, schedule_for
from pipeline.finetune.loss import group_loss
from pipeline.finetune.publish import publish_model
from pipeline.finetune.state import TrainState, load_state, save_state
from pipeline.finetune.student import GroupEncoder, Student, load_student, scoring_model_config
from pipeline.io import Storage
from pipeline.logs import LOG_FORMAT, configure_library_logging, is_verbose
from pipeline.model_cache import local_model_path
from pipeline.models.families.sidecar import write_sidecar

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 600.0
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(kw_only=True)
class Worker:
    """What the loop works with on one worker."""

    cfg: FinetuneConfig
    rank: int
    world: int
    device: torch.device
    student: Student
    model: torch.nn.Module  # the student's scorer, DDP-wrapped when world > 1
    encoder: GroupEncoder
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: str

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in AMP_DTYPES:
            return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.precision])
        return contextlib.nullcontext()


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "float16" if device.type == "cuda" else "float32"


def warmup_linear(total_steps: int, warmup_ratio: float) -> Any:
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def build_worker(config: dict[str, Any], num_queries: int) -> Worker:
    import ray.train
    import ray.train.torch

    cfg = FinetuneConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.train.seed)  # same initial weights (LoRA, new heads) on every worker
    path = local_model_path(cfg.model.name_or_path, config["storage"])
    section = ModelSection.model_validate(config["model"])  # kind, family and instruction resolved
    student = load_student(path, section)
    scoring = scoring_model_config(section)
    encoder = GroupEncoder(path, scoring, getattr(student.model.config, "pad_token_id", None))
    model = ray.train.torch.prepare_model(student.scorer)
    t = cfg.train
    schedule = schedule_for(t, num_queries, world)
    params = [p for p in student.scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.peak_learning_rate, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(schedule.total_steps, t.warmup_ratio)
    )
    precision = resolve_precision(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")
    return Worker(
        cfg=cfg,
        rank=rank,
        world=world,
        device=device,
        student=student,
        model=model,
        encoder=encoder,
        schedule=schedule,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        precision=precision,
    )


def _objects(w: Worker) -> dict[str, Any]:
    return {"optimizer": w.optimizer, "scheduler": w.scheduler, "scaler": w.scaler}


def restore(w: Worker) -> TrainState:
    """The last reported checkpoint's state, or a fresh one."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as directory:
        state = load_state(directory, _objects(w), w.student.load_trainable_state)
    log.info("resuming from the checkpoint at step %d of %d", state.step, w.schedule.total_steps)
    return state


def train_step(w: Worker, queries: list[TrainQuery], step: int) -> tuple[float, int]:
    """One optimizer step over this worker's micro-batches; returns (mean loss over workers, groups)."""
    t = w.cfg.train
    torch.manual_seed(t.seed * 1_000_003 + step * w.world + w.rank)  # dropout: the same on a resume
    total, groups_done = 0.0, 0
    for batch in w.schedule.micro_batches(step, w.rank):
        groups = [w.schedule.group(queries, i, epoch, t.train_group_size) for i, epoch in batch]
        inputs = w.encoder.to_tensors(w.encoder.encode_groups(groups), w.device)
        with w.autocast():
            scores = w.model(**inputs).view(len(groups), t.train_group_size)
        teacher = None
        if t.loss != "ce":
            teacher = torch.tensor([g.teacher for g in groups], dtype=torch.float32, device=w.device)
        loss = group_loss(scores, teacher, t.loss, t.distill_weight, t.temperature) / t.grad_accum_steps
        w.scaler.scale(loss).backward()
        total += loss.item()
        groups_done += len(groups)
    w.scaler.unscale_(w.optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in w.model.parameters() if p.requires_grad], t.max_grad_norm)
    w.scaler.step(w.optimizer)
    w.scaler.update()
    w.scheduler.step()
    w.optimizer.zero_grad(set_to_none=True)
    return _mean_over_workers(total, w), groups_done * w.world


def _mean_over_workers(value: float, w: Worker) -> float:
    if w.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=w.device)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / w.world


def report(w: Worker, state: TrainState, metrics: dict[str, Any], is_checkpoint: bool) -> None:
    """Reports metrics from every worker; rank 0 attaches the checkpoint."""
    import ray.train

    if not is_checkpoint:
        return
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if w.rank == 0:
            save_state(directory, state, {"weights": w.student.trainable_state(), **_objects(w)})
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
    # Wait until Ray Train has registered it: a run killed from here on resumes from this step.
    ray.train.get_all_reported_checkpoints(timeout_s=COMMIT_TIMEOUT_S)


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop function (every worker runs it)."""
    import ray

    _configure_logging()
    queries: list[TrainQuery] = ray.get(config["train"])
    eval_queries: list[TrainQuery] | None = ray.get(config["eval"]) if config["eval"] is not None else None
    w = build_worker(config, len(queries))
    torch.set_num_threads(max(1, int(w.cfg.run.cpus_per_worker)))
    state = restore(w)
    if state.step == 0 and w.rank == 0 and eval_queries:
        state.eval_before = evaluate(w.student.scorer, w.encoder, eval_queries, w.device, w.autocast())
        log.info("eval before training: %s", state.eval_before)
    run_steps(w, queries, state)
    if w.rank == 0:
        finish(w, state, config, eval_queries)


def run_steps(w: Worker, queries: list[TrainQuery], state: TrainState) -> None:
    r, t = w.cfg.run, w.cfg.train
    total = w.schedule.total_steps
    w.model.train()
    started, examples_at_start = time.perf_counter(), state.examples_seen
    rate = 0.0
    while state.step < total:
        loss, examples = train_step(w, queries, state.step)
        state.step += 1
        state.examples_seen += examples
        state.losses.append((state.step, round(loss, 6)))
        rate = (state.examples_seen - examples_at_start) / max(1e-9, time.perf_counter() - started)
        if w.rank == 0 and (state.step % t.log_every_steps == 0 or state.step == total):
            log.info(
                "step %d/%d loss %.4f | %.1f examples/s (groups of %d)",
                state.step,
                total,
                loss,
                rate,
                t.train_group_size,
            )
        is_checkpoint = state.step % r.checkpoint_every_steps == 0 or state.step == total
        report(w, state, {"step": state.step, "loss": loss, "examples_per_s": rate}, is_checkpoint)
        if w.rank == 0:
            crash_point(f"finetune_after_step_{state.step}")
    state.examples_per_s = rate


def finish(
    w: Worker, state: TrainState, config: dict[str, Any], eval_queries: list[TrainQuery] | None
) -> None:
    """Rank 0: eval after training, then the merged model + tokenizer + report, published atomically."""
    report_doc: dict[str, Any] = {
        "steps": state.step,
        "final_loss": state.losses[-1][1] if state.losses else None,
        "losses": state.losses,
        "resumed_from_step": state.resumed_from_step,
        "examples_seen": state.examples_seen,
        "examples_per_s": round(state.examples_per_s, 2),
        "workers": w.world,
        "precision": w.precision,
        "kind": config["kind"],
        "base_model": w.cfg.model.name_or_path,
        "learning_rate": w.cfg.train.peak_learning_rate,
        "epochs": w.cfg.train.num_epochs,
        "warnings": run_warnings(w.schedule, w.cfg.train, state.losses),
    }
    if eval_queries:
        after = evaluate(w.student.scorer, w.encoder, eval_queries, w.device, w.autocast())
        log.info("eval after training: %s (before: %s)", after, state.eval_before)
        report_doc["eval"] = {"before": state.eval_before, "after": after}
    with tempfile.TemporaryDirectory() as directory:
        w.student.save_pretrained(directory, w.encoder.tokenizer)
        scoring = w.encoder.model  # the model as `rerank run --model OUT` is to score it, no flags
        write_sidecar(directory, scoring.family, scoring.given_instruction)
        storage: Storage = config["storage"]
        publish_model(storage, directory, w.cfg.output.uri, report_doc)
    log.info("published the fine-tuned model at %s", w.cfg.output.uri)


def _configure_logging() -> None:
    """Our step lines reach the driver (Ray streams the workers' stderr); the libraries stay quiet."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    configure_library_logging(is_verbose())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
