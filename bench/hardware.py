"""What the benchmarks share about the hardware: card peaks and the one MFU definition.

MFU = useful FLOPs / s / the card's dense fp16 peak. Useful FLOPs count real (unpadded) tokens
only: 2 x non-embedding parameters per token, plus attention (QK^T and AV: 4 x layers x hidden x
length^2 per pair). Padding is not useful work, so it lowers MFU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# dense fp16/bf16 tensor-core peaks, SXM parts, TFLOP/s (datasheet figures without sparsity)
PEAK_FP16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_flops(device_name: str | None = None) -> float | None:
    """The datasheet peak (FLOP/s) of this CUDA card, or None for a card not in the table."""
    name = device_name or torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FP16_TFLOPS.items() if k in name), None)
    return peak * 1e12 if peak else None


def non_embedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def useful_flops(model_dir: str | Path, model: torch.nn.Module, lengths: np.ndarray) -> float:
    """Useful FLOPs of one forward over pairs of these real lengths (see the module docstring)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths.astype(np.float64) ** 2).sum())
    return 2.0 * non_embedding_params(model) * float(lengths.sum()) + attention


def linear_params(model: torch.nn.Module) -> int:
    """Weights of the model's linear layers: the matrix products each token runs through (no
    embedding tables; heads that run once per pair are counted too, a fraction of a percent)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def useful_flops_of_shape(params: int, layers: int, attention_width: int, lengths: np.ndarray) -> float:
    """The module docstring's useful FLOPs from the shape: 2 x params x real tokens, plus QK^T and
    AV (4 x layers x heads*head_dim x length^2 per pair); for any kind, no config.json needed."""
    attention = 4 * layers * attention_width * float((lengths.astype(np.float64) ** 2).sum())
    return 2.0 * params * float(lengths.sum()) + attention
