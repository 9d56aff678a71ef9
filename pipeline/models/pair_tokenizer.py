"""Pair tokenization identical to FlagEmbedding's `FlagReranker.compute_score`.

1. the query alone, no special tokens, truncated to `query_max_length`;
2. the passage alone, no special tokens, truncated to `max_length`;
3. both joined with the tokenizer's own pair template (`[CLS] q [SEP] p [SEP]` for BERT,
   `<s> q </s></s> p </s>` for XLM-R), cutting only the passage so the pair fits `max_length`.

ModernBERT cross-encoders (`truncation="longest-first"`) are cut as their cards' `tokenizer(q, d,
truncation=True)` cuts a pair: the Rust tokenizers' longest-first rule
(`pipeline.models.families.truncation.longest_first`), the query capped only by a given
--query-max-length.

With `--long-passages chunk`, `encode_windows` tokenizes each passage once, whole, and pairs each
of its windows (`pipeline.models.windows`) with the query in the same template: window width =
`max_length - len(query ids) - specials`, so a passage that fits is the very pair `encode` gives.

The pair template is read once from tokenizer.json's post-processor and applied to id lists here
(transformers 5 has no `prepare_for_model`). The tokenizer is `pipeline.models.text_tokenizer`'s,
without transformers or torch; `load_hf_tokenizer` stays for the scoring and fine-tuning side, which
needs transformers' own tokenizer object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import ModelLoadError
from pipeline.models.families.family import Truncation
from pipeline.models.families.truncation import longest_first
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.models.windows import (
    WindowOptions,
    WindowRows,
    check_window_room,
    passage_tokens,
    window_starts,
)


class _NoModelTypeWarning(logging.Filter):
    """Drops transformers' "model of type `minicpm` to instantiate a model of type ``" warning: the
    tokenizer loader reads config.json of a model type it has no class for (minicpm-layerwise),
    which is expected here and harmless (we only want the tokenizer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "to instantiate a model of type ``" not in record.getMessage()


def load_hf_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """The model's own (fast) tokenizer; model code from the repo runs only if the user allowed it."""
    from transformers import AutoTokenizer

    config_log = logging.getLogger("transformers.configuration_utils")
    quiet = _NoModelTypeWarning()
    config_log.addFilter(quiet)
    try:
        # trust_remote_code is always passed explicitly: left unset, transformers would prompt on
        # stdin for models whose config.json names remote code (minicpm-layerwise does).
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises OSError, ValueError, ... for a bad path/id
        raise ModelLoadError(
            f"cannot load the tokenizer of --model {name_or_path!r}: {e}; pass a local model "
            "directory or a hub id this machine can reach"
        ) from e
    finally:
        config_log.removeFilter(quiet)


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens and token type ids around the two segments of a pair."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    a_type: int
    b_type: int

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @property
    def has_type_ids(self) -> bool:
        """Whether any position gets a non-zero type id (all zeros equal the model's default)."""
        types = (*self.prefix_types, *self.middle_types, *self.suffix_types, self.a_type, self.b_type)
        return any(types)


def read_pair_template(tokenizer: TextTokenizer) -> PairTemplate:
    """Reads the pair template by running the tokenizer's post-processor on a probe pair."""
    # Padding is off, but the attention mask still drops pad positions should a backend add any.
    pair = tokenizer.backend.encode("a", "b", add_special_tokens=True)
    real = [i for i, m in enumerate(pair.attention_mask) if m]
    ids = [pair.ids[i] for i in real]
    types = [pair.type_ids[i] for i in real]
    seq = [pair.sequence_ids[i] for i in real]
    a_pos = [i for i, s in enumerate(seq) if s == 0]
    b_pos = [i for i, s in enumerate(seq) if s == 1]
    if not a_pos or not b_pos or a_pos[-1] >= b_pos[0]:
        raise ModelLoadError(f"cannot read a pair template from the tokenizer in {str(tokenizer.source)!r}")
    a0, a1, b0, b1 = a_pos[0], a_pos[-1] + 1, b_pos[0], b_pos[-1] + 1
    return PairTemplate(
        prefix=tuple(ids[:a0]),
        middle=tuple(ids[a1:b0]),
        suffix=tuple(ids[b1:]),
        prefix_types=tuple(types[:a0]),
        middle_types=tuple(types[a1:b0]),
        suffix_types=tuple(types[b1:]),
        a_type=types[a0],
        b_type=types[b0],
    )


class PairTokenizer:
    """Turns (query, passage) texts into a cross-encoder's pair token ids (FlagEmbedding's rule,
    or longest-first)."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        max_length: int,
        query_max_length: int,
        truncation: Truncation = "query-cap",
        query_cap: int | None = None,
    ) -> None:
        """`query_max_length` caps the query in chunk mode (and in FlagEmbedding's rule);
        `query_cap` is the longest-first rule's cap: a given --query-max-length, or None."""
        if truncation not in ("query-cap", "longest-first"):
            raise ValueError(f"a cross-encoder pair is cut by query-cap or longest-first, not {truncation!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.truncation = truncation
        self.query_cap = query_cap
        self.template = read_pair_template(tokenizer)
        # Type ids go to the model when its tokenizer returns them (FlagEmbedding passes all the
        # tokenizer returns) and they are not all zero (all zeros are what the model assumes anyway).
        self.uses_token_types = tokenizer.has_token_type_ids and self.template.has_type_ids
        self.cut_left = tokenizer.truncation_side == "left"
        room = max_length - query_max_length - self.template.num_special
        if room < 1:
            raise ModelLoadError(
                f"query_max_length={query_max_length} + {self.template.num_special} special tokens "
                f"leaves no passage room within max_length={max_length}; lower --query-max-length"
            )

    @classmethod
    def load(
        cls,
        name_or_path: str,
        max_length: int,
        query_max_length: int,
        truncation: Truncation = "query-cap",
        query_cap: int | None = None,
    ) -> PairTokenizer:
        """The model's tokenizer.json (no repo code runs)."""
        return cls(TextTokenizer.load(name_or_path), max_length, query_max_length, truncation, query_cap)

    @property
    def min_window(self) -> int:
        """Passage tokens beside the longest query: the narrowest window of chunk mode."""
        return self.max_length - self.query_max_length - self.template.num_special

    def _join(self, q: list[int], p: list[int], ids: list[int], types: list[int]) -> None:
        """Appends the pair (q, p) in the model's template (and its type ids if the model takes them)."""
        t = self.template
        ids += [*t.prefix, *q, *t.middle, *p, *t.suffix]
        if self.uses_token_types:
            types += [
                *t.prefix_types,
                *([t.a_type] * len(q)),
                *t.middle_types,
                *([t.b_type] * len(p)),
                *t.suffix_types,
            ]

    def _cut(self, q: list[int], p: list[int]) -> tuple[list[int], list[int]]:
        room = self.max_length - self.template.num_special
        if self.truncation == "longest-first":
            return longest_first(q, p, room, side="left" if self.cut_left else "right")
        keep = room - len(q)
        if len(p) > keep:
            p = p[len(p) - keep :] if self.cut_left else p[:keep]
        return q, p

    def encode(self, queries: list[str], passages: list[str]) -> dict[str, pa.Array]:
        """Token ids (and token type ids if the model takes them) as Arrow list arrays."""
        if self.truncation == "longest-first":  # whole lengths: which side is longer decides the cut
            q_ids, p_ids = self.tokenizer.ids(queries, self.query_cap), self.tokenizer.ids(passages)
        else:
            q_ids = self.tokenizer.ids(queries, self.query_max_length)
            p_ids = self.tokenizer.ids(passages, self.max_length)
        ids: list[int] = []
        types: list[int] = []
        offsets = np.zeros(len(q_ids) + 1, dtype=np.int32)
        for i, (q_full, p_full) in enumerate(zip(q_ids, p_ids, strict=True)):
            q, p = self._cut(q_full, p_full)
            self._join(q, p, ids, types)
            offsets[i + 1] = len(ids)
        offsets_arr = pa.array(offsets, pa.int32())
        result = {"input_ids": pa.ListArray.from_arrays(offsets_arr, pa.array(ids, pa.int32()))}
        if self.uses_token_types:
            result["token_type_ids"] = pa.ListArray.from_arrays(offsets_arr, pa.array(types, pa.int8()))
        return result

    def encode_windows(
        self, queries: list[str], passages: list[str], options: WindowOptions
    ) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """One pair per window of each passage: (the input pair of each window, its token columns
        and window columns, `pipeline.models.windows`)."""
        check_window_room(self.min_window, options.overlap, f"--max-length {self.max_length}")
        q_ids = self.tokenizer.ids(queries, self.query_max_length)
        rows = WindowRows(self.uses_token_types)
        types: list[int] = rows.types if rows.types is not None else []
        for i, (q, p) in enumerate(zip(q_ids, passage_tokens(self.tokenizer.backend, passages), strict=True)):
            width = self.max_length - len(q) - self.template.num_special
            starts, not_scored = window_starts(len(p.ids), width, options.overlap, options.max_chunks)
            for s in starts:
                self._join(q, p.ids[s : s + width], rows.ids, types)
                rows.end_window()
            rows.add_pair(i, starts, p.chars, not_scored)
        return rows.arrays()
