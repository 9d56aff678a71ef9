"""What the scoring actors ran with, and why: precision, attention path (and on CPU the attention
kernel packed batches use), compile and token budget,
as each actor reported it (the `kernel` column of its calls' first rows, set by
pipeline.rerank.stages.score from pipeline.modeling.kernel_choice). Bounded: one entry per actor,
up to the collector's series limit. No Ray, no torch."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa

SHOWN_ACTORS = 8  # actors whose probe figures the summary lists (all are counted)


class KernelChoices:
    """The latest choices each scoring actor reported."""

    def __init__(self) -> None:
        self.by_actor: dict[str, dict[str, Any]] = {}

    def add(self, actor: str, call: pa.Table) -> None:
        """One scoring call's rows (its first row carries the actor's choices)."""
        if "kernel" not in call.column_names:
            return
        reported = call.column("kernel").drop_null()
        if len(reported):
            self.by_actor[actor] = json.loads(reported[len(reported) - 1].as_py())

    def summary(self) -> dict[str, Any] | None:
        """Per setting, how many actors ran each value; the reasons; a few actors' probe figures."""
        if not self.by_actor:
            return None
        choices = list(self.by_actor.values())

        def count(key: str) -> dict[str, int]:
            return dict(Counter(str(c.get(key)) for c in choices).most_common())

        optional = {  # set only by actors where they apply
            key: dict(Counter(c[key] for c in choices if key in c).most_common())
            for key in ("attention_kernel", "last_layer")
        }
        return {
            "dtype": count("dtype"),
            "attention": count("attention"),
            **{key: ran for key, ran in optional.items() if ran},
            "compile": count("compile"),
            "max_batch_tokens": count("max_batch_tokens"),
            "reasons": {
                key: sorted({str(c.get(f"{key}_reason")) for c in choices if c.get(f"{key}_reason")})
                for key in ("dtype", "attention", "compile")
            },
            "actors": {
                actor: {k: c[k] for k in ("attention_probe", "compile_rates") if k in c}
                for actor, c in list(self.by_actor.items())[:SHOWN_ACTORS]
                if "attention_probe" in c or "compile_rates" in c
            },
        }


def kernel_line(kernels: dict[str, Any] | None) -> str | None:
    """The summary's line: which precision, attention path and compile the actors ran, and why."""
    if not kernels:
        return None

    def values(key: str) -> str:
        return ", ".join(v if n == 1 else f"{v} (x{n} actors)" for v, n in kernels[key].items())

    reasons = kernels.get("reasons") or {}
    parts = []
    for key, label in (("dtype", "precision"), ("attention", "attention"), ("compile", "compile")):
        why = "; ".join(reasons.get(key) or [])
        parts.append(f"{label} {values(key)}" + (f" ({why})" if why else ""))
    if kernels.get("attention_kernel"):
        parts.append(f"CPU attention kernel {values('attention_kernel')}")
    if kernels.get("last_layer"):
        parts.append(f"last layer at {values('last_layer')}")
    probes = [a["attention_probe"] for a in (kernels.get("actors") or {}).values() if "attention_probe" in a]
    if probes:
        rates = ", ".join(f"{path} {rate:,}" for path, rate in probes[0]["rates"].items())
        parts.append(f"probe: {rates} real tokens/s on {probes[0]['probe_pairs']} pairs")
    return "kernels: " + " | ".join(parts)
