"""What a reranker family is: how it is recognised, its prompt layout, how its score is read and
how a pair is cut to fit. Plain frozen data (the entries are in `registry.py`); no tokenizer, no
torch.

`--kind` stays the coarse switch that picks the model class (encoder / llm / layerwise); a family
is finer: two llm families (FlagEmbedding's "A:/B:" layout and Qwen3-Reranker's chat template)
load the same class but build different ids and read different logits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from pipeline.config import ResolvedFamilyName, ResolvedKind

# How a pair is cut to fit --max-length (the rules are pure functions in `truncation.py`):
# query-cap: FlagReranker's (query cut to --query-max-length, then the passage only);
# longest-first: the Rust tokenizers' rule that `truncation=True` means (ModernBERT cards);
# flag-prompt: FlagEmbedding's decoder rule (only the "\n B: passage" part is cut, budget
#   max_length + the separator + the prompt);
# chat-second-only: mxbai-rerank-v2's (the same only-second rule, budget max_length);
# body-end: the Qwen3-Reranker card's (the document's end first, prefix and suffix kept).
Truncation = Literal["query-cap", "longest-first", "flag-prompt", "chat-second-only", "body-end"]
# classification: the classifier's one logit; token: one token's logit at the last position;
# token-difference: logit(tokens[0]) - logit(tokens[1]) there; layer-heads: minicpm-layerwise's.
ScoreKind = Literal["classification", "token", "token-difference", "layer-heads"]
BosRule = Literal["never", "if-distinct-from-pad", "always"]


@dataclass(frozen=True)
class Recognition:
    """How `--family auto` finds the family from the model."""

    # config.json architectures it runs; "*ForCausalLM" matches any name with that suffix
    architectures: tuple[str, ...]
    # case-insensitive regexes over --model, its last path part and config.json's _name_or_path
    name_patterns: tuple[str, ...] = ()
    # tokens the tokenizer must hold as added tokens (chat markers); checked even when forced
    required_tokens: tuple[str, ...] = ()
    # the family auto picks for its kind when nothing else matches
    is_fallback: bool = False

    def matches_architecture(self, architectures: list[str]) -> bool:
        """True if one of config.json's architectures is one this family runs."""
        return any(_matches(pattern, arch) for pattern in self.architectures for arch in architectures)

    def owns_architecture(self, architectures: list[str]) -> bool:
        """True if one of config.json's architectures is named exactly (not by a wildcard)."""
        return any(arch in self.architectures for arch in architectures)


def _matches(pattern: str, architecture: str) -> bool:
    if pattern.startswith("*"):
        return architecture.endswith(pattern[1:])
    return architecture == pattern


@dataclass(frozen=True)
class SegmentLayout:
    """FlagEmbedding's and mxbai-rerank-v2's layout: each segment tokenized alone, then joined as
    `[BOS] prefix query separator document separator tail suffix`."""

    mode: ClassVar[str] = "segments"
    prefix: str  # tokenized alone ("" for FlagEmbedding; mxbai's system turn)
    bos: BosRule
    query: str  # "A: {query}" | "{instruction_line}query: {query}"
    instruction_line: str  # mxbai: "instruction: {instruction}\n", only when one is given; else ""
    document: str  # "B: {document}" | "document: {document}"; the lead is the text before {document}
    separator: str
    tail: str  # FlagEmbedding: "{instruction}"; mxbai: its fixed task prompt
    suffix: str


@dataclass(frozen=True)
class JoinedLayout:
    """The Qwen3-Reranker card's layout: `prefix body suffix`, the body formatted as one text and
    cut in ids."""

    mode: ClassVar[str] = "joined"
    prefix: str
    body: str
    suffix: str


@dataclass(frozen=True)
class Score:
    """How the score is read from the model's output."""

    kind: ScoreKind
    tokens: tuple[str, ...] = ()  # ("Yes",) | ("yes", "no") | ("1", "0")
    # first-token: the first id the text tokenizes to (FlagEmbedding, mxbai);
    # single-token: the text must be exactly one token (convert_tokens_to_ids, the Qwen3 card)
    token_rule: Literal["first-token", "single-token"] = "single-token"
    normalized: str = "sigmoid(score)"  # what --normalize gives, in the docs' words


@dataclass(frozen=True)
class Family:
    """One reranker family. Adding a family is one entry in `registry.py` plus its parity test."""

    name: ResolvedFamilyName  # the --family value
    kind: ResolvedKind
    label: str  # for docs and logs: "Qwen3-Reranker 0.6B/4B/8B"
    recognition: Recognition
    layout: SegmentLayout | JoinedLayout | None  # None: the tokenizer's own pair template (encoders)
    score: Score
    truncation: Truncation
    default_instruction: str | None = None
    takes_instruction: bool = False
    # "given": --query-max-length applies only when set (cards without a query cap)
    query_cap: Literal["default", "given"] = "default"
    max_positions: int | None = None  # None: config.json's
    position_limit_is_hard: bool = False
    packs: bool = True  # --attention unpadded supported
    trainable: bool = True
    # cross-encoder, flag-llm, flag-layerwise: the run fingerprint stays as it always was
    legacy_fingerprint: bool = False

    def template_digest(self) -> str:
        """sha256 (16 hex) of what builds the ids and reads the score: a changed template changes
        the digest, so it is a deliberate, fingerprint-changing edit (the digests are pinned in
        tests/unit/test_families.py)."""
        described: dict[str, Any] = {
            "layout": None if self.layout is None else {"mode": self.layout.mode, **asdict(self.layout)},
            "score": {k: v for k, v in asdict(self.score).items() if k != "normalized"},  # not the words
            "truncation": self.truncation,
            "query_cap": self.query_cap,
            "default_instruction": self.default_instruction,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def hard_position_limit(self) -> int | None:
        """The most tokens a pair may have whatever config.json says (ModernBERT: 8,192)."""
        return self.max_positions if self.position_limit_is_hard else None

    def identity(self, given_instruction: str | None) -> dict[str, str | None]:
        """What of the family a score depends on, for the run fingerprint and the reuse identity
        of the families that are not `legacy_fingerprint`: its name, template digest and the
        instruction the pairs are built with."""
        return {
            "name": self.name,
            "template": self.template_digest(),
            "instruction": self.instruction(given_instruction),
        }

    def instruction(self, given: str | None) -> str | None:
        """The instruction a pair is built with: `given` (--instruction) or the family's default;
        None for a family without one (cross-encoders)."""
        if not self.takes_instruction:
            return None
        return given if given is not None else self.default_instruction
