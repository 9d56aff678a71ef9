"""Builds the tiny reranker test assets committed under tests/assets/models/.

Random-weight, one-logit sequence classifiers with real tokenizers trained here on a fixed
synthetic corpus (no hub access needed):

- ``tiny-bert``: BERT + WordPiece tokenizer (``[CLS] q [SEP] p [SEP]``, token_type_ids).
- ``tiny-xlmr``: XLM-RoBERTa + Unigram (SentencePiece-style) tokenizer (``<s> q </s></s> p </s>``,
  position ids start at pad_id + 1).

Run with the side venv (transformers 4.57.6) so the files load under both transformers 4 (where
FlagEmbedding computes the goldens) and transformers 5 (where the job runs):

    .venv-flag/bin/python tests/assets/make_tiny_models.py

The output is deterministic for a given seed; the committed files are the source of truth.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizerFast,
)

ASSETS = Path(__file__).resolve().parent / "models"
SEED = 20261127


def synthetic_corpus(n_lines: int = 4000) -> list[str]:
    """Deterministic English-like text: syllable words, punctuation, digits, a little non-ASCII."""
    rng = random.Random(SEED)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ter",
        "sun",
        "ra",
        "vel",
        "on",
        "is",
        "qu",
        "ant",
        "zo",
        "pe",
        "dre",
        "ul",
        "ix",
        "bar",
        "nem",
        "to",
        "see",
        "wha",
        "gr",
        "ai",
        "ne",
    ]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    words += ["what", "is", "the", "how", "does", "a", "of", "and", "to", "in", "café", "naïve"]
    lines = []
    for _ in range(n_lines):
        n = rng.randint(3, 40)
        text = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            text += rng.choice([".", "?", "!", ","]) + " " + str(rng.randint(0, 9999))
        lines.append(text)
    return lines


def build_bert(out: Path, corpus: list[str]) -> None:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=1200, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.2,
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    fast.save_pretrained(out)


def build_xlmr(out: Path, corpus: list[str]) -> None:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(
        corpus, trainers.UnigramTrainer(vocab_size=1500, special_tokens=specials, unk_token="<unk>")
    )
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    config = XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514 + 8,
        type_vocab_size=1,
        num_labels=1,
        initializer_range=0.2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(SEED + 1)
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(out)
    fast.save_pretrained(out)


def main() -> int:
    corpus = synthetic_corpus()
    for name, builder in [("tiny-bert", build_bert), ("tiny-xlmr", build_xlmr)]:
        out = ASSETS / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        builder(out, corpus)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
