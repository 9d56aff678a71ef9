"""Synthetic corpora: Parquet shards of (query, passage) pairs, seeded (the same arguments give the
same bytes). `rerank demo` scores the default one; the benchmarks change the words, the lengths and
the number of pairs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.demo.words import WORDS

SOURCES = ("web", "wiki", "news")


@dataclass(frozen=True)
class LogNormalWords:
    """Passage lengths in words: log-normal (median e^mu), clipped to [least, most]."""

    mu: float
    sigma: float
    least: int = 1
    most: int = 2000

    def __call__(self, rng: random.Random) -> int:
        return max(self.least, min(self.most, int(rng.lognormvariate(self.mu, self.sigma))))


# the demo's passages: a median of ~60 words with a long tail past 512 tokens
DEMO_PASSAGE_WORDS = LogNormalWords(mu=4.1, sigma=0.8)


def shard_path(directory: Path, shard: int) -> Path:
    """Where `make_corpus` writes shard number `shard`."""
    return directory / f"part-{shard:05d}.parquet"


def make_corpus(
    directory: Path,
    queries: int,
    candidates: int,
    shards: int,
    seed: int = 0,
    *,
    words: Sequence[str] = WORDS,
    query_words: tuple[int, int] = (3, 12),
    passage_words: Callable[[random.Random], int] = DEMO_PASSAGE_WORDS,
    sources: Sequence[str] = SOURCES,
) -> int:
    """Writes `shards` Parquet shards (`shard_path`) of `queries` x `candidates` pairs; returns
    the number of rows written.

    Query q goes to shard q % shards, so every query's candidates live in one shard. Queries have
    `query_words` words (uniform, both ends included), passages `passage_words(rng)` words, all
    drawn from `words`. With `sources`, a `source` column (drawn from them) passes through the job.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for s in range(shards):
        rows: dict[str, list[Any]] = {"query_id": [], "query": [], "doc_id": [], "passage": []}
        if sources:
            rows["source"] = []
        for q in range(s, queries, shards):
            query = " ".join(rng.choices(words, k=rng.randint(*query_words)))
            for c in range(candidates):
                n_words = passage_words(rng)
                rows["query_id"].append(f"q{q:06d}")
                rows["query"].append(query)
                rows["doc_id"].append(f"d{q:06d}-{c:03d}")
                rows["passage"].append(" ".join(rng.choices(words, k=n_words)))
                if sources:
                    rows["source"].append(rng.choice(sources))
        pq.write_table(pa.table(rows), shard_path(directory, s), row_group_size=2000)
        total += len(rows["query_id"])
    return total
