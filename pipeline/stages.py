"""The pipeline's stages. Plain classes and functions: no Ray import, each testable on its own.

- `TokenizeShard`: reads one input shard (row group by row group), tokenizes its pairs, orders
  them longest first. A shard that cannot be read yields one error row instead of failing the run.
- `ScorePairs`: holds one reranker; scores what it is handed in token-budget micro-batches.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.batching import longest_first
from pipeline.budget_probe import probe_budget
from pipeline.config import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MIN_BATCH_FILL, InputConfig, ModelConfig
from pipeline.io import Storage
from pipeline.kinds import load_pair_tokenizer, with_kind
from pipeline.model_cache import local_model_path
from pipeline.placement import worker_location
from pipeline.quarantine import reject_reasons
from pipeline.reranker import Reranker

log = logging.getLogger(__name__)


def tokenized_schema(uses_token_types: bool) -> pa.Schema:
    fields = [
        pa.field("shard", pa.int32()),
        pa.field("row", pa.int64()),
        pa.field("input_ids", pa.list_(pa.int32())),
    ]
    if uses_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    fields.append(pa.field("error", pa.string()))  # the whole shard failed (one row, row = -1)
    fields.append(pa.field("reject", pa.string()))  # this row is quarantined, with the reason
    return pa.schema(fields)


class TokenizeShard:
    """Reads and tokenizes whole shards; yields one length-sorted table per row group."""

    def __init__(self, model: ModelConfig, columns: InputConfig, storage: Storage) -> None:
        self._tokenizer = load_pair_tokenizer(local_model_path(model.name_or_path, storage), model)
        self._columns = columns
        self._storage = storage
        self._schema = tokenized_schema(self._tokenizer.uses_token_types)

    def _error_row(self, shard: int, message: str) -> pa.Table:
        empty: dict[str, Any] = {
            "shard": [shard],
            "row": [-1],
            "input_ids": [[]],
            "error": [message],
            "reject": [None],
        }
        if self._tokenizer.uses_token_types:
            empty["token_type_ids"] = [[]]
        return pa.Table.from_pydict(empty, schema=self._schema)

    def tokenize(self, shard: int, uri: str) -> Iterator[pa.Table]:
        c = self._columns
        first_row = 0
        for group in self._storage.iter_row_groups(uri, [c.query_column, c.passage_column]):
            queries = group.column(c.query_column).to_pylist()
            passages = group.column(c.passage_column).to_pylist()
            reasons = reject_reasons(queries, passages, c.query_column, c.passage_column)
            if any(reasons):  # quarantined rows are carried along empty, so the shard still adds up
                queries = [q if r is None else "" for q, r in zip(queries, reasons, strict=True)]
                passages = [p if r is None else "" for p, r in zip(passages, reasons, strict=True)]
            enc = self._tokenizer.encode(queries, passages)
            lengths = np.diff(enc["input_ids"].offsets.to_numpy())
            order = pa.array(longest_first(lengths), pa.int64())
            n = group.num_rows
            columns: dict[str, Any] = {
                "shard": pa.array(np.full(n, shard, np.int32)),
                "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
                **enc,
                "error": pa.nulls(n, pa.string()),
                "reject": pa.array(reasons, pa.string()),
            }
            yield pa.Table.from_pydict(columns, schema=self._schema).take(order)
            first_row += n

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for shard, uri in zip(batch["shard"], batch["uri"], strict=True):
            try:
                yield from self.tokenize(int(shard), str(uri))
            except Exception as e:  # any read/decode failure fails this shard only
                log.error("shard %s failed in tokenization: %s", uri, e)
                yield self._error_row(int(shard), f"{type(e).__name__}: {e}")


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

    def __init__(
        self,
        model: ModelConfig,
        storage: Storage,
        device: str,
        dtype: str,
        max_batch_tokens: int | str,
        torch_threads: int | None = None,
        min_batch_fill: float | None = None,
    ) -> None:
        if device == "cpu":
            import torch

            # Ray pins OMP_NUM_THREADS=1 in actors; a CPU scorer should use the cores it was given.
            torch.set_num_threads(torch_threads or max(1, os.cpu_count() or 1))
        path = local_model_path(model.name_or_path, storage)
        model = with_kind(path, model)
        self._reranker = Reranker.load(
            path,
            device,
            dtype,
            DEFAULT_MAX_BATCH_TOKENS[device] if max_batch_tokens == "auto" else int(max_batch_tokens),
            model.trust_remote_code,
            kind=model.kind,
            cutoff_layers=model.cutoff_layers,
        )
        fill = DEFAULT_MIN_BATCH_FILL[device] if min_batch_fill is None else min_batch_fill
        self._reranker.min_fill = fill
        self._probe_budget = max_batch_tokens == "auto"
        self._score_columns = model.score_columns

    def __call__(self, batch: pa.Table) -> pa.Table:
        call_start = time.time()
        n = batch.num_rows
        ok = pc.and_(batch.column("error").is_null(), batch.column("reject").is_null())
        ok = ok.to_numpy(zero_copy_only=False)
        scores = np.full((n, len(self._score_columns)), np.nan, np.float32)
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
            if self._probe_budget:  # max_batch_tokens: auto, on this actor's first pairs
                self._reranker.max_batch_tokens = probe_budget(self._reranker, ids, types)
                self._probe_budget = False
            result = self._reranker.score(ids, types)
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
        return pa.Table.from_pydict(columns, schema=scored_schema(self._score_columns))
