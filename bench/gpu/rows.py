"""The GPU benchmark's measurements: one function per kind of row, each returning the row's figures.

Every row scores the same tokenized pairs (or, for sentence-transformers, the same texts) and is
timed after a warm-up, with the device synchronised around the timed region. Figures per row:
pairs/s, tokens/s (real tokens of our tokenization), padding efficiency (real / run tokens), MFU
against the datasheet dense fp16 peak and against the fp16 matmul measured in the same process,
and peak device memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.modeling.reranker import Reranker
from pipeline.models.batching import fixed_batches, longest_first, padded_tokens


@dataclass
class Corpus:
    """The tokenized pairs every row scores, split the way the job hands them to a scorer."""

    input_ids: pa.ListArray
    token_type_ids: pa.ListArray | None
    lengths: np.ndarray
    queries: list[str]
    passages: list[str]

    def blocks(self, rows_per_call: int) -> list[np.ndarray]:
        """Row indices of each scoring call: consecutive blocks of `rows_per_call` rows."""
        n = len(self.lengths)
        return [np.arange(i, min(n, i + rows_per_call)) for i in range(0, n, rows_per_call)]


@dataclass
class Peaks:
    datasheet_flops: float | None  # dense fp16, bench/hardware.py
    measured_flops: float | None  # a large fp16 matmul in this process


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def start_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def figures(
    pairs: int, real_tokens: int, run_tokens: int, seconds: float, flops: float, peaks: Peaks, device: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pairs_per_s": round(pairs / seconds, 1),
        "tokens_per_s": round(real_tokens / seconds),
        "padding_efficiency": round(real_tokens / max(run_tokens, 1), 4),
        "seconds": round(seconds, 3),
        "peak_memory_bytes": peak_memory(device),
    }
    for name, peak in (("mfu_datasheet", peaks.datasheet_flops), ("mfu_measured", peaks.measured_flops)):
        row[name] = round(flops / seconds / peak, 4) if peak else None
    return row


def timed(device: str, run: Callable[[], Any]) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def scorer_row(reranker: Reranker, corpus: Corpus, rows_per_call: int, flops: float, peaks: Peaks) -> dict:
    """The bare forward: Reranker.score over pre-tokenized blocks of one call each, as ScorePairs
    runs them (no tokenization, no Arrow table, no queue): the most the pipeline can reach."""
    device = reranker.device.type
    blocks = [
        (_take(corpus.input_ids, rows), _take(corpus.token_type_ids, rows))
        for rows in corpus.blocks(rows_per_call)
    ]
    first_ids, first_types = blocks[0]

    def warm_up() -> None:  # allocations, kernel choices, and the compile when compiled
        reranker.score(first_ids, first_types)
        reranker.score(first_ids.slice(0, 1), None if first_types is None else first_types.slice(0, 1))

    warmup_s = timed(device, warm_up)
    start_memory(device)
    run_tokens = 0

    def run() -> None:
        nonlocal run_tokens
        for ids, types in blocks:
            out = reranker.score(ids, types)
            run_tokens += int(out.padded_lengths.sum())

    seconds = timed(device, run)
    real = int(corpus.lengths.sum())
    row = figures(len(corpus.lengths), real, run_tokens, seconds, flops, peaks, device)
    return row | {"warmup_s": round(warmup_s, 2)}


def _take(array: pa.ListArray | None, rows: np.ndarray) -> Any:
    return None if array is None else array.take(pa.array(rows))


def batching_row(
    reranker: Reranker, corpus: Corpus, batches: list[np.ndarray], flops: float, peaks: Peaks
) -> dict:
    """A peer's batching on our model and tokenization: padded forwards over fixed-count batches."""
    device = reranker.device.type
    ids, types = corpus.input_ids, corpus.token_type_ids
    reranker.forward(ids, types, batches[0])  # warm-up
    start_memory(device)

    @torch.inference_mode()
    def run() -> None:
        pending = [reranker.model(**reranker.inputs(ids, types, b)) for b in batches]
        for scores in pending:
            scores.cpu()

    seconds = timed(device, run)
    real = int(corpus.lengths.sum())
    row = figures(
        len(corpus.lengths), real, padded_tokens(corpus.lengths, batches), seconds, flops, peaks, device
    )
    return row | {"batch_pairs": len(batches[0])}


def flag_style_batches(corpus: Corpus) -> list[np.ndarray]:
    """FlagEmbedding's batching: sorted by token length, longest first, 128 pairs per batch."""
    return fixed_batches(longest_first(corpus.lengths), 128)


def naive_batches(corpus: Corpus) -> list[np.ndarray]:
    """Input order, 32 pairs per padded batch."""
    return fixed_batches(np.arange(len(corpus.lengths)), 32)


def sentence_transformers_row(
    model_dir: str, corpus: Corpus, device: str, dtype: torch.dtype, flops: float, peaks: Peaks
) -> dict:
    """sentence-transformers' CrossEncoder.predict on the same saved encoder (batch 32, max_length
    512, raw logits); its timed call includes its own tokenization, as its API has no other way."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as e:
        return {"skipped": f"sentence-transformers not importable: {e}"}
    model = CrossEncoder(model_dir, device=device, max_length=512, model_kwargs={"dtype": dtype})
    pairs = list(zip(corpus.queries, corpus.passages, strict=True))
    identity = torch.nn.Identity()
    model.predict(pairs[:64], batch_size=32, activation_fn=identity, show_progress_bar=False)
    start_memory(device)

    def run() -> None:
        model.predict(pairs, batch_size=32, activation_fn=identity, show_progress_bar=False)

    seconds = timed(device, run)
    # its batches: sorted by character length (longest first), 32 per batch
    chars = np.array([len(q) + len(p) for q, p in pairs])
    run = padded_tokens(corpus.lengths, fixed_batches(np.argsort(-chars, kind="stable"), 32))
    real = int(corpus.lengths.sum())
    return figures(len(pairs), real, run, seconds, flops, peaks, device) | {"batch_pairs": 32}


def matmul_flops(device: str, size: int, repeats: int = 10) -> float | None:
    """FLOP/s of a size^3 fp16 matrix product on random data (mean of `repeats` after warm-up)."""
    if device != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.float16)
    b = torch.randn(size, size, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    seconds = timed(device, lambda: [a @ b for _ in range(repeats)])
    return 2.0 * size**3 * repeats / seconds
