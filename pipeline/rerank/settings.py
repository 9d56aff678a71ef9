"""Device-dependent settings, resolved once: config + device (+ model kind, node size) -> concrete
values that `build` and the stages receive. Nothing downstream sees `auto` or `None` defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import Dtype, ResolvedDevice, ResolvedDtype, ResolvedKind
from pipeline.modeling.kernels.cpu_features import CpuFeatures, cpu_features
from pipeline.rerank.config import ScoringConfig

# Token budget per micro-batch when max_batch_tokens is not set. A CPU forward gains nothing from
# big batches and pays for padding (and for attention memory: 8192 ran far slower than 2048 on the
# MiniLM-L6 shape, bench/throughput.py); a GPU needs large ones to fill its cores: TEI uses 16384,
# but on an H100 with an XLM-R-large reranker 65536 scored 2.1x faster (bench/scoring.py --gpu).
DEFAULT_MAX_BATCH_TOKENS: dict[ResolvedDevice, int] = {"cpu": 2048, "cuda": 65536}
# A batch also closes before a row shorter than this share of its longest row (padding <= 5% per
# row on CPU, where small batches cost nothing; off on CUDA, where they cost occupancy).
DEFAULT_MIN_BATCH_FILL: dict[ResolvedDevice, float] = {"cpu": 0.95, "cuda": 0.0}
# Pairs per scoring call: fewer, larger calls cost less Ray overhead per pair and give the call a
# wider window to sort by length (CPU, MiniLM-L6 shape, 1,200 pairs: 256 -> 1024 raised the
# steady rate from ~64 to ~69 pairs/s); a shard publishes once its last call is done.
DEFAULT_ROWS_PER_CALL: dict[ResolvedDevice, int] = {"cpu": 1024, "cuda": 4096}


def resolve_dtype(
    dtype: Dtype, device: ResolvedDevice, features: CpuFeatures | None = None
) -> tuple[ResolvedDtype, str]:
    """The dtype a run scores in, and why (the run's summary says it). `auto` is float16 on CUDA
    (FlagEmbedding's use_fp16); on CPU it is bfloat16 where every core multiplies bf16 in hardware
    (AMX or AVX512-BF16, read from the OS: `features`, default this machine's), else float32. The
    rule rests on bench/precision.py: on such a CPU bf16 scored 1.5-1.9x faster than fp32 with the
    rankings kept (docs/performance.md, "Precision on CPU"); without those features bf16 is
    emulated and slower than fp32."""
    if dtype != "auto":
        return dtype, "given (--dtype)"
    if device == "cuda":
        return "float16", "auto on CUDA: float16 (FlagEmbedding's use_fp16)"
    features = features if features is not None else cpu_features()
    if features.native_bf16:
        return "bfloat16", f"auto on CPU: bfloat16, every core has {features.describe()} ({features.source})"
    return "float32", f"auto on CPU: float32, this CPU has {features.describe()} ({features.source})"


@dataclass(frozen=True, kw_only=True)
class ScoringSettings:
    """What a scoring actor runs with, every value concrete."""

    device: ResolvedDevice
    dtype: ResolvedDtype
    dtype_reason: str  # why this dtype: given, or what `auto` saw (the summary says it)
    kind: ResolvedKind
    max_batch_tokens: int  # padded tokens per micro-batch (the probe's fallback when probing)
    probe_budget: bool  # max_batch_tokens: auto: time candidate budgets on the first call
    min_batch_fill: float
    rows_per_call: int
    torch_threads: int | None  # CPU actors: threads to use; None on CUDA (torch's default)
    gpus_per_actor: int
    pairs_per_actor: int = 0  # this run's pairs over its scoring actors (--compile auto weighs it)


def resolve_settings(
    scoring: ScoringConfig,
    *,
    device: ResolvedDevice,
    dtype: Dtype,
    kind: ResolvedKind,
    cpus_per_node: int,
    features: CpuFeatures | None = None,
) -> ScoringSettings:
    """The scoring settings for this device. CPU actors default to the node's cores shared among
    the scoring actors that can land on one node."""
    budget = scoring.max_batch_tokens
    threads = None
    resolved_dtype, dtype_reason = resolve_dtype(dtype, device, features)
    if device == "cpu":
        per_node = max(1, min(scoring.max_actors, math.floor(cpus_per_node / scoring.cpus_per_actor)))
        threads = scoring.torch_threads or max(1, cpus_per_node // per_node)
    return ScoringSettings(
        device=device,
        dtype=resolved_dtype,
        dtype_reason=dtype_reason,
        kind=kind,
        max_batch_tokens=budget if isinstance(budget, int) else DEFAULT_MAX_BATCH_TOKENS[device],
        probe_budget=budget == "auto",
        min_batch_fill=(
            DEFAULT_MIN_BATCH_FILL[device] if scoring.min_batch_fill is None else scoring.min_batch_fill
        ),
        rows_per_call=scoring.rows_per_call or DEFAULT_ROWS_PER_CALL[device],
        torch_threads=threads,
        gpus_per_actor=1 if device == "cuda" else 0,
    )
