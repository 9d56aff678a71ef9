"""The scoring model run over right-padded token-budget micro-batches, whatever its kind:
an encoder's one logit, an LLM's token-logit score (pipeline.modeling.llm_scorer) or layerwise heads
(pipeline.modeling.minicpm_layerwise). Each scoring module maps (input_ids, attention_mask[, token_type_ids])
to fp32 scores [rows, columns].

On CPU the linear layers run on weights prepacked once for oneDNN (pipeline.modeling.kernels.cpu_linear).
Two faster paths, each giving the same scores (tests/unit/test_kernel_parity.py, 1e-5 in fp32):
`attention="unpadded"` packs a micro-batch's pairs into one row with per-pair attention
(pipeline.modeling.kernels), and `compiled=True` runs the module through torch.compile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.config import ResolvedAttention, ResolvedKind
from pipeline.errors import ModelLoadError
from pipeline.modeling.kernels.compile import CompiledScorer, bucket_length, bucket_width
from pipeline.modeling.kernels.cpu_linear import prepack_linears
from pipeline.modeling.kernels.packed import PackedEncoder, packed_scorer, use_packed
from pipeline.modeling.kernels.packing import pack, plan_packed_batches
from pipeline.modeling.llm_scorer import TokenLogitScorer
from pipeline.modeling.minicpm_layerwise import LayerwiseReranker
from pipeline.models.batching import plan_micro_batches
from pipeline.models.families.registry import family_named
from pipeline.models.families.score_tokens import score_token_ids, score_weights
from pipeline.models.padding import right_pad
from pipeline.models.text_tokenizer import TextTokenizer

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class EncoderScorer(torch.nn.Module):
    """A one-logit sequence classifier; forward gives fp32 scores [rows, 1]."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs).logits.view(-1, 1).float()


def load_scorer(
    name_or_path: str,
    kind: str,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    cutoff_layers: list[int] | None = None,
    family: str | None = None,
) -> tuple[torch.nn.Module, int, int]:
    """(scoring module, pad token id, number of score columns) for a reranker of the given kind
    and family (None: the kind's original one, flag-llm for llm)."""
    if kind == "llm":
        chosen = family_named(family or "flag-llm")
        tokenizer = TextTokenizer.load(name_or_path)
        ids = score_token_ids(chosen, tokenizer)
        scorer = TokenLogitScorer.load(name_or_path, ids, score_weights(chosen), dtype, trust_remote_code)
        return scorer, tokenizer.pad_token_id or 0, 1
    if kind == "layerwise":
        layerwise = LayerwiseReranker.load(name_or_path, cutoff_layers, dtype)
        return layerwise, layerwise.cfg.pad_token_id or 0, len(layerwise.cutoff_layers)
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelLoadError(f"cannot load --model {name_or_path!r} for scoring: {e}") from e
    pad = model.config.pad_token_id
    return EncoderScorer(model), 0 if pad is None else int(pad), 1


@dataclass
class ScoredBatch:
    columns: np.ndarray  # float32 [rows, score columns], in input order
    padded_lengths: np.ndarray  # int32, the padded length each row was run at

    @property
    def scores(self) -> np.ndarray:
        """The main score (first column), one per row."""
        return self.columns[:, 0]


class Reranker:
    """Holds one reranker (any kind) on one device; scores pre-tokenized pairs, right-padded."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        pad_token_id: int,
        max_batch_tokens: int,
        *,
        num_scores: int = 1,
        min_fill: float = 0.0,
        attention: ResolvedAttention = "padded",
        compiled: bool = False,
        compile_backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        """`model` is a padded scoring module, already on `device`; `attention="unpadded"` wraps
        it for packed batches, `compiled` in torch.compile (pipeline.modeling.kernels). Rerankers
        built on one module share its weights; its transformers attention follows the path of the
        last one built or switched (`use_attention`)."""
        self.scorer = model  # the padded module, as loaded
        self.device = torch.device(device)
        self.pad_token_id = pad_token_id
        self.max_batch_tokens = max_batch_tokens
        self.min_fill = min_fill
        self.num_scores = num_scores
        self.is_cuda = self.device.type == "cuda"
        self.compiled = compiled
        self._compile_backend = compile_backend
        self._compiled: dict[int, CompiledScorer] = {}  # per module (path): compiled once each
        self._packed: torch.nn.Module | None = None  # the packed module, once built
        self.use_attention(attention)

    def use_attention(self, attention: ResolvedAttention) -> None:
        """Runs the next batches on this path (the `--attention auto` probe tries both on one
        module's weights): `unpadded` builds the packed module on first use; `padded` gives the
        transformers model its own attention back."""
        if attention == "unpadded":
            if self._packed is None:
                self._packed = packed_scorer(self.scorer)
            use_packed(self._packed, True)
            module = self._packed
        else:
            if self._packed is not None:
                use_packed(self._packed, False)
            module = self.scorer
        self.attention = attention
        self.position_offset = int(getattr(module, "position_offset", 0))
        self._module = module
        self.set_compiled(self.compiled)

    @property
    def last_layer(self) -> str | None:
        """Where a cross-encoder's last layer runs on the packed path: at each pair's first token
        only (the row its head reads, pipeline.modeling.kernels.first_token), or every token and
        why; None on the padded path and for other kinds."""
        if not isinstance(self._module, PackedEncoder):
            return None
        why = self._module.full_last_layer
        return "first tokens only" if why is None else f"every token ({why})"

    def set_compiled(self, compiled: bool) -> None:
        """Runs the next batches through torch.compile (`--compile auto` decides after the first
        call) or eagerly again."""
        self.compiled = compiled
        self.model: torch.nn.Module = self._module
        if not compiled:
            return
        if isinstance(self.scorer, LayerwiseReranker):
            # its RoPE tables are cached on first use: filled now, not inside the first compiled
            # call, whose guard on the empty cache would cost a second compile
            weight = next(self.scorer.parameters())
            self.scorer.rotary(1, weight.device, weight.dtype)
        key = id(self._module)
        if key not in self._compiled:
            self._compiled[key] = CompiledScorer(self._module, self._compile_backend)
        self.model = self._compiled[key]

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str,
        dtype: str,
        max_batch_tokens: int,
        *,
        min_fill: float = 0.0,
        trust_remote_code: bool = False,
        kind: ResolvedKind = "encoder",
        cutoff_layers: list[int] | None = None,
        attention: ResolvedAttention = "padded",
        compiled: bool = False,
        family: str | None = None,
    ) -> Reranker:
        """`dtype` is concrete (float16, bfloat16 or float32), so are `attention` and `compiled`
        (pipeline.modeling.kernels resolves their `auto`); `family` is resolved (None: the kind's
        original family)."""
        model, pad, num_scores = load_scorer(
            name_or_path, kind, TORCH_DTYPES[dtype], trust_remote_code, cutoff_layers, family
        )
        model.eval().to(device)
        if torch.device(device).type == "cpu" and not compiled:  # inductor packs weights its own way
            prepack_linears(model)
        return cls(
            model,
            device,
            pad,
            max_batch_tokens,
            num_scores=num_scores,
            min_fill=min_fill,
            attention=attention,
            compiled=compiled,
        )

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.is_cuda:  # pinned (cached by torch's host allocator): the copy runs async, overlapped
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def inputs(
        self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None, rows: np.ndarray
    ) -> dict[str, torch.Tensor | int]:
        """The model inputs of the given rows as one batch on the device: right-padded (widened to
        a bucketed width when compiled), or packed into one row (`attention="unpadded"`)."""
        if self.attention == "unpadded":
            packed = pack(input_ids, rows, token_type_ids, self.position_offset)
            longest = int(packed.pop("max_length")[0])
            if self.compiled:  # a bound, not the exact value: a handful of compiled graphs
                longest = bucket_length(longest)
            return {**{k: self._to_device(a) for k, a in packed.items()}, "max_length": longest}
        padded = right_pad(input_ids, rows, self.pad_token_id, token_type_ids)
        if self.compiled:
            width = padded["input_ids"].shape[1]
            extra = bucket_width(width) - width
            fill = {"input_ids": self.pad_token_id}
            padded = {
                k: np.pad(a, ((0, 0), (0, extra)), constant_values=fill.get(k, 0)) for k, a in padded.items()
            }
        return {name: self._to_device(array) for name, array in padded.items()}

    def run_lengths(self, lengths: np.ndarray) -> np.ndarray | int:
        """The length each row of one micro-batch is run at: its own when packed, else the batch's
        padded width."""
        if self.attention == "unpadded":
            return lengths
        width = int(lengths.max())
        return bucket_width(width) if self.compiled else width

    def plan(self, lengths: np.ndarray, budget: int) -> list[np.ndarray]:
        """Micro-batches (row indices) for pairs of these lengths: padded tokens within `budget`,
        or real tokens within it when packed (no padding to bound)."""
        if self.attention == "unpadded":
            return plan_packed_batches(lengths, budget)
        return plan_micro_batches(lengths, budget, self.min_fill)

    @torch.inference_mode()
    def forward(
        self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None, rows: np.ndarray
    ) -> np.ndarray:
        """fp32 scores [rows, score columns] of the given rows, run as one batch."""
        return self.run(input_ids, token_type_ids, rows).cpu().numpy()

    def run(
        self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None, rows: np.ndarray
    ) -> torch.Tensor:
        """The scoring module on the given rows as one batch: fp32 scores [rows, columns] on the
        device. A compiled module never sees a one-row batch (torch specialises dims of size 1, a
        recompile): that row runs twice and one copy is kept."""
        if self.compiled and len(rows) == 1:
            return self.model(**self.inputs(input_ids, token_type_ids, np.repeat(rows, 2)))[:1]
        return self.model(**self.inputs(input_ids, token_type_ids, rows))

    def score(
        self,
        input_ids: pa.ListArray,
        token_type_ids: pa.ListArray | None = None,
        max_batch_tokens: int | None = None,
    ) -> ScoredBatch:
        """Scores every row; micro-batches are token-budget, longest first, right-padded.

        Results stay on the device until every micro-batch is queued: on CUDA the host pads and
        copies the next batch while the GPU runs the current one, and syncs once per call.
        `max_batch_tokens` overrides the budget this reranker was built with (a probed one).
        """
        budget = max_batch_tokens or self.max_batch_tokens
        lengths = np.diff(input_ids.offsets.to_numpy())
        n = len(lengths)
        out = ScoredBatch(np.empty((n, self.num_scores), np.float32), np.empty(n, np.int32))
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        with torch.inference_mode():
            for idx in self.plan(lengths, budget):
                self._score_rows(input_ids, token_type_ids, idx, lengths, out, pending)
            for idx, scores in pending:
                out.columns[idx] = scores.cpu().numpy()
        return out

    def _score_rows(
        self,
        input_ids: pa.ListArray,
        token_type_ids: pa.ListArray | None,
        idx: np.ndarray,
        lengths: np.ndarray,
        out: ScoredBatch,
        pending: list[tuple[np.ndarray, torch.Tensor]],
    ) -> None:
        """One micro-batch; on out-of-memory it is split in halves and retried, down to one row."""
        try:
            pending.append((idx, self.run(input_ids, token_type_ids, idx)))
            out.padded_lengths[idx] = self.run_lengths(lengths[idx])
        except torch.OutOfMemoryError:
            if len(idx) == 1:
                raise
            if self.is_cuda:
                torch.cuda.empty_cache()
            log.warning(
                "out of memory on a batch of %d x %d tokens; splitting it in two and retrying",
                len(idx),
                int(lengths[idx].max()),
            )
            half = len(idx) // 2
            self._score_rows(input_ids, token_type_ids, idx[:half], lengths, out, pending)
            self._score_rows(input_ids, token_type_ids, idx[half:], lengths, out, pending)
