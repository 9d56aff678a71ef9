"""Long documents: `--long-passages truncate` vs `chunk` on the same corpus.

    python bench/long_passages.py                   # 200 pairs, demo MiniLM-L6 model, max_length 512
    python bench/long_passages.py --pairs 400 --model tiny --json out.json

A generated corpus of long documents (seeded: queries of 3-12 words, passages log-normal with a
median of ~800 words, each word one token of the MiniLM vocabulary, so a median passage is about
800 tokens and most do not fit in 512), 10 candidates per query, 2 shards. Each mode runs
`rerank run` as a subprocess (timed from outside) with the same model. Rows, from the runs'
`_SUCCESS`:
  pairs/s      pairs / time from the first scoring call's start to the last one's end (the
               scoring actors' clocks: the steady rate, without Ray start-up)
  windows/s    windows scored / the same time (truncate: one window a pair)
  tokens/s     real (unpadded) tokens / the same time
  padding eff. real tokens / padded tokens of the micro-batches
  wall         the whole subprocess, Ray start included
`--model minilm` (default) is the demo model (real MiniLM-L6 encoder weights, random head, fp32);
`--model tiny` a 2-layer BERT (hidden 32) with the same tokenizer, for a quick run. Scores are not
relevance; the figures are about cost. One JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import timed_run, tiny_model  # noqa: E402
from pipeline.demo.corpus import LogNormalWords, make_corpus  # noqa: E402
from pipeline.demo.model import make_demo_model  # noqa: E402

CANDIDATES = 10
SHARDS = 2
PASSAGE_WORDS = LogNormalWords(mu=6.685, sigma=0.5, least=20, most=6000)  # e^6.685 ~ 800 words


def write_corpus(directory: Path, pairs: int, seed: int = 0) -> list[int]:
    """`pairs` long-document pairs in SHARDS shards; returns each passage's word count."""
    queries = max(1, pairs // CANDIDATES)
    make_corpus(directory, queries, CANDIDATES, SHARDS, seed, passage_words=PASSAGE_WORDS, sources=())
    passages = pq.read_table(directory, columns=["passage"]).column("passage").to_pylist()
    return [len(p.split(" ")) for p in passages]


def rerank(input_dir: Path, output: Path, model: Path, flags: list[str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds of `rerank run` (from outside) and its `_SUCCESS` manifest."""
    return timed_run(input_dir, output, model, ["--device", "cpu", "--dtype", "float32", *flags])


def figures(mode: str, wall: float, manifest: dict[str, Any]) -> dict[str, Any]:
    run, totals = manifest["last_run"], manifest["totals"]
    span = run["scoring_ended_at"] - run["scoring_started_at"]
    pairs = run["pairs_scored"]
    windows = totals.get("windows_scored", pairs)
    return {
        "mode": mode,
        "pairs": pairs,
        "windows": windows,
        "windows_not_scored": totals.get("windows_not_scored", 0),
        "windows_per_pair": round(windows / pairs, 2),
        "tokens_per_window": round(totals["tokens"] / windows, 1),
        "pairs_per_s": round(pairs / span, 2),
        "windows_per_s": round(windows / span, 2),
        "tokens_per_s": round(totals["tokens"] / span),
        "padding_efficiency": totals["padding_efficiency"],
        "scoring_s": round(span, 1),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--workdir", help="default: a new temp directory")
    ap.add_argument("--json", help="also write the JSON result to this file")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rerank-bench-long-"))
    model = (make_demo_model if args.model == "minilm" else tiny_model)(work / f"model-{args.model}")
    lengths = sorted(write_corpus(work / "in", args.pairs))
    base = ["--max-length", str(args.max_length)]
    modes = {"truncate": base, "chunk (max, overlap 32, max 16)": [*base, "--long-passages", "chunk"]}
    rows = []
    for i, (mode, flags) in enumerate(modes.items()):
        wall, manifest = rerank(work / "in", work / f"out-{i}", model, flags)
        rows.append(figures(mode, wall, manifest))
    cols = ["mode", "pairs_per_s", "windows_per_s", "tokens_per_s", "padding_efficiency"]
    cols += ["windows_per_pair", "tokens_per_window", "windows_not_scored", "scoring_s", "wall_s"]
    median = lengths[len(lengths) // 2]
    print(
        f"{os.cpu_count()} cores; {len(lengths)} pairs, passages median {median} words "
        f"(max {lengths[-1]}); model {args.model}; max_length {args.max_length}; work {work}"
    )
    print(" | ".join(f"{c:>18}" for c in cols))
    for r in rows:
        print(" | ".join(f"{str(r[c]):>18}" for c in cols))
    result = {"median_words": median, "model": args.model, "max_length": args.max_length, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
