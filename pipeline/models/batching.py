"""Length ordering and token-budget micro-batches. Pure numpy: no torch, no Ray."""

from __future__ import annotations

import numpy as np


def longest_first(lengths: np.ndarray) -> np.ndarray:
    """Indices ordering rows longest first; equal lengths keep their input order (stable)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def plan_micro_batches(lengths: np.ndarray, max_batch_tokens: int, min_fill: float = 0.0) -> list[np.ndarray]:
    """Splits rows into padded micro-batches of at most `max_batch_tokens` padded tokens.

    Rows are taken longest first, so each batch pads to its first row's length. A batch is closed
    when adding one more row would exceed the budget (TEI's rule for padded models:
    `max_len * (rows + 1) > max_batch_tokens`), or, with `min_fill` > 0, before the first row
    shorter than `min_fill * max_len` (so every row of a batch is at least that full: padding stays
    under 1 - min_fill per row). A single row longer than the budget gets a batch of its own.
    Returns index arrays into `lengths`; together they hold every row exactly once.
    """
    order = longest_first(lengths)
    sorted_lengths = np.asarray(lengths, dtype=np.int64)[order]
    descending = -sorted_lengths  # ascending, for searchsorted
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        max_len = max(int(sorted_lengths[start]), 1)
        end = min(n, start + max(1, max_batch_tokens // max_len))
        if min_fill > 0:  # first row (from start) shorter than min_fill * max_len closes the batch
            end = min(end, max(start + 1, int(np.searchsorted(descending, -min_fill * max_len, "right"))))
        batches.append(order[start:end])
        start = end
    return batches


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """Tokens a padded forward over `batches` processes (rows x longest row, summed)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))


def fixed_batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """`order` cut into batches of `size` rows (the last may be short): the fixed-count batching of
    other rerankers' APIs, which the benchmarks compare the token budget against."""
    return [order[i : i + size] for i in range(0, len(order), size)]
