"""Helpers shared by test modules (tests import these, never each other)."""

from __future__ import annotations

from pipeline.config import ResolvedDevice, ResolvedKind
from pipeline.rerank.config import ScoringConfig
from pipeline.rerank.settings import ScoringSettings, resolve_settings


def scoring_settings(
    max_batch_tokens: int | str | None = None,
    *,
    device: ResolvedDevice = "cpu",
    dtype: str = "float32",
    kind: ResolvedKind = "encoder",
    **scoring: object,
) -> ScoringSettings:
    """Resolved scoring settings as the runner makes them, for a stage run on its own."""
    return resolve_settings(
        ScoringConfig.model_validate({"max_batch_tokens": max_batch_tokens, **scoring}),
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        kind=kind,
        cpus_per_node=2,
    )
