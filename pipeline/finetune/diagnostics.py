"""Warnings about a fine-tuning run that is unlikely to have learned, each saying what to change:
too few optimizer steps for the warm-up and decay to matter, and a final training loss within 5%
of chance (ln of the group size: the scores do not tell the positive from the negatives). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.finetune.config import TrainSection
from pipeline.finetune.groups import Schedule

# Below this many optimizer steps a warm-up of 10% is a handful of steps and the decay starts at
# once: the run spends most of it far below its peak learning rate.
MIN_SCHEDULED_STEPS = 100
CHANCE_MARGIN = 0.05  # a final loss at or above (1 - this) * ln(group size) counts as chance
TAIL_SHARE = 0.1  # the final loss: the mean over the last 10% of steps (one step's loss is noisy)


def schedule_warning(schedule: Schedule, train: TrainSection) -> str | None:
    """A warning when the run has fewer than MIN_SCHEDULED_STEPS optimizer steps, else None."""
    steps = schedule.total_steps
    if steps >= MIN_SCHEDULED_STEPS:
        return None
    per_epoch = math.ceil(schedule.num_queries / schedule.queries_per_step)
    epochs_needed = math.ceil(MIN_SCHEDULED_STEPS / per_epoch)
    warmup = math.ceil(steps * train.warmup_ratio)
    return (
        f"only {steps} optimizer steps ({schedule.num_queries} queries, {schedule.queries_per_step} per "
        f"step = {schedule.workers} worker(s) x --queries-per-step {train.queries_per_step} x "
        f"--grad-accum-steps {train.grad_accum_steps}, for --epochs {train.num_epochs:g}), {warmup} of "
        f"them warm-up: too few for the warm-up and decay to matter, and likely too few to learn; "
        f"raise --epochs to {epochs_needed} or more for at least {MIN_SCHEDULED_STEPS} steps, or lower "
        "--queries-per-step or --grad-accum-steps"
    )


def final_loss(losses: Sequence[tuple[int, float]]) -> float | None:
    """The mean loss over the last TAIL_SHARE of steps (at least one)."""
    if not losses:
        return None
    tail = losses[-max(1, round(len(losses) * TAIL_SHARE)) :]
    return sum(loss for _, loss in tail) / len(tail)


def chance_warning(losses: Sequence[tuple[int, float]], train: TrainSection, steps: int) -> str | None:
    """A warning when the final listwise cross-entropy is within CHANCE_MARGIN of ln(group size),
    else None (also for the distillation losses, whose chance level is the teacher's)."""
    loss = final_loss(losses)
    if train.loss != "ce" or loss is None:
        return None
    chance = math.log(train.train_group_size)
    if loss < (1 - CHANCE_MARGIN) * chance:
        return None
    return (
        f"final training loss {loss:.3f} is within {CHANCE_MARGIN:.0%} of chance "
        f"(ln {train.train_group_size} = {chance:.3f}): the model's scores barely tell the positive "
        "from the negatives; train more: "
        f"raise --learning-rate (now {train.peak_learning_rate:g}) or --epochs (now "
        f"{train.num_epochs:g}: {steps} optimizer steps); if that does not help, check that the "
        "positives differ from the negatives in the data"
    )


def run_warnings(schedule: Schedule, train: TrainSection, losses: Sequence[tuple[int, float]]) -> list[str]:
    """Every warning that applies to a finished run."""
    found = [schedule_warning(schedule, train), chance_warning(losses, train, schedule.total_steps)]
    return [w for w in found if w]
