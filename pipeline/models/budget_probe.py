"""`max_batch_tokens: auto`: a scoring actor picks its token budget by timing a few on its own pairs.

The best budget depends on the device and the model: a GPU wants large batches to fill its cores;
a CPU slows down past a few thousand tokens (attention buffers leave the caches). On its first call
the actor builds, for each candidate budget, one full batch of the call's median-length pair, runs
it once to warm up and once timed, and keeps the budget with the most tokens per second (the
smallest among those within 3% of the best: less padding and less memory for the same speed).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import torch

from pipeline.models.reranker import Reranker

log = logging.getLogger(__name__)

CANDIDATES = {"cpu": (512, 1024, 2048, 4096, 8192), "cuda": (16384, 32768, 65536, 131072)}
NEAR_BEST = 0.97


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
) -> int:
    """The fastest budget (tokens/s) for pairs like these; logs every candidate's rate."""
    lengths = np.diff(input_ids.offsets.to_numpy())
    if len(lengths) == 0:
        return reranker.max_batch_tokens
    median_row = int(np.argsort(lengths, kind="stable")[len(lengths) // 2])
    length = max(int(lengths[median_row]), 1)
    rates: dict[int, float] = {}
    for budget in candidates or CANDIDATES[reranker.device.type]:
        rows = np.full(max(1, budget // length), median_row)
        try:
            rates[budget] = len(rows) * length / _timed_forward(reranker, input_ids, token_type_ids, rows)
        except torch.OutOfMemoryError:
            if reranker.is_cuda:
                torch.cuda.empty_cache()
            break  # larger budgets will not fit either
    if not rates:
        return reranker.max_batch_tokens
    best = max(rates.values())
    chosen = min(b for b, rate in rates.items() if rate >= NEAR_BEST * best)
    shown = ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items())
    log.info("max_batch_tokens auto: tokens/s at median length %d: %s -> %d", length, shown, chosen)
    return chosen
