"""`--diff-against PREV_OUTPUT`: which of an earlier run's output shards each shard of this run
compares with, decided on the driver from query-id hashes alone, before anything is written.

Every done-marker keeps the sorted 64-bit hashes of its shard's query ids (the split-query check,
pipeline/rerank/input/split_queries.py); so does every marker of the earlier run. A shard of this
run reads the earlier shards that share a query with it (usually the one of the same path): rows are
matched by (query_id, doc_id) across shards, so a query that moved shard is compared with its old
rows, not reported as all removed plus all added. The queries no shard of this run holds any more
are `gone`: the shard of the same path lists them as removed, or, where this run has no shard of
that path, a change file of their own is written at the end (`gone_reads`).

The driver holds 12 bytes per earlier query (hash, shard), as planning holds 8 per query of this
run: what it holds grows with the queries, never with the rows.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.layout import flatten_shard
from pipeline.rerank.input.split_queries import decode_hashes, each_query_id_hash, encode_hashes
from pipeline.rerank.output.bookkeeping import Damaged
from pipeline.rerank.output.checkpoint import read_markers, shard_output_uri
from pipeline.rerank.reuse.sources import read_success

log = logging.getLogger(__name__)

RANKED = ("score", "rank")  # what a change or a drift figure reads of an output row, beside its ids


@dataclass(frozen=True)
class PreviousRead:
    """An earlier output shard one shard of this run reads: its rows of that shard's queries, and,
    with `gone` (encoded hashes), the rows of those queries no shard of this run holds."""

    uri: str
    relpath: str
    gone: str = ""


@dataclass(frozen=True)
class PreviousRun:
    """The earlier run compared with: its OUTPUT, its shards, which shard holds which query."""

    uri: str
    relpaths: list[str]
    hashes: np.ndarray  # every earlier query's hash, sorted
    owner: np.ndarray  # per hash: the index in `relpaths` of the shard holding it
    success: dict[str, Any] = field(default_factory=dict)  # its _SUCCESS

    @property
    def quality(self) -> dict[str, Any] | None:
        """The quality figures it recorded on its judged queries, if it had any."""
        return self.success.get("quality")


def open_previous(storage: Storage, uri: str, output: str) -> PreviousRun | None:
    """The earlier run to compare with, or None (one warning saying why: no change files then)."""
    if uri.rstrip("/") == output.rstrip("/"):
        log.warning("--diff-against %s skipped: it is this run's own OUTPUT", uri)
        return None
    success = read_success(storage, uri)
    if isinstance(success, str):
        log.warning("--diff-against %s skipped, no change files are written: %s", uri, success)
        return None
    relpaths = sorted(s["path"] for s in success.get("shards", []))
    markers = read_markers(storage, uri, relpaths)
    parts, owners = [], []
    for i, (rel, marker) in enumerate(zip(relpaths, markers, strict=True)):
        encoded = marker.get("query_id_hashes") if isinstance(marker, dict) else None
        if not encoded:
            why = marker if isinstance(marker, Damaged) else "it keeps no query-id hashes (an older version)"
            log.warning("--diff-against %s skipped, no change files are written: shard %s: %s", uri, rel, why)
            return None
        hashes = decode_hashes(encoded)
        parts.append(hashes)
        owners.append(np.full(len(hashes), i, np.int32))
    hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    owner = np.concatenate(owners) if owners else np.zeros(0, np.int32)
    order = np.argsort(hashes, kind="stable")
    return PreviousRun(uri, relpaths, hashes[order], owner[order], success)


def holders(prev: PreviousRun, hashes: np.ndarray) -> np.ndarray:
    """The earlier shards (indices) holding any of these query hashes (one shard each, or several
    where the earlier run allowed split queries)."""
    left = np.searchsorted(prev.hashes, hashes, "left")
    counts = np.searchsorted(prev.hashes, hashes, "right") - left
    starts = np.cumsum(counts) - counts
    at = np.repeat(left, counts) + np.arange(counts.sum()) - np.repeat(starts, counts)
    return np.unique(prev.owner[at])


def routing_digest(prev: PreviousRun, current: dict[str, np.ndarray]) -> str:
    """What the change files are made against: the earlier run and every query of this run. A done
    shard whose change file was routed otherwise (a shard then unreadable, an input changed since)
    is compared again at the end of the run."""
    everything = np.unique(np.concatenate([*current.values(), np.zeros(0, np.uint64)]))
    h = hashlib.blake2b(prev.uri.rstrip("/").encode(), digest_size=16)
    h.update(np.ascontiguousarray(everything, np.uint64).tobytes())
    return h.hexdigest()


def plan_reads(
    prev: PreviousRun, current: dict[str, np.ndarray]
) -> tuple[dict[str, list[PreviousRead]], list[PreviousRead]]:
    """Per shard of this run (`current`: relpath -> its sorted query hashes), the earlier shards it
    reads; and the reads of earlier shards whose gone queries no shard of this run has the path of
    (each becomes a change file of removed rows, `OUTPUT/_changes/<that path>.parquet`)."""
    everything = np.unique(np.concatenate([*current.values(), np.zeros(0, np.uint64)]))
    gone = ~np.isin(prev.hashes, everything, assume_unique=False)
    gone_by_shard = by_owner(prev.hashes[gone], prev.owner[gone])
    index = {rel: i for i, rel in enumerate(prev.relpaths)}
    reads: dict[str, list[PreviousRead]] = {}
    for rel, hashes in current.items():
        found = [int(i) for i in holders(prev, hashes)]
        same = index.get(rel)
        if same is not None and same in gone_by_shard and same not in found:
            found.append(same)
        reads[rel] = [
            PreviousRead(
                shard_output_uri(prev.uri, prev.relpaths[i]),
                prev.relpaths[i],
                encode_hashes(gone_by_shard[i]) if i == same and i in gone_by_shard else "",
            )
            for i in sorted(found)
        ]
    orphans = [
        PreviousRead(shard_output_uri(prev.uri, prev.relpaths[i]), prev.relpaths[i], encode_hashes(h))
        for i, h in sorted(gone_by_shard.items())
        if prev.relpaths[i] not in current
    ]
    return reads, orphans


def by_owner(hashes: np.ndarray, owner: np.ndarray) -> dict[int, np.ndarray]:
    """owner -> its hashes (sorted), in one sort."""
    order = np.lexsort((hashes, owner))
    hashes, owner = hashes[order], owner[order]
    bounds = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1], True]) if len(owner) else np.zeros(1, int)
    return {int(owner[a]): np.unique(hashes[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)}


def ranked_rows(storage: Storage, uri: str, columns: InputConfig) -> pa.Table:
    """An output shard's (query_id, doc_id, score, rank), one row per candidate (nested: flattened)."""
    wanted = [columns.query_id_column, columns.doc_id_column, *RANKED]
    if columns.layout == "long":
        return storage.read_table(uri, columns=wanted)
    return flatten_shard(storage.read_table(uri), columns).flat.select(wanted)


MAX_CACHED_ROWS = 2_000_000  # earlier rows a process keeps read (ids, score, rank, hash: ~40 B a row)


class EarlierShards:
    """The earlier shards this process has read, each with its rows' query hashes, newest used
    kept, up to MAX_CACHED_ROWS rows: the shards of a run whose queries moved between shards read
    the same earlier shards, each once per writer, not once per shard of this run. Held by the
    run's `Comparison` (never pickled), so it never outlives the run."""

    def __init__(self, max_rows: int = MAX_CACHED_ROWS) -> None:
        self._held: OrderedDict[str, tuple[pa.Table, np.ndarray, np.ndarray]] = OrderedDict()
        self._rows, self._max_rows = 0, max_rows
        self._lock = threading.Lock()  # the end of a run compares done shards in threads

    def get(
        self, storage: Storage, uri: str, columns: InputConfig
    ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """The shard's rows, its distinct query hashes (sorted) and each row's index among them."""
        with self._lock:
            found = self._held.get(uri)
            if found is not None:
                self._held.move_to_end(uri)
                return found
        table = ranked_rows(storage, uri, columns)  # read outside the lock: reads go on in parallel
        distinct, inverse = np.unique(row_hashes(table.column(columns.query_id_column)), return_inverse=True)
        found = (table, distinct, inverse)
        with self._lock:
            if uri not in self._held:
                self._held[uri] = found
                self._rows += table.num_rows
            while self._rows > self._max_rows and len(self._held) > 1:
                _, (dropped, _, _) = self._held.popitem(last=False)
                self._rows -= dropped.num_rows
        return found


def read_previous(
    storage: Storage,
    reads: list[PreviousRead],
    own: np.ndarray,
    columns: InputConfig,
    cache: EarlierShards | None = None,
) -> pa.Table:
    """The earlier rows one shard of this run compares with: those of its queries (`own`: their
    sorted hashes) and those of the gone queries its reads name."""
    cache = cache if cache is not None else EarlierShards()
    tables = []
    for read in reads:
        table, distinct, inverse = cache.get(storage, read.uri, columns)
        wanted = own if not read.gone else np.union1d(own, decode_hashes(read.gone))
        tables.append(table.filter(pa.array(np.isin(distinct, wanted)[inverse])))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def row_hashes(column: pa.ChunkedArray) -> np.ndarray:
    """Each row's query-id hash (as the split-query check hashes ids), hashed once per distinct
    id; a null id hashes to 0."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="mask")
    distinct = each_query_id_hash(encoded.dictionary)
    if not len(distinct):
        return np.zeros(len(column), np.uint64)
    indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
    valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, distinct[indices], np.uint64(0))
