"""`rerank run`: score and re-sort every shard of INPUT into OUTPUT. Parse → log config → run.

The run holds OUTPUT's lease (`OUTPUT/_rerank/lease.json`, as `rerank nightly` does): a second
run on the same OUTPUT exits 3 while the first is alive. SIGINT/SIGTERM stop it at a safe point
(exit 130/143); rerun the same command to resume.

Flags are made from the config's fields (`jobs/flags.py`); exit codes are `jobs/entry.py`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from jobs.entry import EXIT_FAILED, EXIT_OK, EXIT_QUALITY_GATE
from jobs.flags import (
    FRESH_FLAG,
    MODEL_FLAGS,
    RAY_FLAGS,
    STORAGE_FLAGS,
    FlagTable,
    add_config_file,
    add_field_flags,
    add_positionals,
    add_storage_option,
    flag_overrides,
)
from pipeline.rerank.config import JobConfig, load_config
from pipeline.rerank.exclusive_run import run_exclusively
from pipeline.rerank.report.kernels import kernel_line
from pipeline.rerank.runner import RunReport

log = logging.getLogger("rerank")

POSITIONALS: FlagTable = {"input": ("input", "uri"), "output": ("output", "uri")}

# flag dest → (config section, field); --model is required, the rest optional
FLAG_FIELDS: FlagTable = {
    **MODEL_FLAGS,
    "cutoff_layers": ("model", "cutoff_layers"),
    "normalize": ("ranking", "normalize"),
    "top_k": ("ranking", "top_k"),
    "max_batch_tokens": ("scoring", "max_batch_tokens"),
    "min_batch_fill": ("scoring", "min_batch_fill"),
    "rows_per_call": ("scoring", "rows_per_call"),
    "torch_threads": ("scoring", "torch_threads"),
    "dtype": ("model", "dtype"),
    "attention": ("model", "attention"),
    "compile": ("model", "compile"),
    "query_id_column": ("input", "query_id_column"),
    "query_column": ("input", "query_column"),
    "doc_id_column": ("input", "doc_id_column"),
    "passage_column": ("input", "passage_column"),
    "allow_split_queries": ("input", "allow_split_queries"),
    "layout": ("input", "layout"),
    "candidates_column": ("input", "candidates_column"),
    "previous_prefix": ("input", "previous_prefix"),
    "prefilter_column": ("input", "prefilter_column"),
    "prefilter_top_k": ("input", "prefilter_top_k"),
    "long_passages": ("input", "long_passages"),
    "chunk_overlap": ("input", "chunk_overlap"),
    "max_chunks": ("input", "max_chunks"),
    "chunk_aggregate": ("input", "chunk_aggregate"),
    **FRESH_FLAG,
    "reuse": ("output", "reuse"),
    "lease_ttl_s": ("output", "lease_ttl_s"),
    "diff_against": ("compare", "diff_against"),
    "change_epsilon": ("compare", "change_epsilon"),
    "qrels": ("compare", "qrels"),
    "first_stage_column": ("compare", "first_stage_column"),
    "min_ndcg": ("compare", "min_ndcg"),
    "max_ndcg_drop": ("compare", "max_ndcg_drop"),
    **RAY_FLAGS,
    "progress_interval_s": ("progress", "interval_s"),
    **STORAGE_FLAGS,
}


def parse_actors(value: str) -> tuple[int, int]:
    """`N` (fixed pool) or `MIN:MAX` (autoscaling pool)."""
    try:
        lo, _, hi = value.partition(":")
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--actors must be N or MIN:MAX, got {value!r}") from None
    return low, high


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_positionals(p, JobConfig, POSITIONALS)
    add_config_file(p, ", ".join(JobConfig.model_fields))
    add_field_flags(p, JobConfig, FLAG_FIELDS)
    p.add_argument(
        "--actors",
        type=parse_actors,
        help="scoring pool size: N, or MIN:MAX to autoscale (one GPU each on CUDA) (default 1)",
    )
    add_storage_option(p)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="score and re-sort every shard of INPUT into OUTPUT",
        description="Scores every (query, passage) row of the Parquet shards under INPUT with a "
        "reranker and writes, per input shard, one output shard under OUTPUT: every input row "
        "plus `score` and `rank`, grouped by query, best first. Reruns resume: published shards "
        "are skipped. Flags override the --config file.",
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(p)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    out = flag_overrides(given, {**POSITIONALS, **FLAG_FIELDS})
    if "actors" in given:
        lo, hi = given["actors"]
        out.setdefault("scoring", {}).update(min_actors=lo, max_actors=hi)
    return out


def command(args: argparse.Namespace) -> int:
    cfg = load_config(getattr(args, "config", None), overrides_from_args(args))
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    return finish(run_exclusively(cfg), cfg)


def log_summary(report: RunReport, reuse_given: list[str] | None = None) -> None:
    """The run's figures: shards, pairs, tokens, throughput, the work of each node, and the pairs
    reused (`reuse_given`: the run's --reuse sources)."""
    summary = report.summary
    reuse = reuse_line(summary, reuse_given or [])
    if not summary.get("pairs_scored"):  # nothing scored (all done or reused): no rates to show
        log.info(
            "summary: shards %d (skipped as done %d, published %d, failed %d) | nothing scored | wall %ss",
            report.shards_total,
            report.shards_skipped,
            report.shards_published,
            len(report.failed),
            summary.get("wall_s", 0),
        )
        if reuse:
            log.info("%s", reuse)
        log.info("planning %ss", summary.get("planning_s"))
        return
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
    if reuse:
        log.info("%s", reuse)
    kernels = kernel_line(summary.get("kernels"))
    if kernels:
        log.info("%s", kernels)
    log.info(
        "planning %ss | driver peak RSS %s MiB", summary.get("planning_s"), summary.get("driver_peak_rss_mib")
    )
    for node, work in (summary.get("nodes") or {}).items():
        log.info("node %s: %d scoring actor(s), %d pairs", node, work["scoring_actors"], work["pairs"])


def reuse_line(summary: dict[str, Any], given: list[str]) -> str | None:
    """Pairs scored and reused, with the sources and the lookup's time: for a run that scored and
    reused some pairs or was given sources (--reuse), else None."""
    if "pairs_scored" not in summary:  # nothing was pending: no scoring phase
        return None
    scored, reused = int(summary["pairs_scored"]), int(summary.get("pairs_reused") or 0)
    lookup = summary.get("reuse_lookup")
    if not (reused or lookup or given):
        return None
    share = f" ({100 * reused / (scored + reused):.1f} %)" if scored + reused else ""
    where = ""
    if lookup:
        where = f" from {len(lookup['sources'])} source(s); lookup {lookup['seconds']:.1f} s"
    elif given:  # no source usable, or the lookup failed: the warnings say which
        where = f"; none taken from the {len(given)} --reuse source(s) (see the warnings)"
    return f"pairs: {scored:,} scored, {reused:,} reused{share}{where}"


def finish(report: RunReport, cfg: JobConfig) -> int:
    """Logs the run's summary and failures; returns the exit code."""
    log_summary(report, cfg.output.reuse)
    if report.failed:
        log_failures(report, cfg)
        return EXIT_FAILED
    log_comparison(report.comparison, cfg)
    if report.held:
        return EXIT_QUALITY_GATE
    totals = (report.success_manifest or {}).get("totals", {})
    log_row_notes(totals, cfg)
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


def log_comparison(figures: dict[str, Any], cfg: JobConfig) -> None:
    """The change feed, the drift and the quality figures; a gate that failed, with its figures and
    what to do."""
    output = cfg.output.uri.rstrip("/")
    if changes := figures.get("changes"):
        t = changes["totals"]
        log.info(
            "changes against %s: %s added, %s removed, %s reranked, %s rescored; %d change file(s) "
            "under %s/_changes/",
            changes["against"],
            *(f"{t[k]:,}" for k in ("added", "removed", "reranked", "rescored")),
            len(changes["files"]),
            output,
        )
    if (drift := figures.get("drift")) and drift.get("queries"):
        log.info(
            "ranking drift over %s queries in both runs: top-10 overlap median %s (p10 %s), Kendall tau "
            "median %s (p10 %s), top-1 changed for %.1f %%",
            f"{drift['queries']:,}",
            drift["overlap10"]["median"],
            drift["overlap10"]["p10"],
            drift["tau"]["median"],
            drift["tau"]["p10"],
            100 * (drift["top1_changed_share"] or 0),
        )
    if quality := figures.get("quality"):
        first, reranked = quality.get("first_stage") or {}, quality.get("reranked") or {}
        log.info(
            "quality on %s judged queries: nDCG@10 %s -> %s, MRR@10 %s -> %s, Recall@100 %s -> %s "
            "(first stage -> reranked); per query in %s/_rerank/quality.parquet",
            f"{quality['queries']:,}",
            *(
                x
                for m in ("ndcg10", "mrr10", "recall100")
                for x in (_fig(first.get(m)), _fig(reranked.get(m)))
            ),
            output,
        )
        for check in quality["gate"]["failed"]:
            log.error("quality gate: %s failed: %s", check["threshold"], check["what"])
        if not quality["gate"]["passed"]:
            log.error(
                "every shard is published but no _SUCCESS was written: the quality gate held it (see "
                "%s/_rerank/quality.json). Fix the model, or rerun with the thresholds you accept: the "
                "shards are not scored again.",
                output,
            )


def _fig(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def log_failures(report: RunReport, cfg: JobConfig) -> None:
    """Each failed shard with its reason, then the last line: what happened and what to do."""
    for relpath, reason in sorted(report.failed.items()):
        log.error("shard %s failed: %s", relpath, reason)
    if report.disk_full:
        log.error(
            "%d shard(s) failed, %d published by this run: OUTPUT %s is on a full disk (or quota), so "
            "the run stopped publishing. Free space there (or choose another OUTPUT) and rerun the same "
            "command to publish the rest.",
            len(report.failed),
            report.shards_published,
            cfg.output.uri,
        )
        return
    log.error(
        "%d shard(s) failed; the others are published. Rerun the same command to retry them.",
        len(report.failed),
    )


def log_row_notes(totals: dict[str, Any], cfg: JobConfig) -> None:
    """What a complete run's totals say beyond the reconciliation: rows quarantined, windows left
    unscored, the prefilter's unscored rows, repeated pairs."""
    if totals.get("rows_rejected"):
        log.warning(
            "%d row(s) had a null query id or a null or empty query/passage and were not scored; they "
            "are under %s/_rejected/ with a reject_reason",
            totals["rows_rejected"],
            cfg.output.uri.rstrip("/"),
        )
    if totals.get("windows_not_scored"):
        log.warning(
            "%d window(s) of long passages lay past --max-chunks and were not scored (%d were); "
            "raise --max-chunks to score them",
            totals["windows_not_scored"],
            totals.get("windows_scored", 0),
        )
    elif "windows_scored" in totals:
        log.info("long passages: %d window(s) scored, every window of each passage", totals["windows_scored"])
    if totals.get("rows_not_scored"):
        dropped = totals.get("rows_not_scored_dropped_top_k", 0)
        log.info(
            "%d candidate(s) lay outside --prefilter-top-k and were not scored: %d published after the "
            "scored ones (null scores), %d dropped by --top-k",
            totals["rows_not_scored"],
            totals["rows_not_scored"] - dropped,
            dropped,
        )
    if totals.get("duplicate_pairs"):
        log.warning(
            "%d row(s) repeat an earlier (query_id, doc_id); kept and scored", totals["duplicate_pairs"]
        )


if __name__ == "__main__":  # `python -m jobs.rerank run ...`: the whole CLI, as before jobs/cli.py
    import runpy

    runpy.run_module("jobs.cli", run_name="__main__")
