"""The reranker families, as data: the entries and nothing else. Adding a family is one entry here
(its name also in `pipeline.config.FamilyName`) plus its parity test.

Each layout is copied verbatim from the family's own published code: FlagEmbedding 1.4.2's
rerankers, the Qwen3-Reranker model card, mixedbread's `mxbai_rerank/mxbai_rerank_v2.py` (0.1.6).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from pipeline.config import DEFAULT_PROMPT, ResolvedKind
from pipeline.errors import ModelLoadError
from pipeline.models.families.family import Family, JoinedLayout, Recognition, Score, SegmentLayout

CROSS_ENCODER: Final = Family(
    name="cross-encoder",
    kind="encoder",
    label="cross-encoder (BERT, XLM-R, ...: bge-reranker-v2-m3, ms-marco MiniLM)",
    recognition=Recognition(architectures=("*ForSequenceClassification",), is_fallback=True),
    layout=None,
    score=Score(kind="classification"),
    truncation="query-cap",
    legacy_fingerprint=True,
)

MODERNBERT: Final = Family(
    name="modernbert",
    kind="encoder",
    label="ModernBERT cross-encoder (gte-reranker-modernbert-base, the Ettin rerankers)",
    recognition=Recognition(architectures=("ModernBertForSequenceClassification",)),
    layout=None,
    score=Score(kind="classification"),
    truncation="longest-first",
    query_cap="given",
    max_positions=8192,
    position_limit_is_hard=True,
    packs=False,
)

# FlagEmbedding's decoder layout: [BOS] "A: "query \n "B: "passage \n prompt (each piece alone).
_FLAG_LAYOUT = SegmentLayout(
    prefix="",
    bos="if-distinct-from-pad",
    query="A: {query}",
    instruction_line="",
    document="B: {document}",
    separator="\n",
    tail="{instruction}",
    suffix="",
)

FLAG_LLM: Final = Family(
    name="flag-llm",
    kind="llm",
    label="FlagEmbedding LLM reranker (bge-reranker-v2-gemma)",
    recognition=Recognition(architectures=("*ForCausalLM",), is_fallback=True),
    layout=_FLAG_LAYOUT,
    score=Score(kind="token", tokens=("Yes",), token_rule="first-token"),
    truncation="flag-prompt",
    default_instruction=DEFAULT_PROMPT,
    takes_instruction=True,
    legacy_fingerprint=True,
)

FLAG_LAYERWISE: Final = Family(
    name="flag-layerwise",
    kind="layerwise",
    label="FlagEmbedding layerwise reranker (bge-reranker-v2-minicpm-layerwise)",
    # also a minicpm config with start_layer and head_type (detect.is_layerwise_config)
    recognition=Recognition(architectures=("LayerWiseMiniCPMForCausalLM",), is_fallback=True),
    layout=replace(_FLAG_LAYOUT, bos="always"),  # FlagEmbedding's layerwise reranker always adds BOS
    score=Score(kind="layer-heads"),
    truncation="flag-prompt",
    default_instruction=DEFAULT_PROMPT,
    takes_instruction=True,
    trainable=False,
    legacy_fingerprint=True,
)

QWEN3: Final = Family(
    name="qwen3",
    kind="llm",
    label="Qwen3-Reranker 0.6B/4B/8B",
    recognition=Recognition(
        architectures=("Qwen3ForCausalLM",),
        name_patterns=(r"qwen3[-_]reranker",),
        required_tokens=("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
    ),
    layout=JoinedLayout(
        prefix="<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n",
        body="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
        suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ),
    score=Score(
        kind="token-difference",
        tokens=("yes", "no"),
        token_rule="single-token",
        normalized="sigmoid(score) = P(yes), the model card's score",
    ),
    truncation="body-end",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    takes_instruction=True,
    query_cap="given",
)

MXBAI_V2: Final = Family(
    name="mxbai-v2",
    kind="llm",
    label="mxbai-rerank-base/large-v2",
    recognition=Recognition(
        architectures=("Qwen2ForCausalLM",),
        name_patterns=(r"mxbai-rerank-(xsmall|base|large)-v2",),
        required_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    layout=SegmentLayout(
        prefix="<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\n",
        bos="never",
        query="{instruction_line}query: {query}",
        instruction_line="instruction: {instruction}\n",
        document="document: {document}",
        separator="\n",
        tail="You are a search relevance expert who evaluates how well documents match search "
        "queries. For each query-document pair, carefully analyze the semantic relationship between "
        "them, then provide your binary relevance judgment (0 for not relevant, 1 for relevant)."
        "\nRelevance:",
        suffix="<|im_end|>\n<|im_start|>assistant\n",
    ),
    score=Score(
        kind="token-difference",
        tokens=("1", "0"),
        token_rule="first-token",
        normalized='sigmoid(score) = P("1"); mxbai\'s own normalize is sigmoid(score - estimated_max/2)',
    ),
    truncation="chat-second-only",
    default_instruction=None,
    takes_instruction=True,
)

FAMILIES: Final[dict[str, Family]] = {
    f.name: f for f in (CROSS_ENCODER, MODERNBERT, FLAG_LLM, FLAG_LAYERWISE, QWEN3, MXBAI_V2)
}


def family_named(name: str) -> Family:
    """The family called `name`; ModelLoadError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelLoadError(f"no reranker family {name!r}; the families are {', '.join(FAMILIES)}") from None


def fallback_family(kind: ResolvedKind) -> Family:
    """The family `--family auto` picks for a model of `kind` when nothing else matches."""
    return next(f for f in FAMILIES.values() if f.kind == kind and f.recognition.is_fallback)
