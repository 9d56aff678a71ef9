"""`rerank finetune`: fine-tune a reranker on Ray Train. Parse → log config → train → exit code.

    rerank finetune --train data.jsonl --model BAAI/bge-reranker-v2-m3 --output ./m3-ft --workers 4
    python -m jobs.finetune --train s3://b/scored/ --model ./small --output s3://b/models/small-kd/ \\
        --loss distill                                                        # ray job submit

Exit codes (`jobs/entry.py`): 0 the model is published (or already was); 1 training failed (rerun
the same command: it resumes from the last checkpoint); 2 bad usage, config, model, data or output
state; 4 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from jobs.entry import EXIT_FAILED, EXIT_OK, add_console_flags, configure_logging, execute
from jobs.flags import FlagTable, add_config_file, add_field_flags, add_storage_option, flag_overrides
from pipeline.errors import RerankError
from pipeline.finetune.config import FinetuneConfig, load_finetune_config

log = logging.getLogger("rerank.finetune")

# flag dest → (config section, field)
FLAG_FIELDS: FlagTable = {
    "train": ("data", "train_uri"),
    "eval": ("data", "eval_uri"),
    "format": ("data", "format"),
    "query_id_column": ("data", "query_id_column"),
    "query_column": ("data", "query_column"),
    "passage_column": ("data", "passage_column"),
    "score_column": ("data", "score_column"),
    "model": ("model", "base"),
    "kind": ("model", "kind"),
    "prompt": ("model", "prompt"),
    "max_length": ("model", "max_length"),
    "query_max_length": ("model", "query_max_length"),
    "lora_rank": ("model", "lora_rank"),
    "lora_alpha": ("model", "lora_alpha"),
    "trust_remote_code": ("model", "trust_remote_code"),
    "loss": ("train", "loss"),
    "distill_weight": ("train", "distill_weight"),
    "temperature": ("train", "temperature"),
    "train_group_size": ("train", "train_group_size"),
    "queries_per_step": ("train", "queries_per_step"),
    "grad_accum_steps": ("train", "grad_accum_steps"),
    "epochs": ("train", "epochs"),
    "learning_rate": ("train", "learning_rate"),
    "warmup_ratio": ("train", "warmup_ratio"),
    "precision": ("train", "precision"),
    "seed": ("train", "seed"),
    "log_every_steps": ("train", "log_every_steps"),
    "output": ("run", "output_uri"),
    "checkpoint_uri": ("run", "checkpoint_uri"),
    "checkpoint_every_steps": ("run", "checkpoint_every_steps"),
    "workers": ("run", "workers"),
    "cpus_per_worker": ("run", "cpus_per_worker"),
    "device": ("run", "device"),
    "max_failures": ("run", "max_failures"),
    "fresh": ("run", "fresh"),
    "ray_address": ("run", "ray_address"),
    "dashboard": ("run", "dashboard"),
    "storage_endpoint_url": ("storage", "endpoint_url"),
    "storage_region": ("storage", "region"),
    "storage_profile": ("storage", "profile"),
    "storage_anonymous": ("storage", "anonymous"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_file(p, "data, model, train, run, storage")
    add_field_flags(p, FinetuneConfig, FLAG_FIELDS)
    add_storage_option(p)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a reranker on Ray Train (also from the job's own scores)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(p)


def command(args: argparse.Namespace) -> int:
    cfg = load_finetune_config(getattr(args, "config", None), flag_overrides(vars(args), FLAG_FIELDS))
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    from pipeline.finetune.runner import finetune  # torch and Ray Train: only this command needs them

    try:
        report = finetune(cfg)
    except RerankError:
        raise
    except Exception as e:  # Ray Train's TrainingFailedError and what it wraps
        log.error("training failed: %s: %s", type(e).__name__, e)
        log.error("rerun the same command to resume from the last checkpoint")
        return EXIT_FAILED
    log.info(
        "model at %s | steps %s | final loss %s | %s examples/s",
        cfg.run.output_uri,
        report.get("steps"),
        report.get("final_loss"),
        report.get("examples_per_s"),
    )
    log_eval(report.get("eval"))
    return EXIT_OK


def log_eval(evaluation: dict[str, Any] | None) -> None:
    """`--eval`: MRR@10 and nDCG@10 of the held-out queries before and after training."""
    if not evaluation:
        return
    before, after = evaluation.get("before") or {}, evaluation.get("after") or {}
    for metric in ("mrr@10", "ndcg@10"):
        log.info(
            "held-out %s (%s queries): %s before -> %s after training",
            metric.upper().replace("NDCG", "nDCG"),
            after.get("queries"),
            before.get(metric, "?"),
            after.get(metric, "?"),
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.finetune ...` (for `ray job submit`): the same flags as `rerank finetune`."""
    parser = argparse.ArgumentParser(
        prog="finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(parser)
    add_console_flags(parser)
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    return execute(command, args)


if __name__ == "__main__":
    sys.exit(main())
