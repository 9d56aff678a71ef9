"""Whether the Ray cluster can hold the run's actors at all, checked before any work: the scoring
pool's first MIN actors, the tokenizing actors and the first writer reserve their CPUs (and GPUs)
together for the whole run, and Ray waits for room without a word when there is none. On a Ray the
job started itself nothing will ever add room, so that is an error; a cluster may grow (an
autoscaler adding nodes), so there it is a warning that says what the run waits for."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.rerank.config import ScoringConfig
from pipeline.rerank.stream.publisher import PUBLISH_CPUS


@dataclass(frozen=True)
class Reserved:
    """`count` actors of one kind, each reserving `cpus` (and `gpus`); `knob`: what sets them."""

    what: str
    count: int
    cpus: float
    gpus: float
    knob: str

    def describe(self) -> str:
        each = f"{self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
        return f"{self.count} {self.what}(s) x {each} ({self.knob})"


def run_reservations(scoring: ScoringConfig, gpus_per_actor: int) -> list[Reserved]:
    """What a run holds at once from its start to its end (more writers and scoring actors up to
    MAX come when there is room, and are not needed to finish)."""
    return [
        Reserved(
            "scoring actor",
            scoring.min_actors,
            scoring.cpus_per_actor,
            gpus_per_actor,
            "--actors MIN; scoring.cpus_per_actor in --config",
        ),
        Reserved(
            "tokenizing actor",
            scoring.tokenize_actors,
            scoring.cpus_per_tokenizer,
            0,
            "scoring.tokenize_actors, scoring.cpus_per_tokenizer in --config",
        ),
        Reserved("writer", 1, PUBLISH_CPUS, 0, "fixed"),
    ]


def shortfalls(reserved: list[Reserved], nodes: list[dict[str, float]]) -> list[str]:
    """Why the cluster of `nodes` (each alive node's resources: CPU, GPU) can never hold
    `reserved` at once: an actor bigger than every node, or more than all nodes together.
    Empty when it may fit (Ray places them; a fragmented cluster can still wait)."""
    problems = []
    for resource, amount in (("CPU", lambda r: r.cpus), ("GPU", lambda r: r.gpus)):
        largest = max((n.get(resource, 0.0) for n in nodes), default=0.0)
        total = sum(n.get(resource, 0.0) for n in nodes)
        wanted = [r for r in reserved if amount(r) > 0 and r.count > 0]
        for r in wanted:
            if amount(r) > largest:
                problems.append(
                    f"each {r.what} reserves {amount(r):g} {resource} ({r.knob}), "
                    f"but the largest node has {largest:g}"
                )
        need = sum(r.count * amount(r) for r in wanted)
        if need > total + 1e-9:
            parts = ", ".join(r.describe() for r in wanted)
            problems.append(
                f"the run's actors reserve {need:g} {resource} at once ({parts}), "
                f"but the Ray's {len(nodes)} node(s) have {total:g} {resource} in all"
            )
    return problems


FIX = (
    "fix: fewer scoring actors at the start (--actors 1, or --actors 1:MAX: the pool grows up to MAX "
    "as room appears), smaller reservations (scoring.cpus_per_actor or scoring.cpus_per_tokenizer "
    "in --config, e.g. 0.5; --torch-threads still sets the threads a CPU scoring actor uses), or "
    "more CPUs/GPUs (ray.num_cpus in --config for the Ray the job starts, or more nodes)"
)


def capacity_message(problems: list[str], *, local: bool) -> str:
    """One text for the error (`local`: the Ray the job started) or the warning (a cluster)."""
    if local:
        what, then = "the Ray this job started cannot hold the run's actors", ""
    else:
        what = "the Ray cluster holds too little for the run's actors now"
        then = (
            "; the run waits until the cluster grows (an autoscaler adding nodes), "
            "and on a fixed cluster it would wait forever"
        )
    return f"{what}: {'; '.join(problems)}{then}; {FIX}"
