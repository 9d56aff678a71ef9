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
from pipeline.rerank.input.layout import read_pair_texts
from pipeline.rerank.reuse.lookup import REUSED, read_reused, reused_schema

log = logging.getLogger(__name__)


def tokenized_schema(
    uses_token_types: bool, windowed: bool = False, reused_columns: list[str] | None = None
) -> pa.Schema:
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
    if reused_columns is not None:  # --reuse: the stored columns, set on the rows reused
        fields += [pa.field(REUSED, pa.bool_()), *list(reused_schema(reused_columns, windowed))[1:]]
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
    each ordered longest first. `tokenize` reads one shard a row group at a time. With
    `reused_columns` (--reuse: the score columns), the rows of a shard's reused-score file
    (pipeline/rerank/reuse/lookup.py) are not tokenized: they come out once, with their stored
    columns and `reused` set, and the scoring stage passes them on."""

    def __init__(
        self,
        model: ModelConfig,
        columns: InputConfig,
        storage: Storage,
        block_rows: int = 1024,
        reused_columns: list[str] | None = None,
    ) -> None:
        self._tokenizer = load_pair_tokenizer(local_model_path(model.name_or_path, storage), model)
        self._columns = columns
        self._storage = storage
        self._windows = (
            WindowOptions(columns.chunk_overlap, columns.max_chunks)
            if columns.long_passages == "chunk"
            else None
        )
        self._reused_columns = reused_columns
        self._schema = tokenized_schema(
            self._tokenizer.uses_token_types, self._windows is not None, reused_columns
        )
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
        if self._reused_columns is not None:
            empty[REUSED] = [False]
        empty |= {f.name: [None] for f in self._schema if f.name not in empty}  # stored columns: none
        return pa.Table.from_pydict(empty, schema=self._schema)

    def tokenize(self, shard: int, uri: str, reused_uri: str = "") -> Iterator[pa.Table]:
        reused = self._reused(reused_uri)
        stored = reused.column("row").to_numpy() if reused is not None else np.zeros(0, np.int64)
        taken: list[np.ndarray] = []  # the stored rows that are scorable here: passed on reused
        first_row = 0
        for texts in read_pair_texts(self._storage, uri, self._columns):  # nested: candidates as rows
            queries, passages, reasons = texts.queries, texts.passages, texts.reasons
            n = len(reasons)
            if any(reasons):  # quarantined rows are carried along empty, so the shard still adds up
                queries = [q if r is None else "" for q, r in zip(queries, reasons, strict=True)]
                passages = [p if r is None else "" for p, r in zip(passages, reasons, strict=True)]
            rows = np.arange(first_row, first_row + n, dtype=np.int64)
            if len(stored):
                scorable = np.array([r is None for r in reasons], bool)
                reuse = np.isin(rows, stored) & scorable
                taken.append(rows[reuse])
                keep = np.flatnonzero(~reuse).tolist()
                queries, passages = [queries[i] for i in keep], [passages[i] for i in keep]
                reasons, rows = [reasons[i] for i in keep], rows[keep]
            yield self._encode(shard, rows, queries, passages, reasons)
            first_row += n
        if reused is not None and taken:
            yield self._reused_rows(shard, reused, np.concatenate(taken))

    def _reused(self, uri: str) -> pa.Table | None:
        if not uri or self._reused_columns is None:
            return None
        return read_reused(self._storage, uri, self._reused_columns, self._windows is not None)

    def _encode(
        self, shard: int, rows: np.ndarray, queries: list[str], passages: list[str], reasons: list[str | None]
    ) -> pa.Table:
        """The tokenized rows of one row group (`rows`: their row numbers in the shard): one per
        pair, or one per window in chunk mode."""
        if self._windows is None:
            pair = np.arange(len(queries), dtype=np.int64)
            enc = self._tokenizer.encode(queries, passages)
        else:
            pair, enc = self._tokenizer.encode_windows(queries, passages, self._windows)
        n = len(pair)
        columns: dict[str, Any] = {
            "shard": pa.array(np.full(n, shard, np.int32)),
            "row": pa.array(rows[pair] if len(rows) else np.zeros(0, np.int64)),
            **enc,
            "error": pa.nulls(n, pa.string()),
            "reject": pa.array(reasons, pa.string()).take(pa.array(pair)),
        }
        if self._reused_columns is not None:  # not reused: no stored columns
            columns[REUSED] = pa.array(np.zeros(n, bool))
            columns |= {f.name: pa.nulls(n, f.type) for f in self._schema if f.name not in columns}
        return pa.Table.from_pydict(columns, schema=self._schema)

    def _reused_rows(self, shard: int, reused: pa.Table, taken: np.ndarray) -> pa.Table:
        """The shard's reused rows as tokenized rows: no tokens, their stored columns set."""
        rows = reused.filter(pa.array(np.isin(reused.column("row").to_numpy(), taken)))
        n = rows.num_rows
        columns: dict[str, Any] = {
            "shard": pa.array(np.full(n, shard, np.int32)),
            "row": rows.column("row"),
            "input_ids": pa.array([[]] * n, pa.list_(pa.int32())),
            "error": pa.nulls(n, pa.string()),
            "reject": pa.nulls(n, pa.string()),
            REUSED: pa.array(np.ones(n, bool)),
            **{name: rows.column(name) for name in rows.column_names if name != "row"},
        }
        if self._tokenizer.uses_token_types:
            columns["token_type_ids"] = pa.array([[]] * n, pa.list_(pa.int8()))
        if self._windows is not None:  # one "window" per row: the row's stored result
            columns |= {
                "window": np.zeros(n, np.int16),
                "windows": np.ones(n, np.int16),
                "window_char": np.zeros(n, np.int32),
                "windows_not_scored": np.zeros(n, np.int16),
            }
        return pa.Table.from_pydict(columns).select(self._schema.names).cast(self._schema)

    def tokenize_or_fail(self, shard: int, uri: str, reused_uri: str = "") -> Iterator[pa.Table]:
        """`tokenize`, or one error row if the shard cannot be read or decoded (it fails alone).
        A failure mid-shard keeps the rows already yielded: the driver fails the whole shard."""
        try:
            yield from self.tokenize(shard, uri, reused_uri)
        except Exception as e:  # any read/decode failure fails this shard only
            log.error("shard %s failed in tokenization: %s", uri, e)
            yield self._error_row(shard, f"{type(e).__name__}: {e}")

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        reused = batch["reused"] if "reused" in batch else [[""] * len(s) for s in batch["shards"]]
        for shards, uris, stored in zip(batch["shards"], batch["uris"], reused, strict=True):
            tables = (
                t
                for s, u, r in zip(shards, uris, stored, strict=True)
                for t in self.tokenize_or_fail(int(s), str(u), str(r))
            )
            for block in rechunk(tables, self._block_rows):
                yield sort_longest_first(block)
