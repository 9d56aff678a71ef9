"""`rerank finetune`: fine-tune a reranker on Ray Train. Parse → log config → train → exit code.

    rerank finetune --train data.jsonl --model BAAI/bge-reranker-v2-m3 --output ./m3-ft --workers 4
    python -m jobs.finetune --train s3://b/scored/ --model ./small --output s3://b/models/small-kd/ \\
        --loss distill                                                        # ray job submit

Exit codes: 0 the model is published (or already was); 1 training failed (rerun the same command:
it resumes from the last checkpoint); 2 bad usage, config, model, data or output state.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.errors import ConfigError, RerankError  # noqa: E402

log = logging.getLogger("rerank.finetune")

EXIT_OK, EXIT_TRAINING_FAILED, EXIT_USAGE = 0, 1, 2

# flag dest → (config section, field)
FLAG_FIELDS = {
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
    "storage_endpoint_url": ("storage", "endpoint_url"),
    "storage_region": ("storage", "region"),
    "storage_profile": ("storage", "profile"),
    "storage_anonymous": ("storage", "anonymous"),
}

# flag, type, help (every flag is optional on the command line; the config file may give it)
FLAGS: list[tuple[str, Any, str]] = [
    ("--train", str, "training data: FlagEmbedding JSONL file/prefix, or `rerank run` output shards"),
    ("--eval", str, "held-out data (same formats): MRR@10 / nDCG@10 before and after training"),
    ("--model", str, "base model: local directory, storage URI or hub id (encoder or llm reranker)"),
    ("--output", str, "where the fine-tuned model directory is published; any fsspec URI"),
    ("--config", str, "YAML config (sections data, model, train, run, storage); flags override it"),
    ("--checkpoint-uri", str, "Ray Train checkpoints (default OUTPUT.checkpoints)"),
    ("--prompt", str, "llm: the instruction after the pair when a line has none"),
    ("--query-id-column", str, "scored shards: query id column (default query_id)"),
    ("--query-column", str, "scored shards: query column (default query)"),
    ("--passage-column", str, "scored shards: passage column (default passage)"),
    ("--score-column", str, "scored shards: teacher score column (default score)"),
    ("--ray-address", str, "Ray cluster to join (default $RAY_ADDRESS, else a local Ray)"),
    ("--storage-endpoint-url", str, "S3-compatible endpoint (default $AWS_ENDPOINT_URL[_S3])"),
    ("--storage-region", str, "S3 region (default $AWS_REGION / $AWS_DEFAULT_REGION)"),
    ("--storage-profile", str, "AWS profile (default: the standard credential chain)"),
    ("--max-length", int, "max tokens per pair, specials included (default 512)"),
    ("--query-max-length", int, "max query tokens (default max_length*3//4)"),
    ("--lora-rank", int, "llm: LoRA rank (default 16)"),
    ("--lora-alpha", int, "llm: LoRA alpha (default 32)"),
    ("--train-group-size", int, "passages per group: 1 positive + negatives (default 8)"),
    ("--queries-per-step", int, "query groups per worker per micro-batch (default 4)"),
    ("--grad-accum-steps", int, "micro-batches per optimizer step (default 1)"),
    ("--seed", int, "seed of sampling, shuffling, dropout and LoRA init (default 42)"),
    ("--log-every-steps", int, "log step, loss and examples/s every N steps (default 10)"),
    ("--checkpoint-every-steps", int, "checkpoint every N optimizer steps (default 100)"),
    ("--workers", int, "Ray Train workers, one GPU each on CUDA (default 1)"),
    ("--max-failures", int, "worker failures recovered from the last checkpoint (default 0)"),
    ("--distill-weight", float, "--loss mixed: weight of the distillation term (default 0.5)"),
    ("--temperature", float, "distillation softmax temperature (default 1.0)"),
    ("--epochs", float, "passes over the training queries (default 1)"),
    ("--learning-rate", float, "peak learning rate (default 2e-5)"),
    ("--warmup-ratio", float, "share of steps warming up linearly, then linear decay (default 0.1)"),
    ("--cpus-per-worker", float, "Ray CPUs per worker (default 1; fractions share small nodes)"),
]
CHOICES = {
    "--format": (["auto", "jsonl", "scored"], "training data format (default auto, from the URI)"),
    "--kind": (
        ["auto", "encoder", "llm"],
        "encoder (full fine-tune) or llm (LoRA); default from config.json",
    ),
    "--loss": (["ce", "distill", "mixed"], "listwise CE, distillation from teacher scores, or both"),
    "--precision": (["auto", "float32", "float16", "bfloat16"], "autocast dtype (auto: float16 on CUDA)"),
    "--device": (["auto", "cpu", "cuda"], "auto = cuda if the Ray cluster has GPUs"),
}
SWITCHES = {
    "--fresh": "discard earlier checkpoints and start over",
    "--trust-remote-code": "allow model code shipped with the model",
    "--storage-anonymous": "read object storage without credentials",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    for flag, kind, text in FLAGS:
        p.add_argument(flag, type=kind, help=text)
    for flag, (choices, text) in CHOICES.items():
        p.add_argument(flag, choices=choices, help=text)
    for flag, text in SWITCHES.items():
        p.add_argument(flag, action="store_true", help=text)
    from jobs.rerank import add_storage_option

    add_storage_option(p)


def add_finetune_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a reranker on Ray Train (also from the job's own scores)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(p)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from jobs.rerank import flag_overrides

    return flag_overrides(vars(args), FLAG_FIELDS)


def command_finetune(args: argparse.Namespace) -> int:
    from pipeline.finetune.config import load_finetune_config
    from pipeline.finetune.runner import finetune

    cfg = load_finetune_config(getattr(args, "config", None), overrides_from_args(args))
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    try:
        report = finetune(cfg)
    except RerankError:
        raise
    except Exception as e:  # Ray Train's TrainingFailedError and what it wraps
        log.error("training failed: %s: %s", type(e).__name__, e)
        log.error("rerun the same command to resume from the last checkpoint")
        return EXIT_TRAINING_FAILED
    log.info(
        "model at %s | steps %s | final loss %s | %s examples/s | eval %s",
        cfg.run.output_uri,
        report.get("steps"),
        report.get("final_loss"),
        report.get("examples_per_s"),
        json.dumps(report.get("eval")),
    )
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Runs `finetune` and maps the job's exceptions to exit codes."""
    try:
        return command_finetune(args)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except RerankError as e:
        log.error("%s: %s", type(e).__name__, e)
        return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.finetune ...` (for `ray job submit`): the same flags as `rerank finetune`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
