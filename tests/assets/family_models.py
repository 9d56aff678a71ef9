"""Builds the tiny Qwen-family rerankers as model directories, deterministically and with no hub
access: a Qwen3-Reranker-shaped `Qwen3ForCausalLM` and an mxbai-rerank-base-v2-shaped
`Qwen2ForCausalLM`, each with the real Qwen tokenizer (tests/assets/qwen_tokenizer.py).

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
version's file layout; QWEN3_RERANKER_DIGEST and MXBAI_V2_DIGEST are the expected values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from tests.assets.qwen_tokenizer import Specials, build_qwen_tokenizer

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
# weights_digest of each builder's output: a change means the goldens no longer describe the model.
QWEN3_RERANKER_DIGEST = "7948d44f41bff3c28d61540fd7f9ea19720e6681a43cbe52766c3afbd51316e6"
MXBAI_V2_DIGEST = "0f99ed31f1cc9611a47d0ead40be4efe96358d1132c9b224386c43dc2073f2a8"


def build_tiny_qwen3_reranker(out_dir: str | Path) -> Path:
    """A Qwen3-Reranker-shaped model directory (config, model.safetensors, Qwen3 tokenizer) in
    `out_dir` (created); returns it."""
    return _build(Path(out_dir), QWEN3_RERANKER_CONFIG, "qwen3")


def build_tiny_mxbai_v2(out_dir: str | Path) -> Path:
    """An mxbai-rerank-base-v2-shaped model directory (Qwen2, Qwen2.5 tokenizer) in `out_dir`
    (created); returns it."""
    return _build(Path(out_dir), MXBAI_V2_CONFIG, "qwen2")


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
    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, shape in sorted(_parameter_shapes(out)):
        if "norm" in name:
            tensors[name] = torch.ones(shape)
        else:
            tensors[name] = torch.randn(shape, generator=generator) * INIT_STD
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    build_qwen_tokenizer(out, specials)
    return out


def _parameter_shapes(model_dir: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter the architecture in `model_dir`/config.json declares, a
    tied one once (as save_pretrained writes them); the model is built on the meta device."""
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]
