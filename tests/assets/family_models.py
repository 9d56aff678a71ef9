"""Builds the tiny rerankers of the newer families as model directories, deterministically and with
no hub access: a Qwen3-Reranker-shaped `Qwen3ForCausalLM` and an mxbai-rerank-base-v2-shaped
`Qwen2ForCausalLM`, each with the real Qwen tokenizer (tests/assets/qwen_tokenizer.py), and a
gte-reranker-modernbert-base-shaped `ModernBertForSequenceClassification` (one label, mean pooling,
global and sliding-window layers) with a ModernBERT-style tokenizer (`build_modernbert_tokenizer`).

With Qwen's vocabulary the tied embedding alone is ~10 MB, so these are built into a temporary
directory by session fixtures (tests/family_fixtures.py), never committed. The same builders run
under transformers 4.57 (the side venv that writes goldens) and 5 (the job), and give the same
files under both:

- config.json is written as JSON here (legacy `rope_theta`, which transformers 5 reads too);
- the weights do not come from transformers' init: every tensor of the fixed (name, shape) list is
  drawn from one seeded `torch.Generator`, in name order (norm weights are ones), and saved with
  safetensors. The (name, shape) list is the one the architecture declares: the model is
  instantiated once on the meta device to read it;
- embeddings and projections are N(0, 0.5²) (`initializer_range` 0.5): with transformers' 0.02
  every Qwen3 score is ≈ 0.495, too flat for parity tests to mean anything.

`weights_digest(dir)` hashes the tensors (names, dtypes, shapes, bytes), whatever the safetensors
version's file layout; QWEN3_RERANKER_DIGEST, MXBAI_V2_DIGEST and MODERNBERT_DIGEST are the
expected values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.assets.qwen_tokenizer import FIRST_ADDED_ID, Specials, _bpe_tokenizer, build_qwen_tokenizer

SEED = 20260325
INIT_STD = 0.5
# config.json's "transformers_version", an old one as in published checkpoints: without it,
# transformers 4.57.6 warns that the tokenizer has Mistral's broken regex.
PUBLISHED_WITH = "4.51.0"

# Qwen3-Reranker-0.6B's architecture, shrunk (the published one: 28 layers, hidden 1024, 16/8
# heads, head_dim 128); the vocabulary is the real one: 151,643 ranks + 26 added tokens.
QWEN3_RERANKER_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151669,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-06,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 2,
    "tie_word_embeddings": True,
    "initializer_range": INIT_STD,
    "use_cache": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "dtype": "float32",
    "transformers_version": PUBLISHED_WITH,
}
# mxbai-rerank-base-v2 is a Qwen2.5-0.5B (vocab_size 151,936: the embedding is padded past the
# 151,665 tokens of its Qwen2.5 tokenizer); q/k/v have biases. Transformers' Qwen2 has no head_dim
# key: hidden 16 / 2 heads gives 8, as the Qwen3 one.
MXBAI_V2_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-06,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 2,
    "tie_word_embeddings": True,
    "initializer_range": INIT_STD,
    "use_cache": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "dtype": "float32",
    "transformers_version": PUBLISHED_WITH,
}
# ModernBERT's special tokens, in ModernBERT's order, as added tokens after Qwen's 151,643 ranks;
# [MASK] strips the space before it, as in ModernBERT's tokenizer.json.
MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
MODERNBERT_IDS = {token: FIRST_ADDED_ID + i for i, token in enumerate(MODERNBERT_SPECIALS)}
# gte-reranker-modernbert-base's config (legacy keys, as published: transformers 4.57 and 5 read
# them), shrunk: 3 layers make one global and two sliding-window (128-token window) layers; mean
# pooling; the vocabulary (151,643 + 5) padded to a multiple of 64 as ModernBERT's 50,368 is.
MODERNBERT_CONFIG: dict[str, Any] = {
    "architectures": ["ModernBertForSequenceClassification"],
    "model_type": "modernbert",
    "vocab_size": 151680,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "hidden_activation": "gelu",
    "max_position_embeddings": 8192,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "local_attention": 128,
    "local_rope_theta": 10000.0,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
    "mlp_bias": False,
    "mlp_dropout": 0.0,
    "norm_bias": False,
    "norm_eps": 1e-05,
    "layer_norm_eps": 1e-05,
    "classifier_activation": "gelu",
    "classifier_bias": False,
    "classifier_dropout": 0.0,
    "classifier_pooling": "mean",
    "decoder_bias": True,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "initializer_range": INIT_STD,
    "initializer_cutoff_factor": 2.0,
    "pad_token_id": MODERNBERT_IDS["[PAD]"],
    "bos_token_id": MODERNBERT_IDS["[CLS]"],
    "cls_token_id": MODERNBERT_IDS["[CLS]"],
    "eos_token_id": MODERNBERT_IDS["[SEP]"],
    "sep_token_id": MODERNBERT_IDS["[SEP]"],
    "position_embedding_type": "absolute",
    "sparse_prediction": False,
    "sparse_pred_ignore_index": -100,
    "deterministic_flash_attn": False,
    "reference_compile": False,
    "torch_dtype": "float32",
    "transformers_version": "4.48.0",
}
# weights_digest of each builder's output: a change means the goldens no longer describe the model.
QWEN3_RERANKER_DIGEST = "7948d44f41bff3c28d61540fd7f9ea19720e6681a43cbe52766c3afbd51316e6"
MXBAI_V2_DIGEST = "0f99ed31f1cc9611a47d0ead40be4efe96358d1132c9b224386c43dc2073f2a8"
MODERNBERT_DIGEST = "e985082ae88737a6021af8d4a5451bc3d21e278e97b381b86ba6f0e5da5328aa"


def build_tiny_qwen3_reranker(out_dir: str | Path) -> Path:
    """A Qwen3-Reranker-shaped model directory (config, model.safetensors, Qwen3 tokenizer) in
    `out_dir` (created); returns it."""
    return _build(Path(out_dir), QWEN3_RERANKER_CONFIG, "qwen3")


def build_tiny_mxbai_v2(out_dir: str | Path) -> Path:
    """An mxbai-rerank-base-v2-shaped model directory (Qwen2, Qwen2.5 tokenizer) in `out_dir`
    (created); returns it."""
    return _build(Path(out_dir), MXBAI_V2_CONFIG, "qwen2")


def build_tiny_modernbert(out_dir: str | Path) -> Path:
    """A gte-reranker-modernbert-base-shaped cross-encoder directory (ModernBertForSequenceClassification,
    one label; config, model.safetensors, ModernBERT-style tokenizer) in `out_dir` (created); returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(MODERNBERT_CONFIG, indent=2) + "\n")
    _write_weights(out, AutoModelForSequenceClassification)
    build_modernbert_tokenizer(out)
    return out


def build_modernbert_tokenizer(out_dir: str | Path) -> Path:
    """Writes a ModernBERT-style `tokenizer.json` + `tokenizer_config.json` into `out_dir`: ModernBERT's
    pipeline (NFC, byte-level BPE with GPT-2's regex, `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`
    post-processor, the five specials, no token type ids as model input, model_max_length 8192) over
    Qwen's BPE ranks (tests/assets/qwen_tokenizer.py) instead of ModernBERT's own 50,280."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _bpe_tokenizer()
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=True, use_regex=True
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, normalized=False, special=True, lstrip=t == "[MASK]") for t in MODERNBERT_SPECIALS]
    )
    cls, sep = ("[CLS]", MODERNBERT_IDS["[CLS]"]), ("[SEP]", MODERNBERT_IDS["[SEP]"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "added_tokens_decoder": {
            str(MODERNBERT_IDS[t]): {
                "content": t,
                "lstrip": t == "[MASK]",
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in MODERNBERT_SPECIALS
        },
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def weights_digest(model_dir: str | Path) -> str:
    """sha256 of model.safetensors' tensors: each name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="pt") as f:
        for name in sorted(f.keys()):
            tensor = f.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _build(out: Path, config: dict[str, Any], specials: Specials) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_weights(out, AutoModelForCausalLM)
    build_qwen_tokenizer(out, specials)
    return out


def _write_weights(out: Path, auto_class: Any) -> None:
    """model.safetensors: every parameter of the architecture in `out`/config.json drawn from one
    seeded generator, in name order (norm weights are ones)."""
    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, shape in sorted(_parameter_shapes(out, auto_class)):
        if "norm" in name:
            tensors[name] = torch.ones(shape)
        else:
            tensors[name] = torch.randn(shape, generator=generator) * INIT_STD
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _parameter_shapes(model_dir: Path, auto_class: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter the architecture in `model_dir`/config.json declares, a
    tied one once (as save_pretrained writes them); the model is built on the meta device."""
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = auto_class.from_config(config)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]
