"""Scoring-stage throughput: our token-budget batching vs peers' batching, same model, same pairs.

    python bench/scoring.py                 # CPU: MiniLM-L6 cross-encoder shape, fp32
    python bench/scoring.py --gpu           # CUDA: bge-reranker-v2-m3 shape (XLM-R large), fp16

Tokenization is done beforehand (it runs on other actors in the job); the timed region is the
forward passes. Compared in one process, on the same tokenized pairs:
  ours        token-budget micro-batches, longest first, min fill (the job's ScorePairs stage)
  flag-style  FlagEmbedding's batching: sorted longest first, 128 pairs per padded batch
  naive       input order, 32 pairs per padded batch
Prints a table and one JSON line. Weights are random (MiniLM-L6 encoder weights on CPU): figures
are about cost, not relevance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hardware import peak_flops, useful_flops  # noqa: E402
from bench.throughput import gpu_model  # noqa: E402
from pipeline.demo.corpus import make_corpus  # noqa: E402
from pipeline.demo.model import make_demo_model  # noqa: E402
from pipeline.io import Storage  # noqa: E402
from pipeline.modeling.reranker import Reranker  # noqa: E402
from pipeline.models.batching import (  # noqa: E402
    fixed_batches,
    longest_first,
    padded_tokens,
    plan_micro_batches,
)
from pipeline.models.pair_tokenizer import PairTokenizer  # noqa: E402
from pipeline.rerank.settings import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MIN_BATCH_FILL  # noqa: E402


def run_batches(reranker: Reranker, ids: pa.ListArray, types, batches, lengths) -> tuple[float, int]:
    """Times a padded forward over the given batches; returns (seconds, padded tokens)."""
    sync = torch.cuda.synchronize if reranker.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for idx in batches:
        reranker.forward(ids, types, idx)
    sync()
    return time.perf_counter() - t0, padded_tokens(lengths, batches)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="CUDA, fp16, bge-reranker-v2-m3 shape")
    ap.add_argument("--queries", type=int, default=0, help="queries x 20 candidates (default by device)")
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="default: the job's")
    ap.add_argument("--tokenizer", help="tokenizer directory (default: the demo MiniLM-L6 one)")
    args = ap.parse_args()
    device = "cuda" if args.gpu else "cpu"
    queries = args.queries or (400 if args.gpu else 15)
    budget = args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS[device]
    work = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    make_corpus(work / "in", queries, 20, 1, seed=1)
    tok_dir = args.tokenizer or str(make_demo_model(work / "minilm"))
    model_dir = str(gpu_model(work / "m3")) if args.gpu else tok_dir
    table = Storage().read_table(str(next((work / "in").glob("*.parquet"))))
    tokenizer = PairTokenizer.load(tok_dir, 512, 384)
    enc = tokenizer.encode(table.column("query").to_pylist(), table.column("passage").to_pylist())
    ids, types = enc["input_ids"], enc.get("token_type_ids")
    lengths = np.diff(ids.offsets.to_numpy())
    reranker = Reranker.load(model_dir, device, "float16" if args.gpu else "float32", budget)
    peak = peak_flops() if args.gpu else None
    flops = useful_flops(model_dir, reranker.model, lengths)

    plans = {
        "ours": plan_micro_batches(lengths, budget, DEFAULT_MIN_BATCH_FILL[device]),
        "flag-style": fixed_batches(longest_first(lengths), 128),
        "naive": fixed_batches(np.arange(len(lengths)), 32),
    }
    run_batches(reranker, ids, types, plans["ours"][:3], lengths)  # warm-up
    results = {}
    for name, batches in plans.items():
        seconds, padded = run_batches(reranker, ids, types, batches, lengths)
        real = int(lengths.sum())
        results[name] = {
            "pairs_per_s": round(len(lengths) / seconds, 1),
            "tokens_per_s": round(real / seconds),
            "padding_efficiency": round(real / padded, 4),
            "seconds": round(seconds, 3),
        }
        if peak:
            results[name]["mfu"] = round(flops / seconds / peak, 3)  # bench/hardware.py's MFU
    base = results["flag-style"]["pairs_per_s"]
    shape = "bge-m3 shape" if args.gpu else "MiniLM-L6"
    print(f"device={device} pairs={len(lengths)} budget={budget} model={shape}")
    print(f"{'batching':<12}{'pairs/s':>10}{'tokens/s':>12}{'pad eff':>9}{'vs flag':>9}{'mfu':>7}")
    for name, r in results.items():
        print(
            f"{name:<12}{r['pairs_per_s']:>10}{r['tokens_per_s']:>12}{r['padding_efficiency']:>9}"
            f"{r['pairs_per_s'] / base:>9.2f}{r.get('mfu', ''):>7}"
        )
    print(
        json.dumps(
            {
                "device": device,
                "gpu": torch.cuda.get_device_name() if args.gpu else None,
                "pairs": len(lengths),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
