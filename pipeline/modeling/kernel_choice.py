"""What a scoring actor runs with, and why: precision, attention path, compile and token budget.
The `auto` ones are measured on the actor's own first call, then kept:

1. `max_batch_tokens: auto` times candidate budgets (budget_probe.py);
2. `--attention auto` times the padded and the unpadded path at that budget on the call's pairs,
   scoring each probe pair once (attention_probe.py); a family without a packed path (ModernBERT)
   runs padded without probing;
3. `--compile auto` compiles only where the time it saves on this actor's share of the run pays
   for the compile (kernels/compile.py, `compile_pays_back`); the second call after compiling
   (the first pays for the compile itself) is timed, and a compiled module slower than the eager
   rate measured before goes back to eager.

`info` is what the run's summary and report show for this actor (pipeline.rerank.report.kernels).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import Attention, Compile
from pipeline.modeling.attention_probe import probe_attention
from pipeline.modeling.budget_probe import probe_budget
from pipeline.modeling.kernels import cpu_attention
from pipeline.modeling.kernels.compile import compile_pays_back
from pipeline.modeling.reranker import Reranker, ScoredBatch

log = logging.getLogger(__name__)


class KernelChoices:
    """Scores calls with `reranker`, deciding the `auto` settings on the first (the module's
    docstring). `pairs_expected`: the pairs this actor is likely to score in the whole run (its
    share of the run's), which `--compile auto` weighs the compile against."""

    def __init__(
        self,
        reranker: Reranker,
        *,
        attention: Attention,
        compile_setting: Compile,
        budget: int,
        probe_budget: bool,
        pairs_expected: int,
        packs: bool = True,
    ) -> None:
        self.reranker = reranker
        self.budget = budget
        self._probe_budget = probe_budget
        self._probe_attention = attention == "auto" and packs
        self._compile_auto = compile_setting == "auto"
        self._pairs_left = pairs_expected
        self._eager_rate: float | None = None  # real tokens/s before compiling (auto's check)
        self._check_compiled = False
        self._compiled_calls = 0
        self.info: dict[str, Any] = {
            "attention": reranker.attention,
            # auto with a packed path: the probe's reason replaces it on the first call
            "attention_reason": "given (--attention)"
            if attention != "auto"
            else "auto: this family has no packed path",
            "compile": reranker.compiled,
            "compile_reason": "given (--compile)" if compile_setting != "auto" else "",
            "max_batch_tokens": budget,
        }
        if packs and reranker.device.type == "cpu" and attention != "padded":
            self.info["attention_kernel"] = cpu_attention.describe()  # what `unpadded` runs on CPU
        self._note_last_layer()

    def _note_last_layer(self) -> None:
        """Where the packed path runs a cross-encoder's last layer (the padded path: not said);
        set with the attention path, at load or by the probe."""
        self.info.pop("last_layer", None)
        if where := self.reranker.last_layer:
            self.info["last_layer"] = where

    def score(self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None) -> ScoredBatch:
        """Every row of one call scored; the first call also makes the choices."""
        started = time.perf_counter()
        if self._probe_budget:  # max_batch_tokens: auto, on this actor's first pairs
            self.budget = self.info["max_batch_tokens"] = probe_budget(
                self.reranker, input_ids, token_type_ids
            )
            self._probe_budget = False
        if self._probe_attention:
            result, choice = probe_attention(self.reranker, input_ids, token_type_ids, self.budget)
            self._probe_attention = False
            self.info |= {"attention": choice.chosen, "attention_reason": f"auto: {choice.reason}"}
            self.info["attention_probe"] = choice.to_dict()
            self._note_last_layer()
            self._eager_rate = choice.rates.get(choice.chosen)
        else:
            result = self.reranker.score(input_ids, token_type_ids, self.budget)
        seconds = time.perf_counter() - started
        tokens = int(np.diff(input_ids.offsets.to_numpy()).sum())
        self._pairs_left -= len(input_ids)
        if self._check_compiled:
            self._check_compiled_rate(tokens / seconds)
        elif self._compile_auto:
            self._compile_auto = False
            self._decide_compile(tokens, seconds, len(input_ids))
        return result

    def _decide_compile(self, tokens: int, seconds: float, pairs: int) -> None:
        """--compile auto after the first call: its eager rate (probe included) and this actor's
        tokens still to score decide."""
        self._eager_rate = self._eager_rate or tokens / seconds
        tokens_left = max(0, self._pairs_left) * tokens / max(pairs, 1)
        pays, reason = compile_pays_back(self.reranker.device.type, tokens_left, self._eager_rate)
        self.info |= {"compile": pays, "compile_reason": f"auto: {reason}"}
        log.info("compile auto: %s", reason)
        if pays:
            self.reranker.set_compiled(True)
            self._check_compiled = True

    def _check_compiled_rate(self, rate: float) -> None:
        """The first call after compiling (its compile time included) vs the eager rate: the
        second compiled call is timed instead when this one compiled; slower is undone."""
        self._compiled_calls += 1
        if self._compiled_calls < 2:  # the first compiled call pays the compile itself
            return
        self._check_compiled = False
        eager = self._eager_rate or 0.0
        self.info["compile_rates"] = {"eager": round(eager), "compiled": round(rate)}
        if rate < eager:
            self.reranker.set_compiled(False)
            slower = f"auto: compiled ran slower ({rate:,.0f} vs {eager:,.0f} tokens/s): eager again"
            self.info |= {"compile": False, "compile_reason": slower}
            log.info("compile auto: %s", self.info["compile_reason"])
