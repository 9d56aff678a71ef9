"""The scoring kernels on this CPU: attention paths, SDPA against plain attention, torch.compile.

    python bench/kernels.py                          # minilm and xlmr-base, fp32 and bf16
    python bench/kernels.py --shapes xlmr-large --pairs 200
    python bench/kernels.py --no-compile             # skip the compiled rows (minutes each)

Each row is the Reranker the scoring stage holds, scoring the whole tokenized corpus at the job's
CPU budget (2048 tokens, min fill 0.95): its inputs padded or packed per micro-batch, as in a run.
Rows per shape and dtype:
  padded         right-padded batches, transformers' SDPA attention (the job's `padded`)
  padded-eager   the same with transformers' `eager` attention (matmul + softmax, no SDPA)
  unpadded       packed batches, attention per pair (the job's `unpadded`)
  padded+compile / unpadded+compile   the same through torch.compile (inductor, dynamic shapes);
                 `compile_s` is the first call's time on 64 pairs (the compile), not in the rate
Each rate is real tokens/s, the best of `--reps` timed passes after one warm-up pass on 64 pairs;
`vs padded` is against the padded row of the same shape and dtype, in this process. Shapes:
bench/cpu_shapes.py. Prints a table and one JSON line.
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
from pipeline.modeling.reranker import Reranker  # noqa: E402

BUDGET, MIN_FILL, WARMUP = 2048, 0.95, 64
VARIANTS = ("padded", "padded-eager", "unpadded", "padded+compile", "unpadded+compile")


def reranker_for(model_dir: Path, dtype: str, variant: str) -> Reranker:
    attention = "unpadded" if variant.startswith("unpadded") else "padded"
    reranker = Reranker.load(
        str(model_dir),
        "cpu",
        dtype,
        BUDGET,
        min_fill=MIN_FILL,
        attention=attention,
        compiled="compile" in variant,
    )
    if variant == "padded-eager":
        reranker.scorer.model.set_attn_implementation("eager")
    return reranker


def time_variant(model_dir: Path, corpus: Corpus, dtype: str, variant: str, reps: int) -> dict[str, Any]:
    reranker = reranker_for(model_dir, dtype, variant)
    ids, types = corpus.input_ids, corpus.token_type_ids
    warm_ids = ids.slice(0, WARMUP)
    t0 = time.perf_counter()
    reranker.score(warm_ids, None if types is None else types.slice(0, WARMUP))
    first = time.perf_counter() - t0
    walls, scores = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        scores = reranker.score(ids, types).scores
        walls.append(time.perf_counter() - t0)
    return {
        "tokens_per_s": round(corpus.tokens / min(walls)),
        "walls_s": [round(w, 2) for w in walls],
        "compile_s": round(first, 1) if "compile" in variant else None,
        "scores": scores,
    }


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    for shape in args.shapes:
        model_dir = build_model(shape, work)
        corpus = load_corpus(work, model_dir, args.pairs or (1500 if shape == "minilm" else 400))
        for dtype in args.dtypes:
            base: dict[str, Any] | None = None
            for variant in VARIANTS:
                if "compile" in variant and args.no_compile:
                    continue
                r = time_variant(model_dir, corpus, dtype, variant, args.reps)
                scores = r.pop("scores")
                base = base or r | {"scores": scores}
                r |= {
                    "shape": shape,
                    "dtype": dtype,
                    "variant": variant,
                    "pairs": len(corpus),
                    "tokens": corpus.tokens,
                    "vs_padded": round(r["tokens_per_s"] / base["tokens_per_s"], 3),
                    "max_abs_diff_vs_padded": float(np.abs(scores - base["scores"]).max()),
                    "load1": round(os.getloadavg()[0], 2),
                }
                rows.append(r)
                print(json.dumps(r), flush=True)
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    print(f"threads={result['threads']} torch={result['torch']}")
    titles = ("tokens/s", "vs padded", "compile s", "max diff")
    print(
        f"{'shape':<11}{'dtype':<10}{'variant':<18}" + "".join(f"{t:>10}" for t in titles) + f"{'load1':>7}"
    )
    for r in result["rows"]:
        print(
            f"{r['shape']:<11}{r['dtype']:<10}{r['variant']:<18}{r['tokens_per_s']:>10,}{r['vs_padded']:>10}"
            f"{r['compile_s'] if r['compile_s'] is not None else '-':>10}{r['max_abs_diff_vs_padded']:>10.1e}"
            f"{r['load1']:>7}"
        )


def main() -> int:
    ap = shape_arguments(__doc__ or "")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    result = in_workdir(ap.parse_args(), measure, "rerank-bench-kernels-")
    print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
