"""Query groups (1 positive + sampled negatives) and the order they are trained in. Pure; seeded.

Which queries a worker trains on at an optimizer step is a function of (seed, step, worker) only,
so a run resumed at step k trains exactly what an uninterrupted run would have from step k.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pipeline.finetune.config import TrainSection
from pipeline.finetune.data import TrainQuery


@dataclass(frozen=True)
class Group:
    """One training group: passages[0] is the positive; teacher scores align with passages."""

    query: str
    passages: tuple[str, ...]
    teacher: tuple[float, ...] | None
    prompt: str | None


def sample_group(q: TrainQuery, size: int, rng: random.Random) -> Group:
    """FlagEmbedding's sampling: one random positive; `size - 1` negatives, without replacement when
    there are enough, else from the negatives repeated as often as needed."""
    p = rng.randrange(len(q.pos))
    need = size - 1
    pool = list(range(len(q.neg)))
    if len(pool) < need:
        pool = pool * math.ceil(need / len(pool))
    negs = rng.sample(pool, need)
    passages = (q.pos[p], *(q.neg[i] for i in negs))
    teacher = None
    if q.pos_scores is not None and q.neg_scores is not None:
        teacher = (q.pos_scores[p], *(q.neg_scores[i] for i in negs))
    return Group(q.query, passages, teacher, q.prompt)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """How many optimizer steps a run has and which queries each worker trains at each of them."""

    num_queries: int
    workers: int
    queries_per_micro_batch: int
    grad_accum_steps: int
    epochs: float
    seed: int

    @property
    def queries_per_step(self) -> int:
        return self.workers * self.queries_per_micro_batch * self.grad_accum_steps

    @property
    def total_steps(self) -> int:
        per_epoch = math.ceil(self.num_queries / self.queries_per_step)
        return max(1, math.ceil(self.epochs * per_epoch))

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.num_queries))
        random.Random(f"{self.seed}-order-{epoch}").shuffle(order)
        return order

    def micro_batches(self, step: int, worker: int) -> list[list[tuple[int, int]]]:
        """For optimizer step `step` (0-based): per micro-batch, (query index, epoch) pairs."""
        out = []
        orders: dict[int, list[int]] = {}
        b, n = self.queries_per_micro_batch, self.num_queries
        for m in range(self.grad_accum_steps):
            start = step * self.queries_per_step + (m * self.workers + worker) * b
            batch = []
            for pos in range(start, start + b):
                epoch = pos // n
                order = orders.setdefault(epoch, self._order(epoch))
                batch.append((order[pos % n], epoch))
            out.append(batch)
        return out

    def group(self, queries: list[TrainQuery], index: int, epoch: int, size: int) -> Group:
        return sample_group(queries[index], size, random.Random(f"{self.seed}-group-{epoch}-{index}"))


def schedule_for(train: TrainSection, num_queries: int, workers: int) -> Schedule:
    """The schedule of a run (the driver's and every worker's: the same numbers)."""
    return Schedule(
        num_queries=num_queries,
        workers=workers,
        queries_per_micro_batch=train.queries_per_step,
        grad_accum_steps=train.grad_accum_steps,
        epochs=train.num_epochs,
        seed=train.seed,
    )
