"""Builds the tiny reranker test assets committed under tests/assets/models/.

Random-weight, one-logit sequence classifiers with real tokenizers trained here on a fixed
synthetic corpus (no hub access needed):

- ``tiny-bert``: BERT + WordPiece tokenizer (``[CLS] q [SEP] p [SEP]``, token_type_ids).
- ``tiny-xlmr``: XLM-RoBERTa + Unigram (SentencePiece-style) tokenizer (``<s> q </s></s> p </s>``,
  position ids start at pad_id + 1).
- ``tiny-gemma``: a bge-reranker-v2-gemma-shaped causal LM (Gemma, multi-query attention, tied
  embeddings) with a byte-level BPE tokenizer that has ``<bos>`` (distinct from ``<pad>``), a "Yes"
  token, and left padding (FlagEmbedding then pads on the left; the job pads on the right).
- ``tiny-minicpm-layerwise``: a bge-reranker-v2-minicpm-layerwise-shaped checkpoint saved by
  FlagEmbedding's own ``LayerWiseMiniCPMForCausalLM`` (so the tensor names and config keys are the
  published layout): MiniCPM decoder (scale_emb, scale_depth, grouped-query attention) with one
  hidden -> 1 head per layer from ``start_layer`` to ``num_hidden_layers``.

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
    GemmaConfig,
    GemmaForCausalLM,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizerFast,
)

# run as a script in the side venv, where the package is not installed: the repository's root
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.demo.words import syllable_word  # noqa: E402  (standard library only)

ASSETS = Path(__file__).resolve().parent / "models"
SEED = 20261127


def synthetic_corpus(n_lines: int = 4000) -> list[str]:
    """Deterministic English-like text: syllable words, punctuation, digits, a little non-ASCII."""
    rng = random.Random(SEED)
    words = [syllable_word(rng) for _ in range(3000)]  # the syllables the GPU benchmark also uses
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


FLAG_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)


def byte_bpe(corpus: list[str], specials: list[str], bos: str) -> Tokenizer:
    """A GPT-2-style byte-level BPE (every byte representable, so "\\n" is a token)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    extra = [FLAG_PROMPT, "Yes", "No", "A: what is it", "B: it is"] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=900, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus + extra, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return tok


def build_gemma(out: Path, corpus: list[str]) -> None:
    tok = byte_bpe(corpus, ["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=8192,
    )
    config = GemmaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        initializer_range=0.4,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED + 2)
    model = GemmaForCausalLM(config).eval()
    model.save_pretrained(out)
    fast.save_pretrained(out)


def build_minicpm_layerwise(out: Path, corpus: list[str]) -> None:
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    tok = byte_bpe(corpus, ["<unk>", "<s>", "</s>"], "<s>")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="right",
        model_max_length=8192,
    )
    config = LayerWiseMiniCPMConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.4,
        rms_norm_eps=1e-5,
        scale_emb=12,
        dim_model_base=16,
        scale_depth=1.4,
        start_layer=2,
        head_multi=True,
        head_type="simple",
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
    )
    config.auto_map = {  # as published: the hub's remote code, which the job never runs
        "AutoConfig": "configuration_minicpm_reranker.LayerWiseMiniCPMConfig",
        "AutoModel": "modeling_minicpm_reranker.LayerWiseMiniCPMModel",
        "AutoModelForCausalLM": "modeling_minicpm_reranker.LayerWiseMiniCPMForCausalLM",
    }
    torch.manual_seed(SEED + 3)
    model = LayerWiseMiniCPMForCausalLM(config).eval()
    model.save_pretrained(out)
    fast.save_pretrained(out)


BUILDERS = {
    "tiny-bert": build_bert,
    "tiny-xlmr": build_xlmr,
    "tiny-gemma": build_gemma,
    "tiny-minicpm-layerwise": build_minicpm_layerwise,
}


def main() -> int:
    corpus = synthetic_corpus()
    names = sys.argv[1:] or list(BUILDERS)
    for name in names:
        builder = BUILDERS[name]
        out = ASSETS / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        builder(out, corpus)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
