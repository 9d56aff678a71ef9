"""The GPU benchmark's models: each reranker kind at its published shape with random weights, saved as a
model directory the job loads like any other (fp16 safetensors + a tokenizer).

    m3         bge-reranker-v2-m3: XLM-R large (24 x 1024, 250k vocabulary), one-logit head
    llm        bge-reranker-v2-gemma: gemma-2b (18 x 2048, MQA, head_dim 256, 256k vocabulary);
               scored by the Yes row only (pipeline.modeling.llm_scorer)
    layerwise  bge-reranker-v2-minicpm-layerwise: MiniCPM-2B (40 x 2304) with cutoff_layers 28,
               so only 28 layers are built, saved and run
    qwen3      Qwen3-Reranker-0.6B: Qwen3ForCausalLM (28 x 1024, 16 query / 8 KV heads, head_dim
               128, 151,669 vocabulary, tied embeddings), family qwen3: its chat template, scored by
               the one folded row W[yes] - W[no]

No hub access on a GPU machine: the tokenizers are the test assets' (tests/assets/models), whose
ids fall inside every vocabulary here, and for qwen3 Qwen3's own BPE cut down to the benchmark's
text (bench/gpu/qwen3-tokenizer, built by bench/gpu/qwen3_tokenizer.py). Each shape names its
family, which the job is run with (`--family`). `--smoke` builds the same shapes shrunk
(`smoke_shape`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.config import ResolvedFamilyName, ResolvedKind

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets" / "models"
QWEN3_TOKENIZER = Path(__file__).resolve().parent / "qwen3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class Shape:
    name: str
    kind: ResolvedKind
    family: ResolvedFamilyName  # what the job is run with (--family)
    label: str
    tokenizer: Path  # the directory whose tokenizer files (layerwise: and config.json) the model takes
    config: dict[str, Any] = field(default_factory=dict)
    cutoff_layers: list[int] | None = None

    @property
    def layers_run(self) -> int:
        if self.cutoff_layers:
            return max(self.cutoff_layers)
        return int(self.config["num_hidden_layers"])

    @property
    def attention_width(self) -> int:
        """heads x head_dim: the width of QK^T and AV."""
        heads = int(self.config["num_attention_heads"])
        return heads * int(self.config.get("head_dim") or self.config["hidden_size"] // heads)


SHAPES = {
    "m3": Shape(
        "m3",
        "encoder",
        "cross-encoder",
        "bge-reranker-v2-m3 shape (XLM-R large)",
        ASSETS / "tiny-xlmr",
        {
            "vocab_size": 250002,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 8194,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    ),
    "llm": Shape(
        "llm",
        "llm",
        "flag-llm",
        "bge-reranker-v2-gemma shape (gemma-2b), Yes-row head",
        ASSETS / "tiny-gemma",
        {
            "vocab_size": 256000,
            "hidden_size": 2048,
            "intermediate_size": 16384,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "max_position_embeddings": 8192,
            "hidden_act": "gelu_pytorch_tanh",
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 1,
        },
    ),
    "layerwise": Shape(
        "layerwise",
        "layerwise",
        "flag-layerwise",
        "bge-reranker-v2-minicpm-layerwise shape (MiniCPM-2B), cutoff_layers 28",
        ASSETS / "tiny-minicpm-layerwise",
        {
            "vocab_size": 122753,
            "hidden_size": 2304,
            "intermediate_size": 5760,
            "num_hidden_layers": 40,
            "num_attention_heads": 36,
            "num_key_value_heads": 36,
            "max_position_embeddings": 4096,
            "dim_model_base": 256,
            "scale_emb": 12,
            "scale_depth": 1.4,
            "start_layer": 8,
        },
        cutoff_layers=[28],
    ),
    "qwen3": Shape(
        "qwen3",
        "llm",
        "qwen3",
        "Qwen3-Reranker-0.6B shape (Qwen3ForCausalLM), yes-no row head",
        QWEN3_TOKENIZER,
        {
            "vocab_size": 151669,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-06,
            "hidden_act": "silu",
            "attention_bias": False,
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
    ),
}


# --smoke: the same shapes shrunk (vocabularies kept), built, saved and loaded the same way
SMOKE_DIMS: dict[str, dict[str, Any]] = {
    "m3": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "llm": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
    },
    "layerwise": {
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "start_layer": 2,
    },
    "qwen3": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
}


def smoke_shape(shape: Shape) -> Shape:
    """`shape` shrunk to a few layers of width 64 (the layerwise one cut at layer 4 of 6, so only
    the layers up to the cutoff are built and saved, as at full size)."""
    return replace(
        shape,
        label=f"{shape.label}, shrunk for --smoke",
        config=shape.config | SMOKE_DIMS[shape.name],
        cutoff_layers=[4] if shape.cutoff_layers else None,
    )


def _save_transformers(shape: Shape, directory: Path, device: str) -> None:
    from transformers import (
        GemmaConfig,
        GemmaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    config: Any
    if shape.kind == "encoder":
        config = XLMRobertaConfig(**shape.config)
        config.num_labels = 1
        config.architectures = ["XLMRobertaForSequenceClassification"]
        cls: Any = XLMRobertaForSequenceClassification
    elif shape.family == "qwen3":
        config = Qwen3Config(**shape.config)
        config.architectures = ["Qwen3ForCausalLM"]
        cls = Qwen3ForCausalLM
    else:
        config = GemmaConfig(**shape.config, tie_word_embeddings=True)
        config.architectures = ["GemmaForCausalLM"]
        cls = GemmaForCausalLM
    with torch.device(device):
        model = cls(config).half().eval()
    model.save_pretrained(directory)
    del model


def _save_layerwise(shape: Shape, directory: Path, device: str) -> None:
    from safetensors.torch import save_file

    from pipeline.modeling.minicpm_layerwise import LayerwiseReranker
    from pipeline.models.layerwise_config import LayerwiseConfig

    config = json.loads((shape.tokenizer / "config.json").read_text()) | shape.config
    cfg = LayerwiseConfig.from_dict(config)
    with torch.device(device):
        model = LayerwiseReranker(cfg, cfg.resolve_cutoffs(shape.cutoff_layers)).half()
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config | {"dtype": "float16"}, indent=2))
    del model


def build_model(shape: Shape, directory: Path, device: str) -> tuple[Path, float]:
    """The model directory for `shape` (built once, random weights seeded) and the seconds it took."""
    start = time.perf_counter()
    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        if shape.kind == "layerwise":
            _save_layerwise(shape, directory, device)
        else:
            _save_transformers(shape, directory, device)
        for name in TOKENIZER_FILES:
            if (shape.tokenizer / name).exists():
                shutil.copy(shape.tokenizer / name, directory / name)
        if device == "cuda":
            torch.cuda.empty_cache()
    return directory, time.perf_counter() - start
