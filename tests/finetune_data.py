"""Synthetic fine-tuning data where relevance is learnable: the positive passage contains the
query's words, the negatives do not. Words are single tokens of the tiny test models' vocabularies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import MODELS


def vocabulary() -> list[str]:
    """Whole-word tokens of tiny-bert's vocabulary (also plain text for tiny-gemma)."""
    words = (MODELS / "tiny-bert" / "vocab.txt").read_text().split()
    return sorted({w for w in words if w.isalpha() and w.islower() and 3 <= len(w) <= 8})


def synthetic_records(n_queries: int, negatives: int, seed: int, vocab_size: int = 40) -> list[dict]:
    """FlagEmbedding JSONL records: {"query", "pos": [1], "neg": [negatives]}. Query words come from
    one part of the vocabulary, filler words from another: the positive holds the query's words
    among fillers, the negatives only fillers. Held-out queries are new combinations."""
    rng = random.Random(seed)
    words = vocabulary()
    query_words, others = words[:vocab_size], words[vocab_size : 2 * vocab_size]
    records = []
    for _ in range(n_queries):
        query = rng.sample(query_words, 2)

        def filler(k: int, others: list[str] = others) -> list[str]:
            return rng.sample(others, k)

        pos = query + filler(3)
        rng.shuffle(pos)
        negs = [" ".join(filler(5)) for _ in range(negatives)]
        records.append({"query": " ".join(query), "pos": [" ".join(pos)], "neg": negs})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def records_to_shard(path: Path, records: list[dict], prefix: str = "q") -> Path:
    """The records as one long-format input shard (query_id, query, doc_id, passage, is_pos)."""
    rows: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "passage": [], "is_pos": []}
    for qi, r in enumerate(records):
        for di, (passage, is_pos) in enumerate(
            [(p, True) for p in r["pos"]] + [(n, False) for n in r["neg"]]
        ):
            rows["query_id"].append(f"{prefix}{qi}")
            rows["query"].append(r["query"])
            rows["doc_id"].append(f"{prefix}{qi}-d{di}")
            rows["passage"].append(passage)
            rows["is_pos"].append(is_pos)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)
    return path
