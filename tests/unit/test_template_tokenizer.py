"""`TemplatePairTokenizer` builds each family's ids as its own code does: today's
`PromptPairTokenizer` for the FlagEmbedding families (id for id), the Qwen3-Reranker card's
`prefix + tok(body)[:max_length - |prefix| - |suffix|] + suffix` whenever the document absorbs the
cut, and mxbai-rerank-v2's piecewise rule (a reference written here from spec.md §3)."""

from __future__ import annotations

import random

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
from pipeline.models.prompt_tokenizer import PromptPairTokenizer
from pipeline.models.text_tokenizer import TextTokenizer

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


# --- FlagEmbedding families: today's PromptPairTokenizer ---------------------------------------


@pytest.mark.parametrize(
    ("family", "model_fixture"), [(FLAG_LLM, "tiny_gemma"), (FLAG_LAYERWISE, "tiny_layerwise")]
)
@pytest.mark.parametrize("seed", range(4))
def test_flag_families_equal_prompt_pair_tokenizer(family, model_fixture, seed, request):
    tok = TextTokenizer.load(request.getfixturevalue(model_fixture))
    rng = random.Random(seed)
    queries, passages = _pairs(seed, 60, 30, 80)
    for _ in range(6):
        max_length = rng.choice([8, 16, 24, 40, 64, 128, 512])
        query_max_length = rng.choice([1, 4, max_length * 3 // 4, max_length, 2 * max_length])
        prompt = rng.choice([None, "Is B relevant to A? Yes or No.", "", "日本語 {x}"])
        ours = TemplatePairTokenizer(
            family, tok, max_length, query_max_length, family.instruction(prompt)
        ).encode_pairs(queries, passages)
        theirs = PromptPairTokenizer(
            tok,
            max_length,
            query_max_length,
            prompt if prompt is not None else DEFAULT_PROMPT,
            always_bos=family.layout.bos == "always",
        ).encode(queries, passages)["input_ids"]
        assert ours == theirs.to_pylist(), (max_length, query_max_length, prompt)


def test_encode_is_encode_pairs_of_one(tiny_gemma):
    tok = TextTokenizer.load(tiny_gemma)
    template = TemplatePairTokenizer(FLAG_LLM, tok, 32, 24, DEFAULT_PROMPT)
    assert template.encode("q?", "p") == template.encode_pairs(["q?"], ["p"])[0]
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
        ids = TemplatePairTokenizer(QWEN3, qwen3_tok, max_length, None, instruction).encode(q, d)
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
    kept = qwen3_tok.backend.decode(template.encode(query, "The Eiffel tower."), skip_special_tokens=False)
    assert kept == (
        f"{CARD_PREFIX}<Instruct>: {CARD_INSTRUCTION}\n<Query>: what is built? what?\n"
        f"<Document>: The Eiffel tower.{CARD_SUFFIX}"
    )


def test_qwen3_raises_when_the_template_alone_overflows(qwen3_tok):
    template = TemplatePairTokenizer(QWEN3, qwen3_tok, 60, None, CARD_INSTRUCTION)
    with pytest.raises(ValueError, match="raise --max-length"):
        template.encode("q", "d")


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
        ids = TemplatePairTokenizer(MXBAI_V2, tok, max_length, max_length * 3 // 4, instruction).encode(q, d)
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
