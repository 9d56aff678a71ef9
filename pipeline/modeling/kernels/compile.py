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
from typing import Any

import torch
from torch import nn

from pipeline.config import Compile

log = logging.getLogger(__name__)

WIDTH_MULTIPLE = 8


def resolve_compile(setting: Compile, device: str) -> bool:
    """`auto` does not compile yet, on any device: on a CPU the compile time is not won back, and
    on CUDA it has not been measured to win (python -m bench.gpu); `on` compiles."""
    del device  # the measured devices where it wins go here
    return setting == "on"


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
