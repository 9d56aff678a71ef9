"""What a stored score was made with: its scoring identity. Two runs' scores of the same text are
interchangeable only when every field here is equal; a reuse source whose identity differs gives
nothing, and the run says which field differs (`identity_change`).

Not in it: what does not change a score (ids, --top-k, --normalize, which is computed from the
stored raw score when a shard is ranked, the pool's size, the attention kernel), and the device:
the scores of one model on two devices differ by what batch composition already causes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.models.families.registry import family_named
from pipeline.rerank.config import JobConfig

STORE_FORMAT = 1  # the layout of a store file; a file of another format is not read


def store_identity(cfg: JobConfig, dtype: str, model_identity: dict[str, str] | None) -> dict[str, Any]:
    """The scoring identity of a run with `cfg` (its kind resolved) at the resolved `dtype`. The
    model is its identity's digests where they exist (the same weights at another path are the same
    model), else its name with whatever identity it has (a hub id and its revision)."""
    m, i = cfg.model, cfg.input
    identity = model_identity or {}
    model: Any = identity if {"config", "weights"} <= set(identity) else {"name": m.name_or_path, **identity}
    out: dict[str, Any] = {
        "format": STORE_FORMAT,
        "model": model,
        "kind": m.kind,
        "score_columns": m.score_columns,
        "max_length": m.max_length,
        "query_max_length": m.resolved_query_max_length,
        "dtype": dtype,
        "long_passages": i.long_passages,
    }
    family = None if m.family == "auto" else family_named(m.family)
    if family is not None and not family.legacy_fingerprint:  # qwen3, mxbai-v2, modernbert
        out["family"] = family.identity(m.given_instruction)
    elif m.kind != "encoder":
        out["prompt"] = m.resolved_prompt
        out["cutoff_layers"] = m.cutoff_layers
    if i.long_passages == "chunk":
        out["chunks"] = {
            "overlap": i.chunk_overlap,
            "max_chunks": i.max_chunks,
            "aggregate": i.chunk_aggregate,
        }
    return out


def identity_digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def identity_change(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """The fields that differ, as one phrase: `max_length 512 (this run: 256)`."""
    keys = [*ours, *(k for k in theirs if k not in ours)]
    changed = [k for k in keys if theirs.get(k) != ours.get(k)]
    return ", ".join(f"{k} {shown(theirs.get(k))} (this run: {shown(ours.get(k))})" for k in changed)


def shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, sort_keys=True)
