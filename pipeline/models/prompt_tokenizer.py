"""Pair tokenization of decoder (LLM and layerwise) rerankers, identical to FlagEmbedding's.

Each piece is tokenized alone, without special tokens:
    A = tok("A: " + query)[:query_max_length]    B = tok("B: " + passage)[:max_length]
    S = tok("\\n")                                P = tok(prompt)
and the sequence is `[BOS] + A + S + B' + S + P`, where `B'` is B cut (from the tokenizer's
truncation side) so that `len([BOS] + A) + len(S + B') <= max_length + len(S) + len(P)`; the
trailing `S + P` is always kept, and there is no EOS. BOS is added when the tokenizer has one that
differs from its pad token (`FlagLLMReranker`), or always (`LayerWiseFlagLLMReranker`).

With `--long-passages chunk`, `encode_windows` tokenizes "B: " + passage once, whole; its tokens
within "B: " lead every window, and a window holds what fits beside [BOS] + A under the same rule
(`min(max_length, budget - len([BOS] + A + S))` tokens with the lead), so a passage that fits is the
very sequence `encode` gives.

The pieces come from `pipeline.models.text_tokenizer` (no transformers, no torch); `yes_token_id`
is for the scoring and fine-tuning side and takes transformers' tokenizer object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import ModelLoadError
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.models.windows import (
    WindowOptions,
    WindowRows,
    check_window_room,
    passage_tokens,
    window_starts,
)

QUERY_PREFIX = "A: "
PASSAGE_PREFIX = "B: "
SEPARATOR = "\n"


def yes_token_id(tokenizer: Any) -> int:
    """The token whose logit is the LLM reranker's score: the first token of "Yes"."""
    ids = tokenizer("Yes", add_special_tokens=False)["input_ids"]
    if not ids:
        raise ModelLoadError("the tokenizer turns 'Yes' into no tokens; this is not an LLM reranker")
    return int(ids[0])


class PromptPairTokenizer:
    """Turns (query, passage) texts into FlagEmbedding's decoder-reranker token ids."""

    uses_token_types = False

    def __init__(
        self, tokenizer: TextTokenizer, max_length: int, query_max_length: int, prompt: str, always_bos: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.prompt_ids = tokenizer.ids([prompt])[0]
        self.sep_ids = tokenizer.ids([SEPARATOR])[0]
        bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
        if always_bos and bos is None:
            raise ModelLoadError("a layerwise reranker needs a tokenizer with a BOS token; this one has none")
        self.prefix = [bos] if bos is not None and (always_bos or bos != pad) else []
        self.cut_left = tokenizer.truncation_side == "left"
        # FlagEmbedding's encode_max_length: the budget of [BOS] + A + S + B'.
        self.budget = max_length + len(self.sep_ids) + len(self.prompt_ids)

    @classmethod
    def load(
        cls,
        name_or_path: str,
        max_length: int,
        query_max_length: int,
        prompt: str,
        always_bos: bool,
        trust_remote_code: bool = False,
    ) -> PromptPairTokenizer:
        """`trust_remote_code` is accepted for the callers' sake: tokenizer.json runs no repo code."""
        return cls(TextTokenizer.load(name_or_path), max_length, query_max_length, prompt, always_bos)

    def _room(self, first: int) -> int:
        """Tokens of B' (its "B: " lead included) that fit after `first` tokens of [BOS] + A."""
        return min(self.max_length, self.budget - first - len(self.sep_ids))

    @property
    def min_window(self) -> int:
        """Passage tokens beside the longest query: the narrowest window of chunk mode."""
        lead = len(passage_tokens(self.tokenizer.backend, [""], PASSAGE_PREFIX)[0].lead)
        return self._room(len(self.prefix) + self.query_max_length) - lead

    def encode_windows(
        self, queries: list[str], passages: list[str], options: WindowOptions
    ) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """One sequence per window of each passage: (the input pair of each window, its token
        columns and window columns, `pipeline.models.windows`)."""
        check_window_room(self.min_window, options.overlap, "the prompt layout")
        q_ids = self.tokenizer.ids([QUERY_PREFIX + q for q in queries], self.query_max_length)
        tail = [*self.sep_ids, *self.prompt_ids]
        rows = WindowRows(with_types=False)
        pieces = passage_tokens(self.tokenizer.backend, passages, PASSAGE_PREFIX)
        for i, (q, p) in enumerate(zip(q_ids, pieces, strict=True)):
            first = [*self.prefix, *q]
            width = max(1, self._room(len(first)) - len(p.lead))
            # min(): a passage whose lead takes more tokens than "B: " alone (a merge across the
            # boundary) still steps forward
            overlap = min(options.overlap, width - 1)
            starts, not_scored = window_starts(len(p.ids), width, overlap, options.max_chunks)
            for s in starts:
                rows.ids += [*first, *self.sep_ids, *p.lead, *p.ids[s : s + width], *tail]
                rows.end_window()
            rows.add_pair(i, starts, p.chars, not_scored)
        return rows.arrays()

    def encode(self, queries: list[str], passages: list[str]) -> dict[str, pa.Array]:
        """Token ids as an Arrow list array (decoders take no token type ids)."""
        q_ids = self.tokenizer.ids([QUERY_PREFIX + q for q in queries], self.query_max_length)
        p_ids = self.tokenizer.ids([PASSAGE_PREFIX + p for p in passages], self.max_length)
        tail = [*self.sep_ids, *self.prompt_ids]
        ids: list[int] = []
        offsets = np.zeros(len(q_ids) + 1, dtype=np.int32)
        for i, (q, p) in enumerate(zip(q_ids, p_ids, strict=True)):
            first = [*self.prefix, *q]
            second = [*self.sep_ids, *p]
            remove = len(first) + len(second) - self.budget
            # Only the second part is ever cut, and only if that suffices (the tokenizers' rule).
            if 0 < remove < len(second):
                second = second[remove:] if self.cut_left else second[:-remove]
            ids += first + second + tail
            offsets[i + 1] = len(ids)
        offsets_arr = pa.array(offsets, pa.int32())
        return {"input_ids": pa.ListArray.from_arrays(offsets_arr, pa.array(ids, pa.int32()))}
