"""The scoring stage: `ScorePairs` holds one reranker per actor and scores what it is handed in
token-budget micro-batches. No Ray import: it runs in a unit test on a table.

torch and the model code are imported by the constructor, in the scoring actor: the driver names
this class in the plan (build.py) and must not pay seconds of imports for it (`rerank --help`,
`rerank status` and every run's start-up would).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.model_cache import local_model_path
from pipeline.models.windows import WINDOW_COLUMNS
from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS
from pipeline.rerank.reuse.lookup import REUSED, reused_mask
from pipeline.rerank.settings import ScoringSettings
from pipeline.rerank.stages.placement import worker_location

if TYPE_CHECKING:
    from pipeline.modeling.reranker import Reranker

log = logging.getLogger(__name__)

KERNEL = "kernel"  # a call's first row: the scoring actor's choices (JSON), read by report/kernels.py


def scored_schema(score_columns: list[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("shard", pa.int32()),
            pa.field("row", pa.int64()),
            *[pa.field(name, pa.float32()) for name in score_columns],
            pa.field("tokens", pa.int32()),
            pa.field("padded_tokens", pa.int32()),
            pa.field("error", pa.string()),
            pa.field("reject", pa.string()),
            pa.field("node", pa.string()),
            pa.field("actor", pa.int32()),
            pa.field("call_start", pa.float64()),  # epoch seconds: when this call began scoring
            pa.field("call_end", pa.float64()),  # ... and ended (the driver's steady-state rate)
        ]
    )


class ScorePairs:
    """Adds the score column(s) to tokenized pairs; holds one reranker per actor."""

    def __init__(self, model: ModelConfig, storage: Storage, settings: ScoringSettings) -> None:
        import torch  # here, in the scoring actor (see the module's docstring)

        from pipeline.modeling.kernel_choice import KernelChoices
        from pipeline.modeling.reranker import Reranker
        from pipeline.models.families.registry import family_named

        if settings.torch_threads is not None:
            # Ray pins OMP_NUM_THREADS=1 in actors; a CPU scorer should use the cores it was given.
            torch.set_num_threads(settings.torch_threads)
        reranker = Reranker.load(
            local_model_path(model.name_or_path, storage),
            settings.device,
            settings.dtype,
            settings.max_batch_tokens,
            min_fill=settings.min_batch_fill,
            trust_remote_code=model.trust_remote_code,
            kind=settings.kind,
            cutoff_layers=model.cutoff_layers,
            attention="padded" if model.attention == "auto" else model.attention,
            compiled=model.compile == "on",
            family=None if model.family == "auto" else model.family,
        )
        self._kernels = KernelChoices(
            reranker,
            attention=model.attention,
            compile_setting=model.compile,
            budget=settings.max_batch_tokens,
            probe_budget=settings.probe_budget,
            pairs_expected=settings.pairs_per_actor,
            packs=model.family == "auto" or family_named(model.family).packs,
        )
        self._score_columns = model.score_columns
        self._dtype = {"dtype": settings.dtype, "dtype_reason": settings.dtype_reason}
        # What was just imported and loaded lives as long as this actor: one collection now (no
        # loading garbage kept), then out of every later one (gc.freeze), so no full collection
        # walks torch's and transformers' object graph again, between micro-batches or at exit
        # (2.5 s of CPU at each actor's exit on a small CPU).
        gc.collect()
        gc.freeze()

    @property
    def reranker(self) -> Reranker:
        """The reranker this stage scores with (the GPU benchmark, bench/gpu/, times it bare)."""
        return self._kernels.reranker

    @property
    def kernel_info(self) -> dict:
        """What this stage runs with and why (precision, attention path, compile, budget)."""
        return self._dtype | self._kernels.info

    def __call__(self, batch: pa.Table) -> pa.Table:
        call_start = time.time()
        n = batch.num_rows
        ok = pc.and_(batch.column("error").is_null(), batch.column("reject").is_null())
        ok = ok.to_numpy(zero_copy_only=False)
        reused = reused_mask(batch)  # --reuse: rows with their stored scores, passed on as they are
        ok &= ~reused
        scores = np.full((n, len(self._score_columns)), np.nan, np.float32)
        if reused.any():
            for i, name in enumerate(self._score_columns):
                stored = batch.column(name).to_numpy(zero_copy_only=False)
                scores[reused, i] = stored[reused]
        tokens = np.zeros(n, np.int32)
        padded = np.zeros(n, np.int32)
        if ok.any():
            good = batch.filter(pa.array(ok))
            ids = good.column("input_ids").combine_chunks()
            types = (
                good.column("token_type_ids").combine_chunks()
                if "token_type_ids" in good.column_names
                else None
            )
            result = self._kernels.score(ids, types)  # the first call also settles the `auto` kernels
            scores[ok], padded[ok] = result.columns, result.padded_lengths
            tokens[ok] = np.diff(ids.offsets.to_numpy())
        node, pid = worker_location()
        columns = {
            "shard": batch.column("shard"),
            "row": batch.column("row"),
            **{name: scores[:, i] for i, name in enumerate(self._score_columns)},
            "tokens": tokens,
            "padded_tokens": padded,
            "error": batch.column("error"),
            "reject": batch.column("reject"),
            "node": pa.array([node] * n, pa.string()),
            "actor": np.full(n, pid, np.int32),
            "call_start": np.full(n, call_start),
            "call_end": np.full(n, time.time()),
        }
        scored = pa.Table.from_pydict(columns, schema=scored_schema(self._score_columns))
        # what this actor runs with and why, on the call's first row: the summary's "kernels"
        choices = [json.dumps(self.kernel_info)] + [None] * (n - 1) if n else []
        scored = scored.append_column(pa.field(KERNEL, pa.string()), pa.array(choices, pa.string()))
        for name in (*WINDOW_COLUMNS, REUSED, CHUNKS, BEST_CHUNK_CHAR):  # chunk mode, --reuse
            if name in batch.column_names:
                scored = scored.append_column(batch.schema.field(name), batch.column(name))
        return scored
