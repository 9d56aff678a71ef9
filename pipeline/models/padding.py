"""Right-padding of token id lists: the one copy the scorer, the fine-tuning student and the
benchmarks share. Pure numpy: a pair's real tokens sit at positions 0..n-1, the rest is padding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def token_lists(rows: list[list[int]]) -> pa.ListArray:
    """Python token id lists as the Arrow list array the stages pass around."""
    return pa.array(rows, pa.list_(pa.int32()))


def right_pad(
    input_ids: pa.ListArray,
    rows: np.ndarray,
    pad_token_id: int,
    token_type_ids: pa.ListArray | None = None,
) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask` (and `token_type_ids`) of the given rows as one right-padded
    int64 batch, as wide as its longest row (at least 1)."""
    rows = np.asarray(rows, dtype=np.int64)
    offsets = input_ids.offsets.to_numpy()
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    width = max(int(lengths.max()) if len(rows) else 0, 1)
    mask = np.arange(width)[None, :] < lengths[:, None]
    positions = np.where(mask, starts[:, None] + np.arange(width)[None, :], 0)
    flat = input_ids.values.to_numpy()
    out = {
        "input_ids": np.where(mask, flat[positions], pad_token_id).astype(np.int64),
        "attention_mask": mask.astype(np.int64),
    }
    if token_type_ids is not None:
        types = token_type_ids.values.to_numpy()
        out["token_type_ids"] = np.where(mask, types[positions], 0).astype(np.int64)
    return out
