"""The score store: beside each output shard, the score of every pair the run scored or reused.

OUTPUT/_rerank/scores/<relpath>.parquet holds, per pair with a score (the rows `--top-k` drops
included; quarantined rows and those a cascade left unscored not), its key (`keys.py`), its score
column(s) (`score`, or `score_l<K>` per cutoff layer) and in chunk mode `chunks` and
`best_chunk_char`. The file's Parquet metadata carries the store format and the run's scoring
identity (`identity.py`). It is written after its output shard and before the shard's done-marker,
so a killed run's store is exactly as consistent as its output: a shard without a marker is redone,
store and all.

A file that cannot be read, is cut short, or holds another format or identity is `UnusableStore`:
the reader skips it (its pairs are scored) and says why; it never yields a wrong score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import Storage, join
from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS
from pipeline.rerank.output.paths import SCORES
from pipeline.rerank.reuse.identity import STORE_FORMAT
from pipeline.rerank.reuse.keys import KEY_COLUMNS, KEY_FIELDS, key_columns

FORMAT_KEY, IDENTITY_KEY, DIGEST_KEY = (
    b"rerank.store.format",
    b"rerank.store.identity",
    b"rerank.store.digest",
)
CHUNK_FIELDS = [pa.field(CHUNKS, pa.int16()), pa.field(BEST_CHUNK_CHAR, pa.int32())]


@dataclass(frozen=True)
class StoreIdentity:
    """The scoring identity every store file of a run carries (`identity.py`) and its digest."""

    identity: dict[str, Any]
    digest: str

    def manifest(self) -> dict[str, Any]:
        """What `_SUCCESS` says of the run's store: a later --reuse checks it first."""
        return {"format": STORE_FORMAT, "digest": self.digest, "identity": self.identity}


class UnusableStore(Exception):
    """A store file that gives no scores; the message says why."""


def store_uri(output: str, relpath: str) -> str:
    return join(output, f"{SCORES}/{relpath}")


def store_schema(score_columns: list[str], chunked: bool) -> pa.Schema:
    return pa.schema(
        [*KEY_FIELDS, *[pa.field(c, pa.float32()) for c in score_columns], *(CHUNK_FIELDS if chunked else [])]
    )


def store_table(
    queries: list[str],
    passages: list[str],
    scores: np.ndarray,
    score_columns: list[str],
    chunks: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """The store rows of these pairs (each with its score row, and chunk mode's columns), one per
    key: a pair given twice is stored once."""
    columns: dict[str, Any] = {
        **key_columns(queries, passages),
        **{c: pa.array(scores[:, i], pa.float32()) for i, c in enumerate(score_columns)},
        **(chunks or {}),
    }
    table = pa.Table.from_pydict(columns, schema=store_schema(score_columns, chunks is not None))
    return first_per_key(table)


def first_per_key(table: pa.Table) -> pa.Table:
    """The table with only the first row of each key."""
    if table.num_rows < 2:
        return table
    hi, lo = (table.column(k).to_numpy() for k in KEY_COLUMNS)
    keys = np.stack([hi, lo], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    if len(first) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(first)))


def with_identity(table: pa.Table, identity: dict[str, Any], digest: str) -> pa.Table:
    return table.replace_schema_metadata(
        {
            FORMAT_KEY: str(STORE_FORMAT).encode(),
            IDENTITY_KEY: json.dumps(identity, sort_keys=True).encode(),
            DIGEST_KEY: digest.encode(),
        }
    )


def write_store(storage: Storage, uri: str, table: pa.Table, identity: StoreIdentity) -> int:
    """Publishes one shard's store atomically; returns its bytes."""
    return storage.write_parquet_atomic(uri, with_identity(table, identity.identity, identity.digest))


def read_store(storage: Storage, uri: str, digest: str, score_columns: list[str], chunked: bool) -> pa.Table:
    """The rows of one store file made with the identity `digest`, with the columns this run needs;
    `UnusableStore` (saying why) for anything else."""
    try:
        table = storage.read_table(uri)
    except FileNotFoundError:
        raise UnusableStore(f"store file {uri} is gone") from None
    except Exception as e:  # truncated, corrupt, not Parquet: whatever pyarrow or the storage says
        raise UnusableStore(f"store file {uri} cannot be read ({type(e).__name__}: {e})") from None
    meta = table.schema.metadata or {}
    found = meta.get(FORMAT_KEY, b"none").decode(errors="replace")
    if found != str(STORE_FORMAT):
        raise UnusableStore(f"store file {uri} is of store format {found}, this version reads {STORE_FORMAT}")
    if meta.get(DIGEST_KEY, b"").decode(errors="replace") != digest:
        raise UnusableStore(f"store file {uri} was made with another scoring identity")
    wanted = store_schema(score_columns, chunked)
    missing = [f.name for f in wanted if f.name not in table.column_names]
    if missing:
        raise UnusableStore(f"store file {uri} lacks column(s) {missing}")
    try:
        table = table.select(wanted.names).cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise UnusableStore(f"store file {uri} has columns of other types ({e})") from None
    if any(pc.any(pc.is_null(table.column(k))).as_py() for k in KEY_COLUMNS):
        raise UnusableStore(f"store file {uri} holds rows without a key")
    return table.replace_schema_metadata(None)
