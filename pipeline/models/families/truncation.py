"""How a pair is cut to fit: pure rules on token-id lists, one per family of model cards.

- `cut_second_only`: FlagEmbedding's rule (`FlagReranker`, `FlagLLMReranker`, the layerwise one)
  and mxbai-rerank-v2's, both `prepare_for_model(..., truncation="only_second")` under
  transformers 4: the second part is cut only if that alone suffices, else both are left as they
  are (and the pair stays over the budget).
- `longest_first`: the Rust `tokenizers` crate's `TruncationStrategy::LongestFirst`, which
  `truncation=True` means for a pair (ModernBERT cards, sentence-transformers' `CrossEncoder`).
- `cut_body`: the Qwen3-Reranker card's right cut of its one-string body, except that the
  "\\n<Document>:" lead and the instruction are kept when the query has to be cut too.

No tokenizer and no torch here: the callers tokenize, these decide which ids stay.
"""

from __future__ import annotations

from typing import Literal

Side = Literal["left", "right"]


def _keep(ids: list[int], n: int, side: Side) -> list[int]:
    """The first `n` ids (`side="right"` cuts the end) or the last `n` (`"left"` cuts the start)."""
    if n >= len(ids):
        return list(ids)
    return list(ids[len(ids) - n :]) if side == "left" else list(ids[:n])


def cut_second_only(
    first: list[int], second: list[int], budget: int, *, side: Side = "right"
) -> tuple[list[int], list[int]]:
    """FlagEmbedding's (and mxbai-rerank-v2's) `only_second` rule: `first` is never cut; `second`
    loses the `len(first) + len(second) - budget` ids of its `side` end, but only if it has more
    ids than that. If it has not (the first part alone nearly fills the budget), both are returned
    whole and the pair exceeds the budget.

    This is transformers 4's `truncate_sequences(..., "only_second")`, which logs an error and
    leaves both in that case, and it is the rule the flag families always had
    (`if 0 < remove < len(second)`), so the FlagEmbedding goldens are kept byte for byte.
    transformers 5's Python tokenizers dropped that guard (they empty the second part instead);
    we keep 4's behaviour, which is what the published FlagEmbedding and mxbai code ran.
    """
    remove = len(first) + len(second) - budget
    if 0 < remove < len(second):
        return list(first), _keep(second, len(second) - remove, side)
    return list(first), list(second)


def longest_first(
    a: list[int], b: list[int], room: int, *, side: Side = "right"
) -> tuple[list[int], list[int]]:
    """The `tokenizers` crate's `LongestFirst` pair rule (`truncate_encodings`), with `room` the
    tokenizer's `max_length` minus the special tokens its post-processor adds to a pair.

    With n1 the shorter length and n2 the longer: if n1 > room, n2 = n1; else
    n2 = max(n1, room - n1). If then n1 + n2 > room, the two become room // 2 and
    room // 2 + room % 2 (the longer side, or `b` on a tie, gets the odd id). Each side keeps at
    most that many ids, cut on `side`. So only the longer side is cut while the shorter one fits
    in half the room; else both are cut to halves.
    """
    if room < 0:
        raise ValueError(f"longest_first needs room >= 0 ids for the pair, got room={room}")
    if len(a) + len(b) <= room:
        return list(a), list(b)
    n1, n2 = len(a), len(b)
    swapped = n1 > n2
    if swapped:
        n1, n2 = n2, n1
    n2 = n1 if n1 > room else max(n1, room - n1)
    if n1 + n2 > room:
        n1, n2 = room // 2, room // 2 + room % 2
    if swapped:
        n1, n2 = n2, n1
    return _keep(a, n1, side), _keep(b, n2, side)


def cut_body(
    head: list[int], query_span: tuple[int, int], doc: list[int], budget: int, query_cap: int | None
) -> tuple[list[int], list[int]]:
    """The Qwen3-Reranker card's body cut, keeping the template's labels: (head', doc').

    `head` is the ids of "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>:" tokenized as
    one string, `query_span` the [start, end) of the query's ids in it, and `doc` the ids of
    " " + document. `budget` is what the body may take: max_length minus the prefix and suffix
    ids, which the caller adds around head' + doc' and which are never cut.

    1. With `query_cap`, the query keeps its first `query_cap` ids (the card has no such cap).
    2. Document ids go from the end until the body fits.
    3. If the document is used up, query ids go from the query's end; the instruction part
       (`head[:start]`) and the lead (`head[end:]`) stay.

    The card tokenizes the body with `truncation='longest_first'` on one sequence, i.e. it keeps
    `(head + doc)[:budget]`. Whenever the document absorbs the cut this returns exactly that.
    Ours deviates when it does not: the card would cut the "\\n<Document>:" lead next, then the
    query's end, then the instruction; ours keeps the lead and the instruction and cuts only the
    query. Raises ValueError if the body does not fit even with an empty query.
    """
    start, end = query_span
    if not 0 <= start <= end <= len(head):
        raise ValueError(f"query_span={query_span} is not a span of the head's {len(head)} ids")
    if query_cap is not None and query_cap < 0:
        raise ValueError(f"query_cap must be >= 0 ids, got {query_cap}")
    fixed = len(head) - (end - start)  # instruction part + lead: never cut
    if fixed > budget:
        raise ValueError(
            f"the template's instruction and labels take {fixed} tokens but the body may take only "
            f"{budget} (--max-length minus the template's prefix and suffix); raise --max-length by "
            f"at least {fixed - budget} tokens, or shorten --instruction"
        )
    query_len = end - start if query_cap is None else min(end - start, query_cap)
    doc_room = budget - fixed - query_len
    if doc_room < 0:  # no document id fits: the query gives up its end
        query_len, doc_room = budget - fixed, 0
    return [*head[:start], *head[start : start + query_len], *head[end:]], list(doc[:doc_room])
