"""A query's candidates must live in one shard: find query ids that appear in several shards.

Each shard's distinct query ids are kept as a sorted array of 64-bit hashes (8 bytes a query, in
its done-marker once published), never the ids themselves, so planning holds a fixed-size digest
per query however large the corpus is, and a rerun checks new shards against done ones without
re-reading them. The ids behind a split hash are read back only to name them in the error.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _hash(query_id: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(query_id).encode(), digest_size=8).digest(), "little")


def query_id_hashes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The sorted distinct hashes (uint64) of a shard's query ids; nulls are not ids (their rows
    are quarantined), so they never make a query look split."""
    hashes = np.fromiter((_hash(q) for q in pc.unique(column.drop_null()).to_pylist()), dtype=np.uint64)
    return np.unique(hashes)


def each_query_id_hash(values: pa.Array) -> np.ndarray:
    """The hash (uint64) of each value, as `query_id_hashes` hashes it; a null hashes to 0."""
    return np.fromiter((0 if q is None else _hash(q) for q in values.to_pylist()), np.uint64, len(values))


def names_of(column: pa.ChunkedArray | pa.Array, hashes: set[int]) -> dict[int, Any]:
    """hash -> query id, for the given hashes found in `column` (to name them in a message)."""
    return {h: q for q in pc.unique(column).to_pylist() if (h := _hash(q)) in hashes}


def encode_hashes(hashes: np.ndarray) -> str:
    return base64.b64encode(np.sort(np.asarray(hashes, dtype=np.uint64)).tobytes()).decode()


def decode_hashes(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint64)


def split_queries(shard_hashes: dict[str, np.ndarray]) -> dict[int, list[str]]:
    """Hashes seen in more than one shard -> the shards (relative paths, sorted) holding them."""
    names = sorted(shard_hashes)
    if not names:
        return {}
    values = np.concatenate([np.unique(shard_hashes[n]).astype(np.uint64) for n in names])
    owners = np.concatenate([np.full(len(np.unique(shard_hashes[n])), i) for i, n in enumerate(names)])
    order = np.argsort(values, kind="stable")
    values, owners = values[order], owners[order]
    repeated = np.flatnonzero(values[1:] == values[:-1])
    out: dict[int, list[str]] = {}
    for h in np.unique(values[np.concatenate([repeated, repeated + 1])]):
        lo, hi = np.searchsorted(values, h, "left"), np.searchsorted(values, h, "right")
        out[int(h)] = [names[i] for i in owners[lo:hi]]
    return out
