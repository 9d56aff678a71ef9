"""`max_batch_tokens: auto`: a scoring actor picks its token budget by timing a few on its own pairs.

The best budget depends on the device and the model: a GPU wants large batches to fill its cores;
a CPU slows down past a few thousand tokens (attention buffers leave the caches). On its first call
the actor builds, for each candidate budget, one full batch of the call's median-length pair, runs
it once to warm up and once timed, and keeps the budget with the most tokens per second (the
smallest among those within 3% of the best: less padding and less memory for the same speed).

On CUDA the probe is also bounded by free memory: each timed batch's peak activation memory gives
bytes per token, and a candidate whose activations would not fit in `MEMORY_HEADROOM` of the
memory still free (the device's free memory plus what torch's allocator holds unused) is not tried,
so the chosen budget leaves room for the longest micro-batches and for other work on the card.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import numpy as np
import pyarrow as pa
import torch

from pipeline.modeling.reranker import Reranker

log = logging.getLogger(__name__)

CANDIDATES = {"cpu": (512, 1024, 2048, 4096, 8192), "cuda": (16384, 32768, 65536, 131072)}
NEAR_BEST = 0.97
MEMORY_HEADROOM = 0.8


class MemoryGauge(Protocol):
    """Measures the device memory one forward needs (bytes) and what is left for activations."""

    def start(self) -> None: ...

    def peak_bytes(self) -> int: ...

    def available_bytes(self) -> int: ...


class CudaMemoryGauge:
    """torch's CUDA allocator statistics on the current device."""

    def start(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._base = torch.cuda.memory_allocated()

    def peak_bytes(self) -> int:
        return max(0, torch.cuda.max_memory_allocated() - self._base)

    def available_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())


def memory_bound(available_bytes: int, bytes_per_token: float, headroom: float = MEMORY_HEADROOM) -> int:
    """The largest token budget whose activations fit in `headroom` of the available memory."""
    if bytes_per_token <= 0:
        return 2**62
    return int(headroom * available_bytes / bytes_per_token)


def _timed_forward(
    reranker: Reranker, ids: pa.ListArray, types: pa.ListArray | None, rows: np.ndarray
) -> float:
    sync = torch.cuda.synchronize if reranker.is_cuda else (lambda: None)
    with torch.inference_mode():
        reranker.forward(ids, types, rows)  # warm-up: allocations, kernel selection
        sync()
        start = time.perf_counter()
        reranker.forward(ids, types, rows)
        sync()
    return time.perf_counter() - start


def probe_budget(
    reranker: Reranker,
    input_ids: pa.ListArray,
    token_type_ids: pa.ListArray | None = None,
    candidates: tuple[int, ...] | None = None,
    gauge: MemoryGauge | None = None,
) -> int:
    """The fastest budget (tokens/s) for pairs like these that fits in free memory (measured by
    `gauge`: CUDA's allocator on a CUDA reranker, none on CPU); logs every candidate's rate."""
    lengths = np.diff(input_ids.offsets.to_numpy())
    if len(lengths) == 0:
        return reranker.max_batch_tokens
    median_row = int(np.argsort(lengths, kind="stable")[len(lengths) // 2])
    length = max(int(lengths[median_row]), 1)
    if gauge is None and reranker.is_cuda:
        gauge = CudaMemoryGauge()
    rates: dict[int, float] = {}
    bound: int | None = None
    for budget in candidates or CANDIDATES[reranker.device.type]:
        if bound is not None and budget > bound:
            log.info(
                "max_batch_tokens auto: %d and up not tried: activations would not fit in %.0f%% of "
                "free device memory (room for ~%d tokens)",
                budget,
                100 * MEMORY_HEADROOM,
                bound,
            )
            break
        rows = np.full(max(1, budget // length), median_row)
        try:
            if gauge is not None:
                gauge.start()
            rates[budget] = len(rows) * length / _timed_forward(reranker, input_ids, token_type_ids, rows)
        except torch.OutOfMemoryError:
            if reranker.is_cuda:
                torch.cuda.empty_cache()
            break  # larger budgets will not fit either
        if gauge is not None:
            bound = memory_bound(gauge.available_bytes(), gauge.peak_bytes() / (len(rows) * length))
    if not rates:
        return reranker.max_batch_tokens
    best = max(rates.values())
    chosen = min(b for b, rate in rates.items() if rate >= NEAR_BEST * best)
    shown = ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items())
    log.info("max_batch_tokens auto: tokens/s at median length %d: %s -> %d", length, shown, chosen)
    return chosen
