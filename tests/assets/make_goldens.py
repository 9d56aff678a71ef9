"""Computes FlagEmbedding 1.4.2 golden scores for the tiny encoder rerankers.

FlagEmbedding does not import under transformers 5, so this runs only in the side venv
(transformers 4.57.6), never in the job or in CI:

    make goldens        # or: .venv-flag/bin/python tests/assets/make_goldens.py

It writes tests/assets/goldens/encoder.json: for each (model, max_length, query_max_length) case,
the pairs, FlagEmbedding's token ids for each pair and its `compute_score` outputs (fp32, raw and
normalize=True). tests/unit/test_parity.py checks our tokenization and scores against it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from FlagEmbedding import FlagReranker
from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

ASSETS = Path(__file__).resolve().parent
SEED = 7

# (model, max_length, query_max_length or None for FlagEmbedding's default max_length * 3 // 4)
CASES = [
    ("tiny-bert", 512, None),
    ("tiny-bert", 64, None),
    ("tiny-xlmr", 512, None),
    ("tiny-xlmr", 64, 20),
]


def make_pairs() -> list[list[str]]:
    """Short pairs, passages far past 512 tokens, queries past the query cap, non-ASCII text."""
    rng = random.Random(SEED)
    syll = ["ka", "lo", "mi", "ter", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre", "bar"]

    def words(n: int) -> str:
        return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(n))

    pairs = [
        ["what is kalo", "kalo is a sunra of the velon."],
        ["how does zo pe work?", "short"],
        ["café naïve", "Ünïcödé text — with dashes, emoji 🙂 and עברית"],
        ["", "empty query still scores"],
    ]
    for n_q, n_p in [(3, 20), (8, 60), (12, 300), (5, 900), (60, 50), (200, 400), (1, 1)]:
        pairs.append([words(n_q), words(n_p)])
    for _ in range(12):
        pairs.append([words(rng.randint(2, 15)), words(int(rng.lognormvariate(4.0, 1.0)) + 1)])
    return pairs


def golden_case(model: str, max_length: int, query_max_length: int | None, pairs: list) -> dict:
    reranker = FlagReranker(str(ASSETS / "models" / model), use_fp16=False, devices=["cpu"])
    qmax = query_max_length if query_max_length is not None else max_length * 3 // 4
    tok = reranker.tokenizer
    input_ids = []
    for query, passage in pairs:
        q = tok(query, add_special_tokens=False, max_length=qmax, truncation=True)["input_ids"]
        p = tok(passage, add_special_tokens=False, max_length=max_length, truncation=True)["input_ids"]
        item = prepare_for_model_compat(
            tok, q, p, truncation="only_second", max_length=max_length, padding=False
        )
        input_ids.append(list(item["input_ids"]))
    kwargs = {"max_length": max_length, "batch_size": 8}
    if query_max_length is not None:
        kwargs["query_max_length"] = query_max_length
    raw = reranker.compute_score(pairs, **kwargs)
    norm = reranker.compute_score(pairs, normalize=True, **kwargs)
    return {
        "model": model,
        "max_length": max_length,
        "query_max_length": qmax,
        "input_ids": input_ids,
        "scores": [float(s) for s in raw],
        "scores_normalized": [float(s) for s in norm],
    }


def main() -> int:
    torch.manual_seed(0)
    pairs = make_pairs()
    cases = [golden_case(m, ml, qml, pairs) for m, ml, qml in CASES]
    out = ASSETS / "goldens" / "encoder.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"flagembedding": "1.4.2", "pairs": pairs, "cases": cases}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
