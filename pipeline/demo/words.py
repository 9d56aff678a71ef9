"""The words generated text is made of. Standard library only: the test assets' tokenizer script
(tests/assets/make_tiny_models.py) imports this in a side venv that lacks the job's dependencies."""

from __future__ import annotations

import random
from collections.abc import Sequence

# real English words, one token each in the MiniLM-L6 vocabulary: the demo's and the CPU benchmarks'
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "it",
    "was",
    "which",
    "not",
    "but",
    "search",
    "index",
    "query",
    "passage",
    "model",
    "score",
    "rank",
    "neural",
    "network",
    "retrieval",
    "document",
    "answer",
    "engine",
    "vector",
    "token",
    "batch",
    "shard",
    "cluster",
    "storage",
    "data",
    "night",
    "job",
    "throughput",
    "latency",
    "python",
    "river",
    "mountain",
    "history",
    "science",
    "music",
    "city",
    "energy",
    "market",
    "health",
    "water",
    "language",
]

# syllables of made-up words: the tiny test tokenizers were trained on words built from them
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


def syllable_word(rng: random.Random, syllables: Sequence[str] = SYLLABLES, max_syllables: int = 4) -> str:
    """A made-up word of 1 to `max_syllables` syllables drawn from `syllables`."""
    return "".join(rng.choice(syllables) for _ in range(rng.randint(1, max_syllables)))
