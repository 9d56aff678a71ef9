"""bf16 against fp32 on this CPU: speed, score difference and ranking agreement (CPU `--dtype auto`).

    python bench/precision.py                        # minilm (1,500 pairs) and xlmr-base (400)
    python bench/precision.py --shapes xlmr-large --pairs 200
    python bench/precision.py --attention unpadded   # the packed path `--attention auto` picks here

For each shape (bench/cpu_shapes.py) the scoring stage's Reranker scores the tokenized demo corpus
(20 candidates per query) in fp32 and in bf16, on one attention path (`--attention`: padded, the
default, or unpadded: packed pairs, the C attention kernel, the last layer at first tokens only),
the job's CPU budget; then per query it
compares the bf16 ranking with the fp32 one:
  speed          real tokens/s of each (best of `--reps` passes after a warm-up), and bf16/fp32
  max/mean diff  largest and mean |bf16 - fp32| over all scores, and the fp32 scores' spread
                 (standard deviation within a query, averaged), the scale the difference moves ranks on
  top-10 overlap |top 10 (bf16) ∩ top 10 (fp32)| / 10 per query: mean and worst query
  Kendall tau    per query over its 20 candidates (tau-a): mean and worst query
The rule in docs/performance.md ("Precision on CPU") is decided from these figures. Prints a table
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_shapes import Corpus, build_model, in_workdir, load_corpus, shape_arguments  # noqa: E402
from pipeline.modeling.kernels.cpu_features import cpu_features  # noqa: E402
from pipeline.modeling.reranker import Reranker  # noqa: E402

BUDGET, MIN_FILL, WARMUP, TOP = 2048, 0.95, 64, 10


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two score vectors over the same items."""
    i, j = np.triu_indices(len(a), 1)
    concordant = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(concordant.sum() / len(i)) if len(i) else 1.0


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP) -> float:
    return len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / min(
        k, len(a)
    )


def scored(
    model_dir: Path, corpus: Corpus, dtype: str, reps: int, attention: str
) -> tuple[np.ndarray, float]:
    reranker = Reranker.load(str(model_dir), "cpu", dtype, BUDGET, min_fill=MIN_FILL, attention=attention)
    types = corpus.token_type_ids
    reranker.score(corpus.input_ids.slice(0, WARMUP), None if types is None else types.slice(0, WARMUP))
    walls, scores = [], np.zeros(0)
    for _ in range(reps):
        t0 = time.perf_counter()
        scores = reranker.score(corpus.input_ids, types).scores
        walls.append(time.perf_counter() - t0)
    return scores, corpus.tokens / min(walls)


def compare(shape: str, corpus: Corpus, fp32: np.ndarray, bf16: np.ndarray) -> dict[str, Any]:
    overlaps, taus, spreads = [], [], []
    for q in np.unique(corpus.queries):
        rows = corpus.queries == q
        overlaps.append(top_overlap(fp32[rows], bf16[rows]))
        taus.append(kendall_tau(fp32[rows], bf16[rows]))
        spreads.append(float(fp32[rows].std()))
    diff = np.abs(bf16 - fp32)
    return {
        "shape": shape,
        "pairs": len(corpus),
        "queries": len(overlaps),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "score_spread": float(np.mean(spreads)),
        "top10_overlap_mean": round(float(np.mean(overlaps)), 4),
        "top10_overlap_min": round(float(np.min(overlaps)), 4),
        "kendall_tau_mean": round(float(np.mean(taus)), 4),
        "kendall_tau_min": round(float(np.min(taus)), 4),
    }


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for shape in args.shapes:
        model_dir = build_model(shape, work)
        corpus = load_corpus(work, model_dir, args.pairs or (1500 if shape == "minilm" else 400))
        fp32, fp32_rate = scored(model_dir, corpus, "float32", args.reps, args.attention)
        bf16, bf16_rate = scored(model_dir, corpus, "bfloat16", args.reps, args.attention)
        row = compare(shape, corpus, fp32, bf16) | {
            "attention": args.attention,
            "fp32_tokens_per_s": round(fp32_rate),
            "bf16_tokens_per_s": round(bf16_rate),
            "bf16_speedup": round(bf16_rate / fp32_rate, 3),
            "load1": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    features = cpu_features()
    return {"cpu": features.model_name, "bf16_features": features.describe(), "rows": rows}


def main() -> int:
    ap = shape_arguments(__doc__ or "")
    ap.add_argument("--attention", choices=["padded", "unpadded"], default="padded")
    args = ap.parse_args()
    result = in_workdir(args, measure, "rerank-bench-precision-")
    print(f"cpu={result['cpu']} bf16 features={result['bf16_features']} attention={args.attention}")
    keys = ["fp32_tokens_per_s", "bf16_tokens_per_s", "bf16_speedup", "max_abs_diff", "score_spread"]
    keys += ["top10_overlap_mean", "top10_overlap_min", "kendall_tau_mean", "kendall_tau_min"]
    print(f"{'shape':<11}" + "".join(f"{k:>20}" for k in keys))
    for r in result["rows"]:
        print(f"{r['shape']:<11}" + "".join(f"{r[k]:>20.4g}" for k in keys))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
