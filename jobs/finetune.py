"""`rerank finetune`: fine-tune a reranker on Ray Train. Parse → log config → train → exit code.

    rerank finetune data.jsonl ./m3-ft --model BAAI/bge-reranker-v2-m3 --workers 4
    python -m jobs.finetune s3://b/scored/ s3://b/models/small-kd/ --model ./small \\
        --loss distill                                                        # ray job submit

TRAIN and OUTPUT are positionals, as INPUT and OUTPUT of `rerank run` (or the config's
data.train_uri and output.uri); `--train` and `--output` are their deprecated spellings.

Exit codes (`jobs/entry.py`): 0 the model is published (or already was); 1 training failed (rerun
the same command: it resumes from the last checkpoint); 2 bad usage, config, model, data or output
state; 4 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from jobs.entry import EXIT_FAILED, EXIT_OK, run_command_as_main
from jobs.flags import (
    FRESH_FLAG,
    MODEL_FLAGS,
    RAY_FLAGS,
    STORAGE_FLAGS,
    FlagTable,
    OldFlag,
    add_config_file,
    add_field_flags,
    add_old_flags,
    add_positionals,
    add_storage_option,
    flag_overrides,
)
from pipeline.errors import RerankError
from pipeline.finetune.config import FinetuneConfig, load_finetune_config

log = logging.getLogger("rerank.finetune")

# the positionals: given, they win over the config file (each may be left to it)
POSITIONALS: FlagTable = {"train": ("data", "train_uri"), "output": ("output", "uri")}

# flag dest → (config section, field)
FLAG_FIELDS: FlagTable = {
    "eval": ("data", "eval_uri"),
    "format": ("data", "format"),
    "query_id_column": ("data", "query_id_column"),
    "query_column": ("data", "query_column"),
    "passage_column": ("data", "passage_column"),
    "score_column": ("data", "score_column"),
    **MODEL_FLAGS,
    "lora_rank": ("model", "lora_rank"),
    "lora_alpha": ("model", "lora_alpha"),
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
    **FRESH_FLAG,
    "checkpoint_uri": ("output", "checkpoint_uri"),
    "checkpoint_every_steps": ("run", "checkpoint_every_steps"),
    "workers": ("run", "workers"),
    "cpus_per_worker": ("run", "cpus_per_worker"),
    "max_failures": ("run", "max_failures"),
    **RAY_FLAGS,
    **STORAGE_FLAGS,
}

# the first spellings of TRAIN and OUTPUT, still accepted (with a warning)
OLD_FLAGS = [
    OldFlag("--train", "the positional TRAIN", "data", "train_uri"),
    OldFlag("--output", "the positional OUTPUT", "output", "uri"),
]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a reranker on Ray Train (also from the job's own scores)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_positionals(p, FinetuneConfig, POSITIONALS, is_optional=True)
    add_config_file(p, ", ".join(FinetuneConfig.model_fields))
    add_field_flags(p, FinetuneConfig, FLAG_FIELDS)
    add_old_flags(p, OLD_FLAGS)
    add_storage_option(p)


def command(args: argparse.Namespace) -> int:
    overrides = flag_overrides(vars(args), {**POSITIONALS, **FLAG_FIELDS})
    cfg = load_finetune_config(getattr(args, "config", None), overrides)
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
        cfg.output.uri,
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


if __name__ == "__main__":  # `python -m jobs.finetune ...` (ray job submit): `rerank finetune ...`
    run_command_as_main("finetune")
