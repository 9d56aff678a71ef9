"""The GPU benchmark's generated corpus: Parquet shards of (query, passage) pairs with realistic lengths.

Queries have 5-15 words; passages are log-normal with a median of 150 words (sigma 0.7: about 9%
of pairs run past 512 tokens and are truncated), 20 candidates per query. Words are made of the
syllables the test tokenizers were trained on (pipeline.demo.words), so the tiny tokenizers the
benchmark uses (no hub access on a GPU machine) split them at about 1.3-1.7 tokens per word, close
to a real tokenizer on English. Seeded: the same arguments give the same shards.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from pipeline.demo.corpus import LogNormalWords, shard_path
from pipeline.demo.corpus import make_corpus as write_corpus
from pipeline.demo.words import syllable_word

CANDIDATES = 20
PASSAGE_MEDIAN_WORDS = 150
PASSAGE_SIGMA = 0.7
MAX_WORDS = 2000


def vocabulary(seed: int = 7, size: int = 3000) -> list[str]:
    rng = random.Random(seed)
    return [syllable_word(rng) for _ in range(size)]


def make_corpus(
    directory: Path, pairs: int, shards: int, seed: int = 0, median_words: int = PASSAGE_MEDIAN_WORDS
) -> list[Path]:
    """Writes about `pairs` pairs (whole queries of 20 candidates) into `shards` shards; returns
    their paths. A query's candidates live in one shard; passages have `median_words` words at
    the median."""
    write_corpus(
        directory,
        queries=max(shards, math.ceil(pairs / CANDIDATES)),
        candidates=CANDIDATES,
        shards=shards,
        seed=seed,
        words=vocabulary(),
        query_words=(5, 15),
        passage_words=LogNormalWords(math.log(median_words), PASSAGE_SIGMA, most=MAX_WORDS),
        sources=(),
    )
    return [shard_path(directory, s) for s in range(shards)]


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
