"""The GPU benchmark's models: each reranker kind at its published shape with random weights, saved as a
model directory the job loads like any other (fp16 safetensors + a tokenizer).

    m3         bge-reranker-v2-m3: XLM-R large (24 x 1024, 250k vocabulary), one-logit head
    llm        bge-reranker-v2-gemma: gemma-2b (18 x 2048, MQA, head_dim 256, 256k vocabulary);
               scored by the Yes row only (pipeline.modeling.llm_scorer)
    layerwise  bge-reranker-v2-minicpm-layerwise: MiniCPM-2B (40 x 2304) with cutoff_layers 28,
               so only 28 layers are built, saved and run

No hub access on a GPU machine: the tokenizers are the test assets' (tests/assets/models), whose
ids fall inside every vocabulary here. `--smoke` builds the same shapes shrunk (`smoke_shape`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.config import ResolvedKind

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets" / "models"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class Shape:
    name: str
    kind: ResolvedKind
    label: str
    tiny: str  # the test asset whose tokenizer (and, in --smoke, weights) is used
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
        "bge-reranker-v2-m3 shape (XLM-R large)",
        "tiny-xlmr",
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
        "bge-reranker-v2-gemma shape (gemma-2b), Yes-row head",
        "tiny-gemma",
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
        "bge-reranker-v2-minicpm-layerwise shape (MiniCPM-2B), cutoff_layers 28",
        "tiny-minicpm-layerwise",
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
}


def smoke_shape(shape: Shape) -> Shape:
    """`shape` shrunk to a few layers of width 64 (the layerwise one cut at layer 4 of 6, so only
    the layers up to the cutoff are built and saved, as at full size)."""
    cutoff = [4] if shape.cutoff_layers else None
    config = shape.config | SMOKE_DIMS[shape.name]
    return Shape(shape.name, shape.kind, f"{shape.label}, shrunk for --smoke", shape.tiny, config, cutoff)


def _save_transformers(shape: Shape, directory: Path, device: str) -> None:
    from transformers import (
        GemmaConfig,
        GemmaForCausalLM,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    if shape.kind == "encoder":
        config = XLMRobertaConfig(**shape.config)
        config.num_labels = 1
        config.architectures = ["XLMRobertaForSequenceClassification"]
        cls: Any = XLMRobertaForSequenceClassification
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

    config = json.loads((ASSETS / shape.tiny / "config.json").read_text()) | shape.config
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
            if (ASSETS / shape.tiny / name).exists():
                shutil.copy(ASSETS / shape.tiny / name, directory / name)
        if device == "cuda":
            torch.cuda.empty_cache()
    return directory, time.perf_counter() - start
