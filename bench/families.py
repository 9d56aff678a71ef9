"""The reranker families end to end, timed from outside: one `rerank run` per family on the same
corpus, the way a user meets it (the whole command, Ray's start included).

    python bench/families.py                      # 2,000 pairs, 4 shards, each row twice
    python bench/families.py --pairs 500 --repeat 1

The models are the tests' tiny ones at the real architecture classes, random weights (the
session fixtures' builders, tests/assets/family_models.py): a Qwen3ForCausalLM with Qwen's BPE, a
Qwen2ForCausalLM (mxbai), a ModernBertForSequenceClassification. Each family row runs its model
with `--family` set; the `flag-llm` row runs the same Qwen3 model through FlagEmbedding's layout,
the way a Qwen3-Reranker was scored before its family landed, so the two rows differ only in the
template and the score head. Figures per run from the wall clock and `_SUCCESS`: wall, pairs,
the tokens the scorers ran, the rate. These tiny models score in a blink: the rows show what the
pipeline costs around the model (tokenizing the templates, windows, ranking, publishing), not a
model's speed; bench/llm_head.py has the Qwen3-width scoring, bench/gpu the GPU shapes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.demo.corpus import make_corpus  # noqa: E402
from pipeline.io import Storage  # noqa: E402
from tests.assets import family_models  # noqa: E402

# row -> (the model builder, --family)
ROWS = {
    "qwen3": (family_models.build_tiny_qwen3_reranker, "qwen3"),
    "flag-llm layout, same Qwen3 model": (family_models.build_tiny_qwen3_reranker, "flag-llm"),
    "mxbai-v2": (family_models.build_tiny_mxbai_v2, "mxbai-v2"),
    "modernbert": (family_models.build_tiny_modernbert, "modernbert"),
}


def one_run(corpus: Path, out: Path, model: str, family: str, max_length: int) -> dict:
    cmd = [sys.executable, "-m", "jobs.cli", "run", str(corpus), str(out), "--model", model]
    cmd += ["--family", family, "--max-length", str(max_length), "--normalize"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    totals = Storage().read_json(str(out / "_SUCCESS"))["totals"]
    return {"wall_s": wall, "pairs": totals["rows_in"], "tokens": totals.get("tokens")}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000, help="pairs in the corpus (20 candidates a query)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2, help="runs per row (interleaved); medians printed")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "in"
        make_corpus(corpus, max(1, args.pairs // 20), 20, args.shards)
        models: dict[str, str] = {}
        for builder, _ in ROWS.values():
            models.setdefault(builder.__name__, str(builder(root / builder.__name__)))
        runs: dict[str, list[dict]] = {row: [] for row in ROWS}
        for r in range(args.repeat):
            for i, (row, (builder, family)) in enumerate(ROWS.items()):
                out = root / f"out-{i}-{r}"
                runs[row].append(one_run(corpus, out, models[builder.__name__], family, args.max_length))
    print(f"{args.pairs} pairs, {args.shards} shards, --max-length {args.max_length}, {args.repeat} run(s)")
    print(f"{'row':36} {'walls s':>18} {'median s':>9} {'pairs/s':>8} {'tokens/pair':>11}")
    figures = {}
    for row, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        pairs, tokens = results[0]["pairs"], results[0]["tokens"]
        per_pair = round(tokens / pairs, 1) if tokens else None
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in results)
        print(f"{row:36} {walls:>18} {wall:>9.1f} {pairs / wall:>8.1f} {per_pair!s:>11}")
        figures[row] = {
            "walls_s": [r["wall_s"] for r in results],
            "pairs": pairs,
            "tokens_per_pair": per_pair,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
