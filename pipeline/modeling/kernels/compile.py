"""`--compile`: torch.compile of the scoring module, without a recompile per micro-batch.

Token-budget micro-batches come in many (rows, width) shapes. The module is compiled with dynamic
shapes (rows and width symbolic, so one graph serves them all), and padded batches are widened to
a multiple of `WIDTH_MULTIPLE` tokens (aligned for the tensor cores, at most 7 pad tokens per row).
torch specialises dims of size 1, so a one-row batch runs as two rows (pipeline.modeling.reranker);
a packed batch passes its attention a power-of-two bound on its longest pair, so the Python int
a graph specialises on takes a few values. tests/unit/test_compile.py counts the compilations
over a run of shapes.

If compiling fails (no C++ compiler or Triton, an unsupported op), the module runs eagerly from
then on, with a warning: the scores are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

WIDTH_MULTIPLE = 8


@dataclass(frozen=True)
class CompileCost:
    """What compiling the scoring module costs and gains on a device, as measured (bench/kernels.py,
    docs/performance.md): seconds until the compiled module has run its first shapes, and its
    speed over the eager module's."""

    seconds: float
    speedup: float


# Devices measured; a device not listed has no figures yet, and `auto` does not compile there.
# CPU: bench/kernels.py on the 2-core CPU, MiniLM-L6, 1,000 pairs: compiled 0.93-1.06x eager over
# fp32/bf16 and both paths (within the noise), 13-32 s to compile: no speed-up to pay anything back.
COMPILE_COST: dict[str, CompileCost] = {"cpu": CompileCost(seconds=30.0, speedup=1.0)}


def compile_pays_back(device: str, tokens_left: float, tokens_per_s: float) -> tuple[bool, str]:
    """`--compile auto`: whether compiling saves more time on the `tokens_left` this actor will
    still score (at the eager `tokens_per_s` it measured) than the compile costs, and why."""
    cost = COMPILE_COST.get(device)
    if cost is None:
        return False, f"no compiled figures for {device} yet (bench/gpu): eager"
    if cost.speedup <= 1.0:
        return (
            False,
            f"compiled measured no faster on {device} (x{cost.speedup:.2f}, bench/kernels.py): eager",
        )
    saved = tokens_left / max(tokens_per_s, 1e-9) * (1.0 - 1.0 / cost.speedup)
    verdict = "compiled" if saved > cost.seconds else "eager"
    return saved > cost.seconds, (
        f"~{saved:,.0f}s saved on ~{tokens_left:,.0f} tokens left at x{cost.speedup:.2f}, "
        f"for ~{cost.seconds:,.0f}s of compiling: {verdict}"
    )


def bucket_width(width: int, multiple: int = WIDTH_MULTIPLE) -> int:
    """The padded width a compiled module runs at: `width` rounded up to a multiple."""
    return max(multiple, -(-width // multiple) * multiple)


def bucket_length(length: int) -> int:
    """The longest-pair bound a compiled packed batch passes its attention: the next power of two
    (at least 16), so the Python int the graph specialises on takes a handful of values."""
    return max(16, 1 << (max(length, 1) - 1).bit_length())


class CompiledScorer(nn.Module):
    """A scoring module and its torch.compile'd form; calls go to the compiled one until it fails
    to compile, then to the eager one (out-of-memory errors pass through: the caller splits)."""

    def __init__(self, module: nn.Module, backend: str | Callable[..., Any] = "inductor") -> None:
        super().__init__()
        self.eager = module
        compiled = torch.compile(module, dynamic=True, backend=backend)
        # kept out of the module tree: the compiled wrapper shares the eager module's weights
        self.__dict__["_compiled"] = compiled

    _compiled: Callable[..., torch.Tensor] | None

    @property
    def is_compiled(self) -> bool:
        return self._compiled is not None

    def forward(self, **inputs: Any) -> torch.Tensor:
        if self._compiled is None:
            return self.eager(**inputs)
        try:
            return self._compiled(**inputs)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # a compiler failure: scores are the same eagerly
            first_line = str(e).splitlines()[0] if str(e) else ""
            log.warning(
                "torch.compile of the scoring module failed (%s: %s); running it eagerly",
                type(e).__name__,
                first_line,
            )
            self._compiled = None
            return self.eager(**inputs)
