"""A family's prompt template turned into the token ids its model sees, one pair at a time or in
batches; torch-free (the pieces come from `pipeline.models.text_tokenizer`).

Two layouts (`family.py`):

- **segments** (flag-llm, flag-layerwise, mxbai-v2): each piece is tokenized alone, without
  special tokens, as FlagEmbedding and mxbai-rerank do:
      A = ids(query_text)[:query_max_length]    B = ids(document_text)[:max_length]
      S = ids(separator)                         T = S + ids(tail) + ids(suffix)
  and the ids are `[BOS] + ids(prefix) + A + (S + B)' + T`, where `(S + B)'` is cut by
  `truncation.cut_second_only`: FlagEmbedding's budget (`flag-prompt`) is
  `max_length + |S| + |ids(tail)|` over `[BOS] + A + S + B`, mxbai's (`chat-second-only`) is
  `max_length` over `A + S + B` (its system turn, separator, task prompt and suffix come on top).
  For the flag families this is FlagEmbedding's layout, id for id (its goldens).
- **joined** (qwen3): the body is one text, as in the model card. The head
  ("<Instruct>: {i}\\n<Query>: {q}\\n<Document>:") is tokenized as ONE string (BPE merges cross
  the query's end, e.g. "?\\n") and the document as " " + document on its own (equal to the
  whole body's ids, spec.md §1); `truncation.cut_body` cuts them to
  `max_length - |prefix| - |suffix|`, and the ids are `prefix + head' + doc' + suffix`.

mxbai also cuts the document to `model_max_length - |A| - 79` when that is below max_length; that
only matters past the model's positions, which the caller's max-length check rules out, so it is
not repeated here.

With `--long-passages chunk`, `encode_windows` tokenizes the document's lead ("B: ", "document: ",
" ") and the passage once, whole; every window holds the lead and as many passage tokens as fit
beside the query under the family's own budget, so a passage that fits is the very sequence
`encode` gives. For a family without a query cap (qwen3), chunk mode cuts the query to
--query-max-length, by default three quarters of what the template leaves the query and passage:
every window then has room.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from pipeline.config import default_query_max_length
from pipeline.errors import ModelLoadError
from pipeline.models.families.family import Family, JoinedLayout, SegmentLayout
from pipeline.models.families.truncation import cut_body, cut_second_only
from pipeline.models.padding import token_lists
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.models.windows import (
    WindowOptions,
    WindowRows,
    check_window_room,
    passage_tokens,
    window_starts,
)


@dataclass(frozen=True)
class _Segments:
    """A segments layout tokenized once: what every pair shares."""

    layout: SegmentLayout
    bos: list[int]  # counted in the budget (FlagEmbedding); [] for mxbai
    prefix: list[int]  # ids(layout.prefix): never counted
    separator: list[int]
    tail: list[int]  # separator + ids(tail) + ids(suffix), never cut
    query_line: str  # the instruction line, formatted ("" without one)
    query_max_length: int
    budget: int  # of bos + A + separator + B
    document_lead: str  # the document text before the passage: "B: ", "document: "


@dataclass(frozen=True)
class _Joined:
    """A joined layout tokenized once: what every pair shares."""

    head: str  # the body up to {document}, without the lead: "...\n<Document>:"
    lead: str  # the text between the head and {document}: " "
    instruction: str | None
    prefix: list[int]
    suffix: list[int]
    query_max_length: int | None
    budget: int  # of head' + doc'
    window_query_max_length: int  # chunk mode's cap: the given one, else 3/4 of the body's room


class TemplatePairTokenizer:
    """Turns (query, passage) texts into a family's token ids (flag-llm, flag-layerwise, qwen3,
    mxbai-v2): `encode_pairs` as id lists, `encode` and `encode_windows` as the tokenize stage's
    Arrow columns (decoders take no token type ids)."""

    uses_token_types = False

    def __init__(
        self,
        family: Family,
        tokenizer: TextTokenizer,
        max_length: int,
        query_max_length: int | None,
        instruction: str | None,
    ) -> None:
        """`query_max_length`: the resolved cap, or None where the family's `query_cap` is
        "given" and none was given; `instruction`: resolved, i.e. `family.instruction(given)`."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1 token, got {max_length}")
        self.family = family
        self.tokenizer = tokenizer
        self.max_length = max_length
        layout = family.layout
        if isinstance(layout, SegmentLayout):
            self._plan: _Segments | _Joined = self._segments(layout, query_max_length, instruction)
        elif isinstance(layout, JoinedLayout):
            self._plan = self._joined(layout, query_max_length, instruction)
        else:
            raise ValueError(
                f"family {family.name!r} has no prompt template (an encoder family): use PairTokenizer"
            )

    @classmethod
    def load(
        cls,
        name_or_path: str,
        family: Family,
        max_length: int,
        query_max_length: int | None,
        instruction: str | None,
    ) -> TemplatePairTokenizer:
        """The family's tokenizer over the model's tokenizer.json (no repo code runs)."""
        return cls(family, TextTokenizer.load(name_or_path), max_length, query_max_length, instruction)

    def encode(self, queries: list[str], passages: list[str]) -> dict[str, pa.Array]:
        """Token ids as an Arrow list array."""
        return {"input_ids": token_lists(self.encode_pairs(queries, passages))}

    def encode_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> list[list[int]]:
        """The ids the model sees for each pair (the texts tokenized in batches)."""
        if len(queries) != len(passages):
            raise ValueError(
                f"{len(queries)} queries but {len(passages)} passages; give one of each per pair"
            )
        if isinstance(self._plan, _Segments):
            return self._encode_segments(self._plan, list(queries), list(passages))
        return self._encode_joined(self._plan, list(queries), list(passages))

    @property
    def min_window(self) -> int:
        """Passage tokens beside the longest query: the narrowest window of chunk mode."""
        plan = self._plan
        if isinstance(plan, _Segments):
            lead = len(passage_tokens(self.tokenizer.backend, [""], plan.document_lead)[0].lead)
            return self._segment_room(plan, len(plan.bos) + plan.query_max_length) - lead
        (head,) = self._window_heads(plan, [""])
        return plan.budget - len(head) - plan.window_query_max_length

    def encode_windows(
        self, queries: list[str], passages: list[str], options: WindowOptions
    ) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """One sequence per window of each passage: (the input pair of each window, its token
        columns and window columns, `pipeline.models.windows`)."""
        check_window_room(self.min_window, options.overlap, f"the {self.family.name} template")
        plan = self._plan
        rows = WindowRows(with_types=False)
        if isinstance(plan, _Segments):
            a_ids = self._query_ids(plan, queries)
            heads = [[*plan.bos, *plan.prefix, *a, *plan.separator] for a in a_ids]
            rooms = [self._segment_room(plan, len(plan.bos) + len(a)) for a in a_ids]
            tails, lead_text = plan.tail, plan.document_lead
        else:
            cut = self._window_heads(plan, queries)
            heads = [[*plan.prefix, *head] for head in cut]
            rooms = [plan.budget - len(head) for head in cut]
            tails, lead_text = plan.suffix, plan.lead
        for i, (head, room, p) in enumerate(
            zip(heads, rooms, passage_tokens(self.tokenizer.backend, passages, lead_text), strict=True)
        ):
            width = max(1, room - len(p.lead))
            # min(): a lead that took more tokens than usual (a merge across the boundary) still steps
            overlap = min(options.overlap, width - 1)
            starts, not_scored = window_starts(len(p.ids), width, overlap, options.max_chunks)
            for s in starts:
                rows.ids += [*head, *p.lead, *p.ids[s : s + width], *tails]
                rows.end_window()
            rows.add_pair(i, starts, p.chars, not_scored)
        return rows.arrays()

    # segments ------------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.ids([text])[0] if text else []

    def _bos(self, layout: SegmentLayout) -> list[int]:
        bos, pad = self.tokenizer.bos_token_id, self.tokenizer.pad_token_id
        if layout.bos == "always":
            if bos is None:
                raise ModelLoadError(
                    f"family {self.family.name!r} needs a tokenizer with a BOS token; this one has none"
                )
            return [bos]
        if layout.bos == "if-distinct-from-pad" and bos is not None and bos != pad:
            return [bos]
        return []

    def _segments(
        self, layout: SegmentLayout, query_max_length: int | None, instruction: str | None
    ) -> _Segments:
        if query_max_length is None:
            raise ValueError(
                f"family {self.family.name!r} cuts the query to a resolved --query-max-length; got None"
            )
        if "{instruction}" in layout.tail and instruction is None:
            raise ValueError(f"family {self.family.name!r} puts an instruction after the pair; got None")
        separator = self._ids(layout.separator)
        tail_text = self._ids(layout.tail.format(instruction=instruction))
        flag_rule = self.family.truncation == "flag-prompt"
        line = layout.instruction_line.format(instruction=instruction) if instruction is not None else ""
        return _Segments(
            layout=layout,
            bos=self._bos(layout),
            prefix=self._ids(layout.prefix),
            separator=separator,
            tail=[*separator, *tail_text, *self._ids(layout.suffix)],
            query_line=line,
            query_max_length=query_max_length,
            # FlagEmbedding's encode_max_length vs mxbai's prepare_for_model(max_length)
            budget=self.max_length + (len(separator) + len(tail_text) if flag_rule else 0),
            document_lead=layout.document.partition("{document}")[0],
        )

    def _segment_room(self, plan: _Segments, first: int) -> int:
        """Tokens of the separator-less document (its lead included) that fit after `first`
        counted tokens ([BOS] + A): B is cut to max_length, then S + B to what the budget leaves."""
        return min(self.max_length, plan.budget - first - len(plan.separator))

    def _query_ids(self, plan: _Segments, queries: list[str]) -> list[list[int]]:
        texts = [plan.layout.query.format(instruction_line=plan.query_line, query=q) for q in queries]
        return self.tokenizer.ids(texts, plan.query_max_length)

    def _encode_segments(self, plan: _Segments, queries: list[str], passages: list[str]) -> list[list[int]]:
        a_ids = self._query_ids(plan, queries)
        b_ids = self.tokenizer.ids(
            [plan.layout.document.format(document=p) for p in passages], self.max_length
        )
        side = self.tokenizer.truncation_side
        out = []
        for a, b in zip(a_ids, b_ids, strict=True):
            # the first part (BOS + A) is never cut; the uncounted prefix goes between (FlagEmbedding
            # has only the BOS, mxbai only the prefix)
            _, second = cut_second_only([*plan.bos, *a], [*plan.separator, *b], plan.budget, side=side)
            out.append([*plan.bos, *plan.prefix, *a, *second, *plan.tail])
        return out

    # joined --------------------------------------------------------------------------------

    def _joined(self, layout: JoinedLayout, query_max_length: int | None, instruction: str | None) -> _Joined:
        before, marker, after = layout.body.partition("{document}")
        if not marker or after:
            raise ValueError(
                f"family {self.family.name!r}: the joined body must end in {{document}}, got {layout.body!r}"
            )
        head = before.rstrip(" ")
        if "{query}" not in head:
            raise ValueError(f"family {self.family.name!r}: the body has no {{query}} before {{document}}")
        if "{instruction}" in head and instruction is None:
            raise ValueError(f"family {self.family.name!r} puts an instruction in the body; got None")
        prefix, suffix = self._ids(layout.prefix), self._ids(layout.suffix)
        plan = _Joined(
            head=head,
            lead=before[len(head) :],
            instruction=instruction,
            prefix=prefix,
            suffix=suffix,
            query_max_length=query_max_length,
            budget=self.max_length - len(prefix) - len(suffix),
            window_query_max_length=0,
        )
        # chunk mode's cap: the given one, else 3/4 of what the template leaves the query and passage
        room = plan.budget - self._template_ids(plan)
        cap = query_max_length if query_max_length is not None else max(1, default_query_max_length(room))
        return replace(plan, window_query_max_length=cap)

    def _template_ids(self, plan: _Joined) -> int:
        """The ids the body takes besides the query (instruction and labels); ModelLoadError,
        before any pair, if the template and instruction alone overflow."""
        head, (start, end) = self._heads(plan, [""])[0]
        try:
            cut_body(head, (start, end), [], plan.budget, 0)
        except ValueError as e:
            raise ModelLoadError(
                f"--max-length {self.max_length} is too short for the {self.family.name} template: {e}"
            ) from e
        return len(head) - (end - start)

    def _heads(self, plan: _Joined, queries: list[str]) -> list[tuple[list[int], tuple[int, int]]]:
        """Each query's head ids and the [start, end) of its query's ids in them."""
        heads = [format_with_spans(plan.head, {"instruction": plan.instruction, "query": q}) for q in queries]
        encodings = self.tokenizer.backend.encode_batch([text for text, _ in heads], add_special_tokens=False)
        return [
            (list(e.ids), query_token_span(e.offsets, spans["query"]))
            for (_, spans), e in zip(heads, encodings, strict=True)
        ]

    def _window_heads(self, plan: _Joined, queries: list[str]) -> list[list[int]]:
        """Chunk mode's heads: the query cut to the window cap (and to the budget, if need be)."""
        return [
            cut_body(head, span, [], plan.budget, plan.window_query_max_length)[0]
            for head, span in self._heads(plan, queries)
        ]

    def _encode_joined(self, plan: _Joined, queries: list[str], passages: list[str]) -> list[list[int]]:
        doc_ids = self.tokenizer.ids([plan.lead + p for p in passages])
        out = []
        for (head, span), doc in zip(self._heads(plan, queries), doc_ids, strict=True):
            kept_head, kept_doc = cut_body(head, span, doc, plan.budget, plan.query_max_length)
            out.append([*plan.prefix, *kept_head, *kept_doc, *plan.suffix])
        return out


def format_with_spans(template: str, values: dict[str, str | None]) -> tuple[str, dict[str, tuple[int, int]]]:
    """`template.format(**values)` and the [start, end) characters each field's value took (the
    last occurrence if a field repeats). Only plain `{name}` fields; a None value is an error."""
    parts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    at = 0
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        at += len(literal)
        if field is None:
            continue
        if spec or conversion or field not in values:
            raise ValueError(f"template {template!r}: field {{{field}}} is not a plain known field")
        value = values[field]
        if value is None:
            raise ValueError(f"template {template!r}: no value for {{{field}}}")
        parts.append(value)
        spans[field] = (at, at + len(value))
        at += len(value)
    return "".join(parts), spans


def query_token_span(offsets: Sequence[tuple[int, int]], chars: tuple[int, int]) -> tuple[int, int]:
    """The [start, end) of the tokens that belong to a field's characters `chars`: those that end
    inside it (after its start, not past its end). A token that begins in the template before the
    field (" what" takes the label's space) belongs to it; one that runs past its end ("?\\n"
    takes the template's newline) does not, so cutting the field never drops template text after
    it. Offsets are monotonic, so the tokens are contiguous."""
    start_char, end_char = chars
    inside = [i for i, (_, end) in enumerate(offsets) if start_char < end <= end_char]
    if not inside:
        # an empty field (or one merged into a single token with the template): no ids of its own
        first_after = next((i for i, (_, end) in enumerate(offsets) if end > start_char), len(offsets))
        return first_after, first_after
    return inside[0], inside[-1] + 1
