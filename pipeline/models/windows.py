"""Long passages as windows (`--long-passages chunk`): which tokens each window holds, and the
columns that tell the driver which input row a window belongs to. Pure Python/numpy: the pair
tokenizers build the windows' token ids with their own pair template.

A passage of `n` tokens beside a query that leaves room for `width` passage tokens is scored as
windows starting at token 0, S, 2S, ... with S = width - overlap, until a window reaches the end of
the passage (so a passage that fits is one window, the pair truncate mode gives), at most
`max_chunks` of them; the windows past that are counted, not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from pipeline.errors import ModelLoadError

# Per tokenized window: its index within its row, the row's scored window count, the character
# offset in the passage where it starts, and how many of the row's windows were not scored.
WINDOW = "window"
WINDOWS = "windows"
WINDOW_CHAR = "window_char"
WINDOWS_NOT_SCORED = "windows_not_scored"
WINDOW_FIELDS = (
    pa.field(WINDOW, pa.int16()),
    pa.field(WINDOWS, pa.int16()),
    pa.field(WINDOW_CHAR, pa.int32()),
    pa.field(WINDOWS_NOT_SCORED, pa.int32()),
)
WINDOW_COLUMNS = tuple(f.name for f in WINDOW_FIELDS)
MAX_CHUNKS_LIMIT = 32767  # the output's `chunks` column is int16


@dataclass(frozen=True)
class WindowOptions:
    """How long passages are cut into windows: tokens shared by neighbours, windows at most."""

    overlap: int = 32
    max_chunks: int = 16


def window_starts(n_tokens: int, width: int, overlap: int, max_chunks: int) -> tuple[list[int], int]:
    """Token offsets of the windows scored, and how many windows past `max_chunks` are not."""
    if width < 1 or overlap >= width:
        raise ValueError(f"a window of {width} tokens cannot overlap its neighbour by {overlap}")
    if n_tokens <= width:
        return [0], 0
    step = width - overlap
    total = 1 + math.ceil((n_tokens - width) / step)
    scored = min(total, max_chunks)
    return [k * step for k in range(scored)], total - scored


def check_window_room(min_width: int, overlap: int, what: str) -> None:
    """ModelLoadError when the narrowest window (the query at its longest) cannot step forward."""
    if overlap >= min_width:
        raise ModelLoadError(
            f"--chunk-overlap {overlap} leaves windows no step: with a query at --query-max-length, "
            f"{what} leaves {min_width} passage token(s) per window; set --chunk-overlap below "
            f"{min_width} or lower --query-max-length"
        )


@dataclass(frozen=True)
class PassageTokens:
    """A passage tokenized once, without special tokens: its token ids, each token's character
    offset in the passage, and the ids of a fixed lead (decoders' "B: ") before the passage."""

    ids: list[int]
    chars: list[int]
    lead: list[int] = field(default_factory=list)


def passage_tokens(backend: Tokenizer, texts: list[str], lead_text: str = "") -> list[PassageTokens]:
    """`lead_text + text` for each text tokenized as the pair tokenizers do (no special tokens);
    the leading tokens that lie within `lead_text` are the lead, the rest the passage's tokens
    (a token straddling the boundary belongs to the passage), offsets counted in the passage."""
    lead = len(lead_text)
    out = []
    for e in backend.encode_batch([lead_text + t for t in texts], add_special_tokens=False):
        n_lead = 0
        while n_lead < len(e.ids) and e.offsets[n_lead][1] <= lead:
            n_lead += 1
        chars = [max(0, start - lead) for start, _ in e.offsets[n_lead:]]
        out.append(PassageTokens(e.ids[n_lead:], chars, e.ids[:n_lead]))
    return out


class WindowRows:
    """Collects one tokenized row per window: its ids (and type ids) and window columns."""

    def __init__(self, with_types: bool) -> None:
        self.ids: list[int] = []
        self.types: list[int] | None = [] if with_types else None
        self.offsets: list[int] = [0]
        self.pair: list[int] = []
        self.window: list[int] = []
        self.windows: list[int] = []
        self.char: list[int] = []
        self.not_scored: list[int] = []

    def add_pair(self, pair: int, starts: list[int], chars: list[int], not_scored: int) -> None:
        """Window metadata of pair `pair` (call after its windows' ids were appended)."""
        n = len(starts)
        self.pair += [pair] * n
        self.window += list(range(n))
        self.windows += [n] * n
        self.char += [0 if s == 0 else chars[s] for s in starts]
        self.not_scored += [not_scored] * n

    def end_window(self) -> None:
        self.offsets.append(len(self.ids))

    def arrays(self) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """(the input pair of each window, the token columns and window columns as Arrow arrays)."""
        offsets = pa.array(np.asarray(self.offsets, np.int32), pa.int32())
        out = {"input_ids": pa.ListArray.from_arrays(offsets, pa.array(self.ids, pa.int32()))}
        if self.types is not None:
            out["token_type_ids"] = pa.ListArray.from_arrays(offsets, pa.array(self.types, pa.int8()))
        values = (self.window, self.windows, self.char, self.not_scored)
        for f, column in zip(WINDOW_FIELDS, values, strict=True):
            out[f.name] = pa.array(column, f.type)
        return np.asarray(self.pair, np.int64), out
