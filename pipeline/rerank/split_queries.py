"""A query's candidates must live in one shard: find query ids that appear in several shards.

Each shard's distinct query ids are kept as 64-bit hashes (in its done-marker once published), so
a rerun checks new shards against done ones without re-reading them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def query_id_hashes(column: pa.ChunkedArray | pa.Array) -> dict[int, Any]:
    """Hash -> query id, for the distinct query ids of a shard."""
    return {
        int.from_bytes(hashlib.blake2b(repr(q).encode(), digest_size=8).digest(), "little"): q
        for q in pc.unique(column).to_pylist()
    }


def encode_hashes(hashes: list[int] | set[int]) -> str:
    return base64.b64encode(np.array(sorted(hashes), dtype=np.uint64).tobytes()).decode()


def decode_hashes(text: str) -> set[int]:
    return {int(h) for h in np.frombuffer(base64.b64decode(text), dtype=np.uint64)}


def split_queries(shard_hashes: dict[str, set[int]]) -> dict[int, list[str]]:
    """Hashes seen in more than one shard -> the shards (relative paths) holding them."""
    seen: dict[int, list[str]] = {}
    for relpath, hashes in sorted(shard_hashes.items()):
        for h in hashes:
            seen.setdefault(h, []).append(relpath)
    return {h: shards for h, shards in seen.items() if len(shards) > 1}
