"""The `--reuse` lookup: which pending pairs an earlier run already scored, found before any is
tokenized. Its Ray Data plan is `pipeline.rerank.build.build_lookup`; its stages are here, plain
classes that run without Ray:

1. `ShardKeys` reads each pending shard's texts and keys every pair it would score (not the rows a
   quarantine or a cascade leaves unscored): (shard, row, key);
2. `ReadStores` reads the reuse sources' store files (a file that is damaged, cut short, of
   another format or identity gives nothing and leaves a note saying why, `problem_uri`);
3. Ray Data's hash join matches the two on the key: pairs that moved to another shard, or whose ids
   changed but not their texts, match like the others. Memory per worker is bounded by one of its
   partitions, whatever the corpus; the driver holds no key;
4. `write_reused`, once per shard (a group by shard), keeps one stored score per row (the newest
   source's) and writes them to OUTPUT/_rerank/reuse/<shard>.parquet, which the tokenize stage
   reads with its shard: those rows are passed on with their stored scores, bit for bit, and
   neither tokenized nor scored.

A night whose keys and stored pairs fit one join partition skips the shuffle: `JoinInOneTask` runs
stages 1, 2 and 4 in one task with pyarrow's hash join, holding no more than one partition would.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.io import Storage, join
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.layout import read_pair_texts
from pipeline.rerank.output.paths import REUSE
from pipeline.rerank.reuse.keys import KEY_COLUMNS, KEY_FIELDS, key_columns
from pipeline.rerank.reuse.store import UnusableStore, read_store, store_schema

log = logging.getLogger(__name__)

REUSED = "reused"  # a tokenized (then scored) row's flag: it carries its stored score(s)
SOURCE = "source"  # which reuse source a stored score came from: 0 = the newest
PROBLEMS = "problems"  # under OUTPUT/_rerank/reuse/: one note per store file skipped

KEYS_SCHEMA = pa.schema([pa.field("shard", pa.int32()), pa.field("row", pa.int64()), *KEY_FIELDS])


def reused_mask(batch: pa.Table) -> np.ndarray:
    """Per row of a tokenized or scored block: whether it carries its stored score(s)."""
    if REUSED not in batch.column_names:
        return np.zeros(batch.num_rows, bool)
    return batch.column(REUSED).to_numpy(zero_copy_only=False)


def reused_uri(output: str, shard: int) -> str:
    """The stored scores found for pending shard `shard` (its index in this run's plan)."""
    return join(output, f"{REUSE}/shard-{shard}.parquet")


def problem_uri(output: str, store_file: str) -> str:
    name = hashlib.sha256(store_file.encode()).hexdigest()[:24]
    return join(output, f"{REUSE}/{PROBLEMS}/{name}.txt")


def reused_schema(score_columns: list[str], chunked: bool) -> pa.Schema:
    """A shard's reused rows: its row numbers and their stored columns."""
    stored = store_schema(score_columns, chunked)
    return pa.schema([pa.field("row", pa.int64()), *(f for f in stored if f.name not in KEY_COLUMNS)])


class ShardKeys:
    """Stage 1: the key of every pair a pending shard would score."""

    def __init__(self, columns: InputConfig, storage: Storage) -> None:
        self._columns, self._storage = columns, storage

    def keys(self, shard: int, uri: str) -> Iterator[pa.Table]:
        first = 0
        for texts in read_pair_texts(self._storage, uri, self._columns):
            scored = np.array([r is None for r in texts.reasons], bool)
            rows = np.flatnonzero(scored)
            pick = rows.tolist()
            keys = key_columns([texts.queries[i] for i in pick], [texts.passages[i] for i in pick])
            columns = {"shard": np.full(len(rows), shard, np.int32), "row": rows + first, **keys}
            yield pa.Table.from_pydict(columns, schema=KEYS_SCHEMA)
            first += len(texts.reasons)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for shards, uris in zip(batch["shards"], batch["uris"], strict=True):
            for shard, uri in zip(shards, uris, strict=True):
                try:
                    yield from self.keys(int(shard), str(uri))
                except Exception as e:  # the shard fails in the tokenize stage, which names it
                    log.warning("no reuse lookup for %s: %s: %s", uri, type(e).__name__, e)


class ReadStores:
    """Stage 2: the rows of the reuse sources' store files (key, stored columns, source)."""

    def __init__(
        self, storage: Storage, output: str, digest: str, score_columns: list[str], chunked: bool
    ) -> None:
        self._storage, self._output, self._digest = storage, output, digest
        self._score_columns, self._chunked = score_columns, chunked

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for uri, source in zip(batch["uri"], batch[SOURCE], strict=True):
            try:
                table = read_store(self._storage, str(uri), self._digest, self._score_columns, self._chunked)
            except UnusableStore as e:
                note = f"{e}; its pairs are scored"
                log.warning("%s", note)
                self._storage.write_text_atomic(problem_uri(self._output, str(uri)), note)
                continue
            yield table.append_column(
                pa.field(SOURCE, pa.int16()), pa.array(np.full(table.num_rows, source, np.int16))
            )


def write_reused(
    matched: pa.Table, *, storage: Storage, output: str, score_columns: list[str], chunked: bool
) -> pa.Table:
    """Stage 4, once per shard: its matched rows, one stored score each (the newest source's, then
    the first), written for the tokenize stage; returns (`shard`, `pairs`)."""
    schema = reused_schema(score_columns, chunked)
    shard = int(matched.column("shard")[0].as_py())
    rows = matched.column("row").to_numpy()
    source = matched.column(SOURCE).to_numpy()
    order = np.lexsort((source, rows))
    first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
    table = matched.take(pa.array(first)).select(schema.names).cast(schema)
    storage.write_parquet_atomic(reused_uri(output, shard), table)
    return pa.table({"shard": pa.array([shard], pa.int32()), "pairs": pa.array([table.num_rows])})


class JoinInOneTask:
    """The whole lookup in one task, for a night whose keys and stored scores fit one join
    partition (`build.build_lookup` decides): stages 1, 2 and 4 as above, the join in memory
    (pyarrow's hash join). It holds no more than one partition of the distributed join would, and
    saves that join's start-up (its shuffle actors: seconds on a small node)."""

    def __init__(self, keys: ShardKeys, stores: ReadStores, write: dict[str, Any]) -> None:
        self._keys, self._stores, self._write = keys, stores, write

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        keys = pa.concat_tables(
            [KEYS_SCHEMA.empty_table(), *self._keys({"shards": batch["shards"], "uris": batch["uris"]})]
        )
        stored = list(self._stores({"uri": batch["store_uri"][0], SOURCE: batch[SOURCE][0]}))
        if not stored or not keys.num_rows:
            return
        matched = keys.join(pa.concat_tables(stored), keys=list(KEY_COLUMNS), join_type="inner")
        matched = matched.sort_by("shard")
        shards = matched.column("shard").to_numpy()
        bounds = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            yield write_reused(matched.slice(start, end - start), **self._write)


def read_reused(storage: Storage, uri: str, score_columns: list[str], chunked: bool) -> pa.Table:
    """A shard's reused rows, as `WriteReused` wrote them (the tokenize stage's side)."""
    return storage.read_table(uri).select(reused_schema(score_columns, chunked).names)


def lookup_notes(storage: Storage, output: str) -> list[str]:
    """The notes `ReadStores` left: one per store file skipped."""
    root = join(output, f"{REUSE}/{PROBLEMS}")
    return [storage.read_text(join(root, rel)) for rel in storage.list_files(root)]


def store_items(files: list[list[str]]) -> list[dict[str, Any]]:
    """The store files of each source (newest first) as items of the lookup plan."""
    return [{"uri": uri, SOURCE: i} for i, uris in enumerate(files) for uri in uris]
