"""Peers' scoring calls, timed on the same pairs; runs in the side venv (.venv-flag), not the main one.

    .venv-flag/bin/python bench/peers.py flagembedding INPUT_DIR MODEL_DIR [--threads N] [--device cpu]
    .venv-flag/bin/python bench/peers.py sentence-transformers INPUT_DIR MODEL_DIR [--threads N]

FlagEmbedding 1.4.2 needs transformers 4.x, so it cannot share the job's venv (transformers 5);
bench/throughput.py starts this script once per peer. The pairs are the (query, passage) columns of
the Parquet shards in INPUT_DIR, in sorted file order. The model is loaded, one short warm-up call
runs, then only the peer's own scoring call is timed (it includes the peer's tokenization, which its
API does not let one separate):
  flagembedding          FlagReranker.compute_score(pairs, batch_size=128, max_length=512)
  sentence-transformers  CrossEncoder(max_length=512, activation identity).predict(pairs, batch_size=32)
Prints one JSON line on stdout: peer, pairs, seconds, pairs_per_s (or error, with exit code 3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import torch

Scorer = Callable[[list[list[str]]], object]
WARMUP_PAIRS = 16


def read_pairs(input_dir: Path) -> list[list[str]]:
    """(query, passage) pairs of every shard in INPUT_DIR, shards in sorted name order."""
    pairs: list[list[str]] = []
    for path in sorted(input_dir.glob("*.parquet")):
        table = pq.read_table(path, columns=["query", "passage"])
        queries = table.column("query").to_pylist()
        passages = table.column("passage").to_pylist()
        pairs += [[q, p] for q, p in zip(queries, passages, strict=True)]
    return pairs


def flagembedding_scorer(model_dir: str, device: str) -> Scorer:
    from FlagEmbedding import FlagReranker

    reranker = FlagReranker(model_dir, use_fp16=device.startswith("cuda"), devices=[device])
    return lambda pairs: reranker.compute_score(pairs, batch_size=128, max_length=512)


def sentence_transformers_scorer(model_dir: str, device: str) -> Scorer:
    from sentence_transformers import CrossEncoder

    model_kwargs = {"torch_dtype": torch.float16} if device.startswith("cuda") else None
    model = CrossEncoder(
        model_dir,
        device=device,
        max_length=512,
        activation_fn=torch.nn.Identity(),  # raw logits, like the job and FlagEmbedding
        model_kwargs=model_kwargs,
    )
    return lambda pairs: model.predict(pairs, batch_size=32, show_progress_bar=False)


SCORERS: dict[str, Callable[[str, str], Scorer]] = {
    "flagembedding": flagembedding_scorer,
    "sentence-transformers": sentence_transformers_scorer,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", choices=sorted(SCORERS))
    ap.add_argument("input_dir", type=Path, help="directory of Parquet shards (query, passage columns)")
    ap.add_argument("model_dir", help="the model directory every contender uses")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:0")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"peer": args.peer, "error": f"no CUDA in this venv (torch {torch.__version__})"}))
        return 3
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = read_pairs(args.input_dir)
    score = SCORERS[args.peer](args.model_dir, args.device)
    score(pairs[:WARMUP_PAIRS])
    t0 = time.perf_counter()
    score(pairs)
    seconds = time.perf_counter() - t0
    result = {
        "peer": args.peer,
        "pairs": len(pairs),
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(pairs) / seconds, 2),
        "threads": torch.get_num_threads(),
        "device": args.device,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
