"""CPU linear layers on weights prepacked once for oneDNN (what vLLM's CPU build and inductor's
freezing do), with the GELU that follows a BERT-style intermediate layer fused into its product.

`F.linear` on CPU hands oneDNN (or MKL) the weight in its plain layout at every call; oneDNN then
re-lays it out in the blocked layout its kernels read. Prepacked once (`mkldnn._reorder_linear_weight`)
the product skips that work: bench/kernels.py measured the MiniLM shape's products 8-25% faster on
the 2-core CPU, in fp32 and bf16. Scores are the same up to the products' summation order
(tests/unit/test_kernel_parity.py holds the scoring module to 1e-5 in fp32).

`prepack_linears(module)` swaps every `nn.Linear` of a scoring module, on CPU, for a `PackedLinear`
holding the prepacked weight (the plain one is dropped: no second copy), and every
`BertIntermediate`-style block (`dense` then `intermediate_act_fn` GELU) for one fused call. It is
for inference only (the packed weight has no gradient) and is not used under torch.compile, whose
inductor packs weights its own way. Where torch has no oneDNN build, nothing is swapped.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(nn.Module):
    """`nn.Linear` (+ an optional fused GELU) on a oneDNN-prepacked weight."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.weight_packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(
            x, self.weight_packed, self.bias, self.activation, [], algorithm
        )


class FusedIntermediate(nn.Module):
    """A BERT-style intermediate block (dense, then exact GELU) as one product with a fused GELU."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.dense = PackedLinear(block.dense, "gelu")  # type: ignore[arg-type]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden_states)


def _is_exact_gelu(fn: Any) -> bool:
    """F.gelu, nn.GELU() or transformers' GELUActivation ("gelu", erf-based): what oneDNN's fused
    "gelu" with algorithm "none" computes. The tanh approximations are left unfused."""
    if isinstance(fn, nn.GELU):
        return fn.approximate == "none"
    if type(fn).__name__ == "GELUActivation":
        return getattr(fn, "act", None) is F.gelu
    return fn is F.gelu


def _fusable(block: nn.Module) -> bool:
    return (
        type(block).__name__.endswith("Intermediate")
        and isinstance(getattr(block, "dense", None), nn.Linear)
        and _is_exact_gelu(getattr(block, "intermediate_act_fn", None))
    )


def can_prepack(module: nn.Module) -> bool:
    """True if this build of torch packs weights for oneDNN and the module's weights are a CPU
    dtype it packs (fp32, bf16)."""
    weight = next((p for p in module.parameters()), None)
    return (
        torch.backends.mkldnn.is_available()
        and weight is not None
        and weight.device.type == "cpu"
        and weight.dtype in DTYPES
    )


def prepack_linears(module: nn.Module) -> int:
    """Swaps the module's linear layers for prepacked ones (module docstring); returns how many."""
    if not can_prepack(module):
        return 0
    swapped = _swap(module)
    log.debug("prepacked %d linear layers for oneDNN", swapped)
    return swapped


def _swap(parent: nn.Module) -> int:
    swapped = 0
    for name, child in list(parent.named_children()):
        if _fusable(child):
            setattr(parent, name, FusedIntermediate(child))
            swapped += 1
        elif isinstance(child, nn.Linear):
            setattr(parent, name, PackedLinear(child))
            swapped += 1
        else:
            swapped += _swap(child)
    return swapped
