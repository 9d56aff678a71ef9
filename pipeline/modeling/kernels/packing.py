"""Packed (unpadded) micro-batches: a batch's pairs laid end to end in one row, no padding at all.
Pure numpy: no torch, no Ray.

Attention then runs per pair (variable-length attention over `cu_seqlens`, see
pipeline.modeling.kernels.attention), so a pair sees only its own tokens; every other layer runs on
the real tokens alone. Each pair's positions restart at `position_offset` (0 for BERT and decoders,
pad_token_id + 1 for RoBERTa-style encoders, as their padded inputs number them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.models.batching import longest_first


def plan_packed_batches(lengths: np.ndarray, max_batch_tokens: int) -> list[np.ndarray]:
    """Rows longest first, cut into batches of at most `max_batch_tokens` real tokens (a row longer
    than the budget gets a batch of its own). Together the batches hold every row exactly once."""
    order = longest_first(lengths)
    sizes = np.maximum(np.asarray(lengths, dtype=np.int64)[order], 1)
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        # the first row past the budget closes the batch (cumsum from `start`)
        room = np.cumsum(sizes[start:]) <= max_batch_tokens
        end = start + max(1, int(room.sum()))
        batches.append(order[start:end])
        start = end
    return batches


def pack(
    input_ids: pa.ListArray,
    rows: np.ndarray,
    token_type_ids: pa.ListArray | None = None,
    position_offset: int = 0,
) -> dict[str, np.ndarray]:
    """The given rows' tokens end to end as int64 [1, total] arrays (`input_ids`, `position_ids`,
    `token_type_ids`), plus `cu_seqlens` (int32 [rows + 1]: where each pair starts), `first` and
    `last` (int64 [rows]: each pair's first and last token in the packed row) and `max_length`
    (int64 [1]: the longest pair). A row with no tokens is not allowed (the tokenizers never
    produce one)."""
    rows = np.asarray(rows, dtype=np.int64)
    offsets = input_ids.offsets.to_numpy()
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    if len(rows) and int(lengths.min()) < 1:
        raise ValueError("pack: a pair with no tokens cannot be packed")
    cu = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    total = int(cu[-1])
    owner = np.repeat(np.arange(len(rows)), lengths)  # which pair each packed token belongs to
    within = np.arange(total) - cu[owner]  # its position inside that pair
    source = starts[owner] + within
    out = {
        "input_ids": input_ids.values.to_numpy()[source].astype(np.int64)[None, :],
        "position_ids": (within + position_offset).astype(np.int64)[None, :],
        "cu_seqlens": cu.astype(np.int32),
        "first": cu[:-1].copy(),
        "last": cu[1:] - 1,
        "max_length": np.array([int(lengths.max()) if len(rows) else 0], dtype=np.int64),
    }
    if token_type_ids is not None:
        out["token_type_ids"] = token_type_ids.values.to_numpy()[source].astype(np.int64)[None, :]
    return out
