"""`--attention auto`: a scoring actor times the padded and the unpadded path on its own first
pairs and keeps the faster one, as `max_batch_tokens: auto` times budgets (budget_probe.py).

Which path wins depends on the device, the dtype, the model and the pairs' lengths: on CPU the
packed path saves the padding and the mask but pays for its per-pair scatter, on CUDA it runs the
variable-length flash kernel. So the actor measures, once, on the pairs of its first call:

- The call's rows (longest first) are dealt to the two paths in turn, so both get the same mix of
  lengths, up to `PROBE_BATCHES` + 1 micro-batches each at the run's budget (fewer, smaller ones
  when the call is short). Each path plans its own micro-batches over its rows, as it would score
  them.
- The two paths' batches run interleaved (padded, unpadded, padded, ...), so whatever else runs on
  the machine slows both alike. Each path's first batch warms it up (allocations, kernel choice)
  and is not timed; its rate is real tokens per second over the rest.
- Every probe pair is scored once, by the path it was dealt to, and kept: the two paths' scores
  agree within the kernel-parity tolerance (tests/unit/test_kernel_parity.py), which is why the
  path is not part of the run's fingerprint. The rest of the call, and every later call, runs on
  the faster path: unpadded where it measured at least 5% faster than padded, else padded (a
  closer race is within the noise of a few batches on a busy CPU).

The probe costs its slower path's extra time on a few batches: on the 2-core CPU about 0.03 s of a
3,000-pair run's ~30 s of scoring (docs/performance.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from pipeline.config import ResolvedAttention
from pipeline.errors import ModelLoadError
from pipeline.modeling.reranker import Reranker, ScoredBatch
from pipeline.models.batching import longest_first

log = logging.getLogger(__name__)

PATHS: tuple[ResolvedAttention, ...] = ("padded", "unpadded")
PROBE_BATCHES = 4  # timed micro-batches per path, after one warm-up batch
SWITCH_GAIN = 1.05  # unpadded is kept only when at least this much faster than padded


@dataclass
class AttentionChoice:
    """What the probe measured (real tokens/s per path) and kept; `reason` when it did not measure."""

    chosen: ResolvedAttention
    rates: dict[str, float] = field(default_factory=dict)
    probe_pairs: int = 0
    probe_s: float = 0.0
    reason: str = "measured"

    def to_dict(self) -> dict[str, object]:
        return {
            "attention": self.chosen,
            "rates": {k: round(v) for k, v in self.rates.items()},
            "probe_pairs": self.probe_pairs,
            "probe_s": round(self.probe_s, 3),
            "reason": self.reason,
        }


def deal_rows(lengths: np.ndarray, budget: int, ways: int, batches: int) -> tuple[list[np.ndarray], int]:
    """The probe's rows for each of `ways` paths (dealt in turn from the longest), about
    `batches` + 1 budgets of tokens each, and the budget the probe batches run at (smaller than
    `budget` when the rows hold fewer tokens than that)."""
    order = longest_first(lengths)
    total = int(lengths.sum())
    per_path = min((batches + 1) * budget, total // ways)
    probe_budget = max(1, min(budget, per_path // (batches + 1)))
    dealt = [order[i::ways] for i in range(ways)]
    taken = []
    for rows in dealt:
        within = np.cumsum(lengths[rows]) <= per_path
        taken.append(rows[: max(1, int(within.sum()))] if len(rows) else rows)
    return taken, probe_budget


def _timed(
    reranker: Reranker,
    input_ids: pa.ListArray,
    token_type_ids: pa.ListArray | None,
    rows: np.ndarray,
    clock: Callable[[], float],
) -> tuple[torch.Tensor, float]:
    """One micro-batch's scores and seconds (its inputs built and, on CUDA, its kernels finished)."""
    start = clock()
    out = reranker.run(input_ids, token_type_ids, rows)
    if reranker.is_cuda:
        torch.cuda.synchronize()
    return out, clock() - start


def probe_attention(
    reranker: Reranker,
    input_ids: pa.ListArray,
    token_type_ids: pa.ListArray | None,
    budget: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ScoredBatch, AttentionChoice]:
    """Scores every row of one call, timing the two attention paths on some of them (the module's
    docstring); the reranker is left on the faster path. A path this model cannot run (a head or
    attention the packed path does not support) drops out, and its rows go to the other."""
    lengths = np.diff(input_ids.offsets.to_numpy())
    n = len(lengths)
    out = ScoredBatch(np.empty((n, reranker.num_scores), np.float32), np.empty(n, np.int32))
    done = np.zeros(n, bool)
    dealt, probe_budget = deal_rows(lengths, budget, len(PATHS), PROBE_BATCHES)
    plans, unsupported = _plans(reranker, lengths, dealt, probe_budget)
    started = clock()
    rates, failed = _run_interleaved(reranker, input_ids, token_type_ids, plans, out, done, clock)
    chosen, reason = _choose(rates, failed or unsupported)
    choice = AttentionChoice(chosen, rates, int(done.sum()), clock() - started, reason)
    reranker.use_attention(chosen)
    rest = np.flatnonzero(~done)
    if len(rest):
        scored = reranker.score(input_ids.take(pa.array(rest)), _take(token_type_ids, rest), budget)
        out.columns[rest], out.padded_lengths[rest] = scored.columns, scored.padded_lengths
    shown = ", ".join(f"{p}: {r:,.0f}" for p, r in rates.items())
    log.info(
        "attention auto: real tokens/s on %d probe pairs: %s -> %s (%s)",
        int(done.sum()),
        shown,
        chosen,
        reason,
    )
    return out, choice


def _plans(
    reranker: Reranker, lengths: np.ndarray, dealt: list[np.ndarray], budget: int
) -> tuple[dict[ResolvedAttention, list[np.ndarray]], str]:
    """Each path's micro-batches over its dealt rows (row numbers of the call), and why a path
    could not be built ("" when both were)."""
    plans: dict[ResolvedAttention, list[np.ndarray]] = {}
    unsupported = ""
    for path, rows in zip(PATHS, dealt, strict=True):
        try:
            reranker.use_attention(path)
        except ModelLoadError as e:
            unsupported = str(e)
            continue
        plans[path] = [rows[b] for b in reranker.plan(lengths[rows], budget)]
    return plans, unsupported


def _run_interleaved(
    reranker: Reranker,
    input_ids: pa.ListArray,
    token_type_ids: pa.ListArray | None,
    plans: dict[ResolvedAttention, list[np.ndarray]],
    out: ScoredBatch,
    done: np.ndarray,
    clock: Callable[[], float],
) -> tuple[dict[str, float], str]:
    """The paths' batches in turn, each scored into `out` (and marked `done`); real tokens/s per
    path after its first batch, and why a path failed at its first forward ("" when none did)."""
    lengths = np.diff(input_ids.offsets.to_numpy())
    tokens = {p: 0 for p in plans}
    seconds = {p: 0.0 for p in plans}
    failed = ""
    with torch.inference_mode():
        for step in range(max(len(p) for p in plans.values())):
            for path, plan in list(plans.items()):
                if step >= len(plan):
                    continue
                rows = plan[step]
                reranker.use_attention(path)
                try:
                    scores, took = _timed(reranker, input_ids, token_type_ids, rows, clock)
                except ModelLoadError as e:  # found at its first forward (soft-capped attention)
                    failed = str(e)
                    del plans[path], tokens[path], seconds[path]
                    continue
                out.columns[rows] = scores.float().cpu().numpy()
                out.padded_lengths[rows] = reranker.run_lengths(lengths[rows])
                done[rows] = True
                if step > 0:  # the first batch of each path warms it up
                    tokens[path] += int(lengths[rows].sum())
                    seconds[path] += took
    return {p: tokens[p] / seconds[p] for p in plans if seconds[p] > 0}, failed


def _choose(rates: dict[str, float], unsupported: str) -> tuple[ResolvedAttention, str]:
    """Unpadded only where it measured at least `SWITCH_GAIN` faster: a closer race is within the
    noise of a few timed batches, and padded, the reference path, keeps runs alike."""
    if unsupported:
        return "padded", f"unpadded not supported by this model: {unsupported}"
    if len(rates) < len(PATHS):  # too few pairs to time both: the first call of a tiny run
        return "padded", "too few pairs to time both paths"
    if rates["unpadded"] >= SWITCH_GAIN * rates["padded"]:
        return "unpadded", "measured"
    return "padded", "measured"


def _take(array: pa.ListArray | None, rows: np.ndarray) -> pa.ListArray | None:
    return None if array is None else array.take(pa.array(rows))
