"""`rerank`: the command-line entry point. Parse → log config → run → exit code.

Exit codes: 0 every shard published (and _SUCCESS written); 1 some shards failed (the rest are
published; rerun to retry them); 2 bad usage, config, model, storage or input contract, found
before any scoring; 3 (`rerank nightly`) the same run is already in progress elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.errors import ConfigError, RerankError  # noqa: E402
from pipeline.lease import LeaseHeldError  # noqa: E402

if TYPE_CHECKING:
    from pipeline.config import JobConfig
    from pipeline.runner import RunReport

log = logging.getLogger("rerank")

EXIT_OK, EXIT_SHARDS_FAILED, EXIT_USAGE, EXIT_ALREADY_RUNNING = 0, 1, 2, 3

# flag dest → (config section, field)
FLAG_FIELDS = {
    "model": ("model", "name_or_path"),
    "max_length": ("model", "max_length"),
    "query_max_length": ("model", "query_max_length"),
    "dtype": ("model", "dtype"),
    "device": ("model", "device"),
    "trust_remote_code": ("model", "trust_remote_code"),
    "kind": ("model", "kind"),
    "prompt": ("model", "prompt"),
    "cutoff_layers": ("model", "cutoff_layers"),
    "normalize": ("ranking", "normalize"),
    "top_k": ("ranking", "top_k"),
    "max_batch_tokens": ("scoring", "max_batch_tokens"),
    "min_batch_fill": ("scoring", "min_batch_fill"),
    "rows_per_call": ("scoring", "rows_per_call"),
    "torch_threads": ("scoring", "torch_threads"),
    "query_id_column": ("input", "query_id_column"),
    "query_column": ("input", "query_column"),
    "doc_id_column": ("input", "doc_id_column"),
    "passage_column": ("input", "passage_column"),
    "allow_split_queries": ("input", "allow_split_queries"),
    "fresh": ("output", "fresh"),
    "ray_address": ("ray", "address"),
    "storage_endpoint_url": ("storage", "endpoint_url"),
    "storage_region": ("storage", "region"),
    "storage_profile": ("storage", "profile"),
    "storage_anonymous": ("storage", "anonymous"),
}


def parse_actors(value: str) -> tuple[int, int]:
    """`N` (fixed pool) or `MIN:MAX` (autoscaling pool)."""
    try:
        lo, _, hi = value.partition(":")
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--actors must be N or MIN:MAX, got {value!r}") from None
    return low, high


def budget_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--max-batch-tokens takes a number or auto, got {value!r}"
        ) from None


def parse_layers(value: str) -> list[int]:
    """`28` or `28,40` (the flag may also be repeated)."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cutoff-layers takes layer numbers, got {value!r}") from None


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="score and re-sort every shard of INPUT into OUTPUT",
        description="Scores every (query, passage) row of the Parquet shards under INPUT with a "
        "reranker and writes, per input shard, one output shard under OUTPUT: every input row "
        "plus `score` and `rank`, grouped by query, best first. Reruns resume: published shards "
        "are skipped. Flags override the --config file.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("input", help="Parquet shard, or directory/prefix of shards (recursive); any fsspec URI")
    p.add_argument("output", help="output directory/prefix; any fsspec URI")
    p.add_argument(
        "--model",
        required=True,
        help="local model directory, storage URI or hub id of a reranker (encoder, LLM or layerwise)",
    )
    p.add_argument(
        "--kind",
        choices=["auto", "encoder", "llm", "layerwise"],
        help="reranker kind: encoder (cross-encoder), llm (logit of 'Yes', e.g. bge-reranker-v2-gemma), "
        "layerwise (bge-reranker-v2-minicpm-layerwise); default auto, from the model's config",
    )
    p.add_argument(
        "--prompt",
        help="llm/layerwise: the instruction after the pair (default FlagEmbedding's 'Given a query A "
        "and a passage B, ...')",
    )
    p.add_argument(
        "--cutoff-layers",
        type=parse_layers,
        action="extend",
        metavar="K[,K...]",
        help="layerwise: layer(s) whose head scores, e.g. 28 or 28,40 (default the last); several "
        "give one column score_l<K> each, and score/rank from the first listed",
    )
    p.add_argument("--config", help="YAML job config (same structure as the `config` printed at start)")
    p.add_argument("--max-length", type=int, help="max tokens per pair, specials included (default 512)")
    p.add_argument("--query-max-length", type=int, help="max query tokens (default max_length*3//4)")
    p.add_argument("--normalize", action="store_true", help="add column score_norm = sigmoid(score)")
    p.add_argument("--top-k", type=int, help="keep only the best K candidates per query")
    p.add_argument(
        "--max-batch-tokens",
        type=budget_arg,
        help="padded tokens per micro-batch (default 2048 on CPU, 65536 on CUDA), or auto: each "
        "scoring actor times a few budgets on its first pairs and keeps the fastest",
    )
    p.add_argument(
        "--min-batch-fill",
        type=float,
        help="close a micro-batch before a row shorter than this share of its longest row "
        "(default 0.95 on CPU, 0 on CUDA)",
    )
    p.add_argument(
        "--actors",
        type=parse_actors,
        help="scoring pool size: N, or MIN:MAX to autoscale (one GPU each on CUDA)",
    )
    p.add_argument(
        "--rows-per-call",
        type=int,
        help="pairs handed to a scoring actor per call (default 1024 on CPU, 4096 on CUDA)",
    )
    p.add_argument("--torch-threads", type=int, help="torch threads per CPU scoring actor")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="auto = cuda if the Ray cluster has GPUs (default auto)",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float16", "bfloat16", "float32"],
        help="auto = float16 on CUDA, float32 on CPU (default auto)",
    )
    p.add_argument("--query-id-column", help="query id column (default query_id)")
    p.add_argument("--query-column", help="query text column (default query)")
    p.add_argument("--doc-id-column", help="candidate id column (default doc_id)")
    p.add_argument("--passage-column", help="passage text column (default passage)")
    p.add_argument(
        "--allow-split-queries",
        action="store_true",
        help="allow a query id in several shards (each shard ranks its part); default: exit 2",
    )
    p.add_argument("--fresh", action="store_true", help="discard earlier progress in OUTPUT; start over")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code shipped with the model (off by default)",
    )
    p.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument(
        "--storage-endpoint-url",
        help="S3-compatible endpoint, e.g. http://minio:9000 (default $AWS_ENDPOINT_URL[_S3])",
    )
    p.add_argument("--storage-region", help="S3 region (default $AWS_REGION / $AWS_DEFAULT_REGION)")
    p.add_argument("--storage-profile", help="AWS profile (default: the standard credential chain)")
    p.add_argument("--storage-anonymous", action="store_true", help="read object storage without credentials")
    add_storage_option(p)


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra fsspec storage option (repeatable; VALUE parsed as YAML, dotted KEY nests)",
    )


def flag_overrides(given: dict[str, Any], fields: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Config overrides from the flags given (`fields`: flag dest -> (section, field)), plus the
    repeatable `--storage-option KEY=VALUE` (shared by `rerank run` and `rerank finetune`)."""
    out: dict[str, Any] = {}
    for dest, (section, name) in fields.items():
        if dest in given:
            out.setdefault(section, {})[name] = given[dest]
    for item in given.get("storage_option") or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--storage-option must be KEY=VALUE, got {item!r}"])
        node = out.setdefault("storage", {}).setdefault("options", {})
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    out = flag_overrides(given, FLAG_FIELDS)
    out["input"] = {**out.get("input", {}), "uri": given["input"]}
    out["output"] = {**out.get("output", {}), "uri": given["output"]}
    if "actors" in given:
        lo, hi = given["actors"]
        out.setdefault("scoring", {}).update(min_actors=lo, max_actors=hi)
    return out


def command_run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.runner import run

    cfg = load_config(getattr(args, "config", None), overrides_from_args(args))
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    return finish(run(cfg), cfg)


def finish(report: RunReport, cfg: JobConfig) -> int:
    """Logs the run's summary and failures; returns the exit code."""
    summary = report.summary
    log.info(
        "summary: shards %d (skipped as done %d, published %d, failed %d) | pairs %s | tokens %s | "
        "padding efficiency %s | wall %ss | %s pairs/s (steady %s, start-up %ss, scoring utilisation %s)",
        report.shards_total,
        report.shards_skipped,
        report.shards_published,
        len(report.failed),
        summary.get("pairs_scored", 0),
        summary.get("tokens", 0),
        summary.get("padding_efficiency"),
        summary.get("wall_s", 0),
        summary.get("pairs_per_s"),
        summary.get("steady_pairs_per_s"),
        summary.get("startup_s"),
        summary.get("scoring_utilisation"),
    )
    for node, work in (summary.get("nodes") or {}).items():
        log.info("node %s: %d scoring actor(s), %d pairs", node, work["scoring_actors"], work["pairs"])
    for relpath, reason in sorted(report.failed.items()):
        log.error("shard %s failed: %s", relpath, reason)
    if report.failed:
        log.error(
            "%d shard(s) failed; the others are published. Rerun the same command to retry them.",
            len(report.failed),
        )
        return EXIT_SHARDS_FAILED
    totals = (report.success_manifest or {}).get("totals", {})
    if totals.get("rows_rejected"):
        log.warning(
            "%d row(s) had a null or empty query/passage and were not scored; they are under %s/_rejected/ "
            "with a reject_reason",
            totals["rows_rejected"],
            cfg.output.uri.rstrip("/"),
        )
    if totals.get("duplicate_pairs"):
        log.warning(
            "%d row(s) repeat an earlier (query_id, doc_id); kept and scored", totals["duplicate_pairs"]
        )
    log.info(
        "all %d shards published; rows in %s = out %s + rejected %s + dropped by top-k %s; wrote %s/_SUCCESS",
        report.shards_total,
        totals.get("rows_in"),
        totals.get("rows_out"),
        totals.get("rows_rejected"),
        totals.get("rows_dropped_top_k"),
        cfg.output.uri.rstrip("/"),
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank", description="Offline batch reranking on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    from jobs.demo import add_demo_parser
    from jobs.finetune import add_finetune_parser
    from jobs.rerank_nightly import add_nightly_parser

    add_nightly_parser(sub)
    add_demo_parser(sub)
    add_finetune_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "finetune":
            from jobs.finetune import run_command

            return run_command(args)
        if args.command == "nightly":
            from jobs.rerank_nightly import command_nightly

            return command_nightly(args)
        from jobs.demo import command_demo

        return command_demo(args)
    except LeaseHeldError as e:
        log.error("%s", e)
        return EXIT_ALREADY_RUNNING
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except RerankError as e:
        log.error("%s: %s", type(e).__name__, e)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
