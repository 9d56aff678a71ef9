"""bench/gpu.py's generated corpus: Parquet shards of (query, passage) pairs with realistic lengths.

Queries have 5-15 words; passages are log-normal with a median of 150 words (sigma 0.7: about 9%
of pairs run past 512 tokens and are truncated), 20 candidates per query. Words are drawn from a
syllable vocabulary like the one the test tokenizers were trained on, so the tiny tokenizers the
benchmark uses (no hub access on a GPU machine) split them at about 1.3-1.7 tokens per word, close
to a real tokenizer on English. Seeded: the same arguments give the same shards.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ter",
    "sun",
    "ra",
    "vel",
    "on",
    "is",
    "qu",
    "ant",
    "zo",
    "pe",
    "dre",
    "ul",
    "ix",
    "bar",
    "nem",
    "to",
    "see",
    "wha",
    "gr",
    "ai",
    "ne",
]
CANDIDATES = 20
PASSAGE_MEDIAN_WORDS = 150
PASSAGE_SIGMA = 0.7
MAX_WORDS = 2000


def vocabulary(seed: int = 7, size: int = 3000) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size)]


def make_corpus(
    directory: Path, pairs: int, shards: int, seed: int = 0, median_words: int = PASSAGE_MEDIAN_WORDS
) -> list[Path]:
    """Writes about `pairs` pairs (whole queries of 20 candidates) into `shards` shards; returns
    their paths. A query's candidates live in one shard; passages have `median_words` words at
    the median."""
    rng = random.Random(seed)
    words = vocabulary()
    directory.mkdir(parents=True, exist_ok=True)
    queries = max(shards, math.ceil(pairs / CANDIDATES))
    paths = []
    for s in range(shards):
        rows: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "passage": []}
        for q in range(s, queries, shards):
            query = " ".join(rng.choices(words, k=rng.randint(5, 15)))
            for c in range(CANDIDATES):
                mu = math.log(median_words)
                n_words = max(1, min(MAX_WORDS, int(rng.lognormvariate(mu, PASSAGE_SIGMA))))
                rows["query_id"].append(f"q{q:06d}")
                rows["query"].append(query)
                rows["doc_id"].append(f"d{q:06d}-{c:02d}")
                rows["passage"].append(" ".join(rng.choices(words, k=n_words)))
        path = directory / f"part-{s:04d}.parquet"
        pq.write_table(pa.table(rows), path, row_group_size=2048)
        paths.append(path)
    return paths


def length_stats(lengths: np.ndarray, max_length: int) -> dict[str, float]:
    """Token lengths of the tokenized pairs (specials included), as the report shows them."""
    lengths = np.asarray(lengths)
    return {
        "pairs": int(len(lengths)),
        "mean_tokens": round(float(lengths.mean()), 1),
        "p50_tokens": int(np.percentile(lengths, 50)),
        "p95_tokens": int(np.percentile(lengths, 95)),
        # truncated pairs are the longest: max_length (encoders), or max_length plus the prompt
        # that decoders always keep
        "truncated_share": round(float((lengths == lengths.max()).mean()), 4)
        if lengths.max() >= max_length
        else 0.0,
    }
