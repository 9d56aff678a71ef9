"""`TemplatePairTokenizer` builds each family's ids as its own code does: FlagEmbedding's layout
for the FlagEmbedding families (id for id with its goldens: test_decoder_parity.py), the Qwen3-Reranker card's
`prefix + tok(body)[:max_length - |prefix| - |suffix|] + suffix` whenever the document absorbs the
cut, and mxbai-rerank-v2's piecewise rule (a reference written here from spec.md §3)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.config import DEFAULT_PROMPT
from pipeline.errors import ModelLoadError
from pipeline.models.families.family import Family, SegmentLayout
from pipeline.models.families.registry import CROSS_ENCODER, FLAG_LAYERWISE, FLAG_LLM, MXBAI_V2, QWEN3
from pipeline.models.families.template_tokenizer import (
    TemplatePairTokenizer,
    format_with_spans,
    query_token_span,
)
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.models.windows import WindowOptions

# Words that stress BPE boundaries: punctuation that merges with a newline ("?\n"), spaces,
# non-Latin scripts, emoji, braces (not format fields once substituted), digits.
WORDS = [
    "what", "is", "built?", "the", "river", "Paris", "(1889)", "x=1;", "naïve", "café", "日本語",
    "东京", "🙂", "emoji👍🏽", "{query}", "{}", "--", "!!", "a", "42", "3.14", "don't", "e.g.",
    "\n", "  ", "\t", "<b>", "Ünïcödé", "résumé", "ok.", "?", "...", "https://x.org/a?b=c",
]  # fmt: skip


def _text(rng: random.Random, max_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, max_words))]
    text = "".join(w + rng.choice([" ", " ", "", "\n"]) for w in words)
    return text.rstrip(" ") if rng.random() < 0.7 else text


def _pairs(seed: int, n: int, max_query: int, max_doc: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    return [_text(rng, max_query) for _ in range(n)], [_text(rng, max_doc) for _ in range(n)]


def _ids(tok: TextTokenizer, text: str) -> list[int]:
    return tok.backend.encode(text, add_special_tokens=False).ids


# --- the stage's interface: Arrow columns and chunk-mode windows ----------------------------------


def test_encode_is_encode_pairs_as_arrow(tiny_gemma):
    tok = TextTokenizer.load(tiny_gemma)
    template = TemplatePairTokenizer(FLAG_LLM, tok, 32, 24, DEFAULT_PROMPT)
    assert template.encode(["q?", ""], ["p", "x"])["input_ids"].to_pylist() == template.encode_pairs(
        ["q?", ""], ["p", "x"]
    )
    with pytest.raises(ValueError, match="2 queries but 1 passages"):
        template.encode_pairs(["a", "b"], ["c"])


# --- Qwen3-Reranker: the model card --------------------------------------------------------------

CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.fixture(scope="module")
def qwen3_tok(tiny_qwen3_reranker) -> TextTokenizer:
    return TextTokenizer.load(tiny_qwen3_reranker)


def _card_head(instruction: str, query: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"


@pytest.mark.parametrize("seed", range(3))
def test_qwen3_is_the_card_whenever_the_document_absorbs_the_cut(qwen3_tok, seed):
    """A few hundred random pairs: the card's ids exactly while the head fits; otherwise the prefix,
    suffix, instruction and "\\n<Document>:" lead stay and only the query is cut."""
    prefix, suffix = _ids(qwen3_tok, CARD_PREFIX), _ids(qwen3_tok, CARD_SUFFIX)
    assert (len(prefix), len(suffix)) == (39, 9)  # spec.md §1
    rng = random.Random(seed)
    queries, passages = _pairs(100 + seed, 100, 25, 120)
    absorbed = 0
    for q, d in zip(queries, passages, strict=True):
        max_length = rng.choice([80, 96, 128, 200, 512])
        given = rng.choice([None, None, "Find the passage about rivers 🙂"])
        instruction = QWEN3.instruction(given)
        assert instruction == (CARD_INSTRUCTION if given is None else given)
        ids = TemplatePairTokenizer(QWEN3, qwen3_tok, max_length, None, instruction).encode_pairs([q], [d])[0]
        budget = max_length - len(prefix) - len(suffix)
        assert ids[: len(prefix)] == prefix and ids[len(ids) - len(suffix) :] == suffix
        assert len(ids) <= max_length
        head = _card_head(instruction, q)
        if len(_ids(qwen3_tok, head)) <= budget:
            absorbed += 1
            body = _ids(qwen3_tok, f"{head} {d}")
            assert ids == prefix + body[:budget] + suffix, (q, d, max_length)
        else:
            kept = qwen3_tok.backend.decode(ids[len(prefix) : len(ids) - len(suffix)])
            assert kept.startswith(f"<Instruct>: {instruction}\n<Query>:") and kept.endswith("\n<Document>:")
            assert len(ids) == max_length
    assert 50 <= absorbed < len(queries)  # both regimes were seen


def test_qwen3_query_cap_keeps_the_labels(qwen3_tok):
    """--query-max-length 5 keeps the query's first 5 ids; the "?\n" id that the query's end
    shares with the template stays (it holds the label's newline)."""
    query = "what is built? " * 20 + "built?"
    template = TemplatePairTokenizer(QWEN3, qwen3_tok, 512, 5, CARD_INSTRUCTION)
    kept = qwen3_tok.backend.decode(
        template.encode_pairs([query], ["The Eiffel tower."])[0], skip_special_tokens=False
    )
    assert kept == (
        f"{CARD_PREFIX}<Instruct>: {CARD_INSTRUCTION}\n<Query>: what is built? what?\n"
        f"<Document>: The Eiffel tower.{CARD_SUFFIX}"
    )


def test_qwen3_raises_when_the_template_alone_overflows(qwen3_tok):
    with pytest.raises(ModelLoadError, match="raise --max-length"):
        TemplatePairTokenizer(QWEN3, qwen3_tok, 60, None, CARD_INSTRUCTION)


# --- mxbai-rerank-v2: a reference from spec.md §3 --------------------------------------------------

MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your "
    "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)


def _mxbai_reference(
    tok: TextTokenizer, query: str, doc: str, max_length: int, instruction: str | None
) -> list[int]:
    """mxbai_rerank_v2.py's prepare_inputs: every piece tokenized alone; the query part cut to
    max_length*3//4, the document to max_length; prepare_for_model(q, sep + doc,
    truncation="only_second", max_length) as transformers 4 runs it (the second part is cut only
    if that suffices); then sep + task prompt, inside the chat prefix and suffix; no BOS."""
    query_part = f"query: {query}" if instruction is None else f"instruction: {instruction}\nquery: {query}"
    q = _ids(tok, query_part)[: max_length * 3 // 4]
    sep = _ids(tok, "\n")
    second = sep + _ids(tok, f"document: {doc}")[:max_length]
    remove = len(q) + len(second) - max_length
    if remove > 0 and len(second) > remove:
        second = second[: len(second) - remove]
    return _ids(tok, MXBAI_PREFIX) + q + second + sep + _ids(tok, MXBAI_TASK) + _ids(tok, MXBAI_SUFFIX)


@pytest.mark.parametrize("seed", range(3))
def test_mxbai_equals_its_piecewise_reference(tiny_mxbai_v2, seed):
    tok = TextTokenizer.load(tiny_mxbai_v2)
    assert tok.bos_token_id is None or MXBAI_V2.layout.bos == "never"
    assert (len(_ids(tok, MXBAI_PREFIX)), len(_ids(tok, MXBAI_SUFFIX)), len(_ids(tok, MXBAI_TASK))) == (
        24,
        5,
        49,
    )
    rng = random.Random(seed)
    queries, passages = _pairs(200 + seed, 100, 30, 100)
    kinds = set()
    for q, d in zip(queries, passages, strict=True):
        max_length = rng.choice([4, 12, 24, 48, 96, 256])
        instruction = MXBAI_V2.instruction(rng.choice([None, "Judge relevance to 日本語"]))
        ids = TemplatePairTokenizer(MXBAI_V2, tok, max_length, max_length * 3 // 4, instruction).encode_pairs(
            [q], [d]
        )[0]
        assert ids == _mxbai_reference(tok, q, d, max_length, instruction), (q, d, max_length)
        kinds.add(len(ids) - 79 - max_length)
    assert any(k < 0 for k in kinds) and 0 in kinds  # both short pairs and cut ones were seen


# --- the pieces ------------------------------------------------------------------------------------


def test_format_with_spans():
    text, spans = format_with_spans(
        "<I>: {instruction}\n<Q>: {query}!", {"instruction": "ab", "query": "{x}"}
    )
    assert text == "<I>: ab\n<Q>: {x}!"
    assert text[slice(*spans["instruction"])] == "ab" and text[slice(*spans["query"])] == "{x}"
    with pytest.raises(ValueError, match="no value"):
        format_with_spans("{query}", {"query": None})
    with pytest.raises(ValueError, match="not a plain known field"):
        format_with_spans("{query!r}", {"query": "q"})


def test_query_token_span_keeps_the_template_text_after_the_query():
    # "<Query>:"=0..8, " what"=8..13, " built"=13..19, "?\n"=19..21 (the query is chars 9..20)
    offsets = [(0, 8), (8, 13), (13, 19), (19, 21), (21, 30)]
    assert query_token_span(offsets, (9, 20)) == (1, 3)
    assert query_token_span(offsets, (9, 9)) == (1, 1)  # an empty query: no ids


def test_families_without_a_template_or_a_cap_are_refused(tiny_gemma):
    tok = TextTokenizer.load(tiny_gemma)
    with pytest.raises(ValueError, match="no prompt template"):
        TemplatePairTokenizer(CROSS_ENCODER, tok, 32, 24, None)
    with pytest.raises(ValueError, match="query-max-length"):
        TemplatePairTokenizer(FLAG_LLM, tok, 32, None, DEFAULT_PROMPT)


def test_a_family_that_always_takes_bos_needs_one(tiny_qwen3_reranker):
    tok = TextTokenizer.load(tiny_qwen3_reranker)  # Qwen: no BOS
    assert isinstance(FLAG_LAYERWISE.layout, SegmentLayout)
    family: Family = FLAG_LAYERWISE
    with pytest.raises(ModelLoadError, match="BOS"):
        TemplatePairTokenizer(family, tok, 32, 24, DEFAULT_PROMPT)


@pytest.mark.parametrize("family", [QWEN3, MXBAI_V2])
def test_chat_family_windows_hold_the_template_and_cover_the_passage(family, qwen3_tok):
    queries, passages = _pairs(11, 12, 20, 600)
    passages[0] = "a short passage."
    max_length, overlap = 160, 8
    tok = TemplatePairTokenizer(family, qwen3_tok, max_length, None if family is QWEN3 else 120, "Rank it.")
    pair, columns = tok.encode_windows(queries, passages, WindowOptions(overlap, 50))
    ids = columns["input_ids"].to_pylist()
    whole = tok.encode_pairs(queries, passages)
    suffix = _ids(qwen3_tok, family.layout.suffix)
    # mxbai's budget counts the query and document only: its system turn, task prompt and suffix
    # come on top (as in its own code)
    layout = family.layout
    pieces = () if family is QWEN3 else (layout.prefix, "\n", layout.tail, layout.suffix)
    extra = sum(len(_ids(qwen3_tok, text)) for text in pieces)
    for i in range(len(queries)):
        windows = [ids[k] for k in np.flatnonzero(pair == i)]
        assert all(len(w) <= max_length + extra for w in windows)
        assert all(w[-len(suffix) :] == suffix for w in windows)
        if len(windows) == 1:  # a passage that fits is the very sequence encode gives
            assert windows[0] == whole[i]
            continue
        head = _common_prefix(windows)
        tail = len(suffix) if family is QWEN3 else len(suffix) + len(_ids(qwen3_tok, family.layout.tail)) + 1
        bodies = [w[len(head) : len(w) - tail] for w in windows]
        rebuilt = bodies[0] + [t for b in bodies[1:] for t in b[overlap:]]
        lead = "document: " if family is MXBAI_V2 else " "
        full = _ids(qwen3_tok, lead + passages[i])
        assert full[len(full) - len(rebuilt) :] == rebuilt  # every passage token, in order, once
    assert len(set(pair.tolist())) == len(queries)


def _common_prefix(rows: list[list[int]]) -> list[int]:
    n = 0
    while all(len(r) > n and r[n] == rows[0][n] for r in rows):
        n += 1
    return rows[0][:n]
