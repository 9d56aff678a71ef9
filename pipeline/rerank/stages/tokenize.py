"""The CPU stage: `TokenizeShard` reads one input shard (row group by row group), tokenizes its
pairs and orders them longest first. A shard that cannot be read yields one error row instead of
failing the run. No Ray and no torch import: tokenizing actors stay light.

With `--long-passages chunk` a row becomes one tokenized row per window of its passage, each
carrying its `row` and the window columns of `pipeline.models.windows`; the driver aggregates them
(`pipeline.rerank.stream.assembly`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.model_cache import local_model_path
from pipeline.models.batching import longest_first
from pipeline.models.kinds import load_pair_tokenizer
from pipeline.models.windows import WINDOW_FIELDS, WindowOptions
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.cascade import mark_not_scored
from pipeline.rerank.input.layout import read_pairs
from pipeline.rerank.input.quarantine import reject_reasons

log = logging.getLogger(__name__)


def tokenized_schema(uses_token_types: bool, windowed: bool = False) -> pa.Schema:
    fields = [
        pa.field("shard", pa.int32()),
        pa.field("row", pa.int64()),
        pa.field("input_ids", pa.list_(pa.int32())),
    ]
    if uses_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    fields.append(pa.field("error", pa.string()))  # the whole shard failed (one row, row = -1)
    fields.append(pa.field("reject", pa.string()))  # this row is quarantined, with the reason
    if windowed:  # chunk mode: which window of its row this is (pipeline.models.windows)
        fields += WINDOW_FIELDS
    return pa.schema(fields)


def rechunk(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The same rows, in order, as tables of exactly `rows` rows (the last one may be shorter).

    Output blocks that match the scoring stage's rows per call make each scoring task one call,
    released as soon as it ends: a shard publishes when its last call is done, not when a
    bundle of several calls is.
    """
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows)
            rest = joined.slice(rows)
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending)


def sort_longest_first(table: pa.Table) -> pa.Table:
    lengths = np.diff(table.column("input_ids").combine_chunks().offsets.to_numpy())
    return table.take(pa.array(longest_first(lengths), pa.int64()))


class TokenizeShard:
    """Reads and tokenizes shards: a call gets a group of shards (one big shard, or several small
    ones, so small shards cost one task, not one each) and yields tables of `block_rows` rows,
    each ordered longest first. `tokenize` reads one shard a row group at a time."""

    def __init__(
        self, model: ModelConfig, columns: InputConfig, storage: Storage, block_rows: int = 1024
    ) -> None:
        self._tokenizer = load_pair_tokenizer(local_model_path(model.name_or_path, storage), model)
        self._columns = columns
        self._storage = storage
        self._windows = (
            WindowOptions(columns.chunk_overlap, columns.max_chunks)
            if columns.long_passages == "chunk"
            else None
        )
        self._schema = tokenized_schema(self._tokenizer.uses_token_types, self._windows is not None)
        self._block_rows = block_rows

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
        if self._windows is not None:
            empty |= {"window": [0], "windows": [1], "window_char": [0], "windows_not_scored": [0]}
        return pa.Table.from_pydict(empty, schema=self._schema)

    def tokenize(self, shard: int, uri: str) -> Iterator[pa.Table]:
        c = self._columns
        first_row = 0
        for group in read_pairs(self._storage, uri, c):  # row groups; nested: candidates as rows
            queries = group.column(c.query_column).to_pylist()
            passages = group.column(c.passage_column).to_pylist()
            reasons = reject_reasons(
                queries,
                passages,
                c.query_column,
                c.passage_column,
                query_ids=group.column(c.query_id_column).to_pylist(),
                query_id_column=c.query_id_column,
            )
            reasons = mark_not_scored(reasons, group)  # --prefilter-top-k: skipped like quarantined rows
            if any(reasons):  # quarantined rows are carried along empty, so the shard still adds up
                queries = [q if r is None else "" for q, r in zip(queries, reasons, strict=True)]
                passages = [p if r is None else "" for p, r in zip(passages, reasons, strict=True)]
            yield self._encode(shard, first_row, queries, passages, reasons)
            first_row += group.num_rows

    def _encode(
        self, shard: int, first_row: int, queries: list[str], passages: list[str], reasons: list[str | None]
    ) -> pa.Table:
        """The tokenized rows of one row group: one per pair, or one per window in chunk mode."""
        if self._windows is None:
            pair = np.arange(len(queries), dtype=np.int64)
            enc = self._tokenizer.encode(queries, passages)
        else:
            pair, enc = self._tokenizer.encode_windows(queries, passages, self._windows)
        n = len(pair)
        columns: dict[str, Any] = {
            "shard": pa.array(np.full(n, shard, np.int32)),
            "row": pa.array(pair + first_row),
            **enc,
            "error": pa.nulls(n, pa.string()),
            "reject": pa.array(reasons, pa.string()).take(pa.array(pair)),
        }
        return pa.Table.from_pydict(columns, schema=self._schema)

    def tokenize_or_fail(self, shard: int, uri: str) -> Iterator[pa.Table]:
        """`tokenize`, or one error row if the shard cannot be read or decoded (it fails alone).
        A failure mid-shard keeps the rows already yielded: the driver fails the whole shard."""
        try:
            yield from self.tokenize(shard, uri)
        except Exception as e:  # any read/decode failure fails this shard only
            log.error("shard %s failed in tokenization: %s", uri, e)
            yield self._error_row(shard, f"{type(e).__name__}: {e}")

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for shards, uris in zip(batch["shards"], batch["uris"], strict=True):
            tables = (
                t for s, u in zip(shards, uris, strict=True) for t in self.tokenize_or_fail(int(s), str(u))
            )
            for block in rechunk(tables, self._block_rows):
                yield sort_longest_first(block)
