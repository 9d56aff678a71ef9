"""The score store's key: a fixed-size hash of the exact query and passage text the scorer saw.

128 bits (BLAKE2b), held as two uint64 columns (`key_hi`, `key_lo`) that any join engine takes:
at 10^9 pairs a night the chance of any two pairs sharing a key is below 10^-20, where a 64-bit
key would give one collision (a wrong score) every few dozen nights. The key is the text alone;
what the text was scored with (model, template, lengths, dtype, ...) is the store's identity
(`identity.py`), checked per file. The same text gives the same key in every process and on every
machine (no salted `hash()`), whatever its query and doc ids.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

KEY_HI, KEY_LO = "key_hi", "key_lo"
KEY_COLUMNS = (KEY_HI, KEY_LO)
KEY_FIELDS = [pa.field(KEY_HI, pa.uint64()), pa.field(KEY_LO, pa.uint64())]


def pair_key(query: str, passage: str) -> bytes:
    """The 16-byte key of one pair: the query's length first, so ("ab", "c") and ("a", "bc") differ."""
    q = query.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(struct.pack("<Q", len(q)), digest_size=16)
    h.update(q)
    h.update(passage.encode("utf-8", "surrogatepass"))
    return h.digest()


def pair_keys(queries: Sequence[str], passages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(key_hi, key_lo) of each pair, as uint64 arrays."""
    raw = b"".join(pair_key(q, p) for q, p in zip(queries, passages, strict=True))
    halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    if not len(queries):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return halves[:, 0].copy(), halves[:, 1].copy()


def key_columns(queries: Sequence[str], passages: Sequence[str]) -> dict[str, pa.Array]:
    hi, lo = pair_keys(queries, passages)
    return {KEY_HI: pa.array(hi, pa.uint64()), KEY_LO: pa.array(lo, pa.uint64())}
