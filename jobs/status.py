"""`rerank status OUTPUT [--input INPUT] [--json]`: where the run of OUTPUT stands, read from OUTPUT
alone (no Ray): the run that owns it, shards done / pending / failed, rows, the last run, `_SUCCESS`,
the lease holder and the age of its heartbeat, the comparison with an earlier run and the quality
on judged queries, when the run made them (`pipeline/rerank/output/status.py`).

Exit 0 when the run is complete (`_SUCCESS` written, nothing pending), 1 when it is not (shards
pending or failed, a run in progress, a damaged bookkeeping file: named; or held: every shard done,
but the quality gate kept `_SUCCESS` back), 2 when OUTPUT holds no run (or cannot be read) or
INPUT holds no shards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from jobs.entry import EXIT_FAILED, EXIT_OK, EXIT_USAGE, write_stdout
from jobs.flags import (
    STORAGE_FLAGS,
    FlagTable,
    add_config_file,
    add_field_flags,
    add_storage_option,
    flag_overrides,
)
from pipeline.config import StorageConfig, read_yaml_config, validate_config
from pipeline.io import Storage, storage_error
from pipeline.rerank.config import JobConfig
from pipeline.rerank.input.discovery import find_shards
from pipeline.rerank.output.status import RunStatus, run_status

SHOWN = 20  # pending / failed shards named one by one

FLAG_FIELDS: FlagTable = {**STORAGE_FLAGS}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="where the run of OUTPUT stands (exit 0 complete, 1 not or held by the quality gate, 2 no run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("output", metavar="OUTPUT", help="the run's OUTPUT directory/prefix; any fsspec URI")
    p.add_argument(
        "--input",
        help="INPUT to compare with (listed now); default: the shard list the last run wrote",
    )
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    add_config_file(p, "as `rerank run`'s; only storage is read")
    add_field_flags(p, JobConfig, FLAG_FIELDS)
    add_storage_option(p)


def storage_from_args(given: dict[str, Any]) -> Storage:
    data = read_yaml_config(given["config"]).get("storage", {}) if given.get("config") else {}
    data = {**data, **flag_overrides(given, FLAG_FIELDS).get("storage", {})}
    return Storage.from_section(validate_config(StorageConfig, data, lambda _: []))


def command(args: argparse.Namespace) -> int:
    given = vars(args)
    storage = storage_from_args(given)
    output = given["output"]
    if not storage.is_local(output):
        storage.check_root(output, "OUTPUT")  # a missing bucket, denied access: exit 2, named
    input_uri = given.get("input")
    shards = find_shards(storage, input_uri) if input_uri else None  # none, or a typo: exit 2 as for run
    try:
        status = run_status(storage, output, input_uri, input_shards=shards)
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    shown = json.dumps(status.to_dict(), indent=1, sort_keys=True) if given.get("json") else text(status)
    write_stdout(shown + "\n")
    return EXIT_USAGE if status.state == "no_run" else EXIT_OK if status.is_complete else EXIT_FAILED


def _when(epoch: float | None) -> str:
    return (
        dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "?"
    )


def _names(items: list[str]) -> str:
    more = f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _headline(s: RunStatus) -> str:
    if s.state == "in_progress":
        first = "" if s.has_run else "; it has not written _rerank/run.json yet"
        return f"{s.output}: in progress (a run holds its lease{first})"
    if not s.has_run:
        return f"{s.output}: no run (no _rerank/run.json)"
    if s.state == "held":
        return f"{s.output}: held by the quality gate"
    return f"{s.output}: {s.state}"


def text(s: RunStatus) -> str:
    """The status for a person: one fact per line; what is not known is not printed as None."""
    lines = [_headline(s)] + _held_lines(s)
    if not s.has_run:
        return "\n".join(lines + _lease_lines(s))
    if s.digest is not None:
        lines.append(
            f"run: model {s.model} ({s.kind}, {s.dtype}), fingerprint {s.digest}, since {_when(s.created_at)}"
        )
    else:
        lines.append("run: unknown (_rerank/run.json cannot be read; see damaged below)")
    lines += _shard_lines(s)
    if s.digest is not None:
        r = s.rows
        lines.append(
            f"rows (done shards): in {r.get('rows_in')}, out {r.get('rows_out')}, rejected "
            f"{r.get('rows_rejected')}, dropped by top-k {r.get('rows_dropped_top_k')}"
        )
        if "pairs_scored" in s.pairs:  # shards published before --reuse existed count none
            lines.append(f"pairs (done shards): {pairs_text(s.pairs)}")
    lines.append(f"_SUCCESS: {'written' if s.has_success else 'not written'}")
    if s.last_run:
        lines.append(f"last run: {last_run_line(s.last_run)}")
    lines += comparison_lines(s.comparison)
    lines += _lease_lines(s)
    if s.report:
        lines.append(f"report: {s.report}")
    lines += [f"damaged: {uri}: {what}" for uri, what in list(s.damaged.items())[:SHOWN]]
    if len(s.damaged) > SHOWN:
        lines.append(f"damaged: ... and {len(s.damaged) - SHOWN} more (--json lists them all)")
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines)


def _held_lines(s: RunStatus) -> list[str]:
    """Under the headline of a held run: each check that failed, and what to do."""
    if s.state != "held":
        return []
    failed = (s.quality_gate or {}).get("failed") or []
    return [
        *(f"  quality gate: {c.get('threshold', '?')} failed: {c.get('what', '')}" for c in failed),
        "  every shard is published, but no _SUCCESS was written (_rerank/quality.json has the "
        "verdict); fix the model, or rerun with the thresholds you accept: nothing is scored again",
    ]


def comparison_lines(figures: dict[str, Any]) -> list[str]:
    """One line each for the changes since the earlier run, the ranking drift and the quality on
    judged queries, where the run made them."""
    lines = []
    if changes := figures.get("changes"):
        t = changes.get("totals") or {}
        counts = ", ".join(f"{t.get(k, 0):,} {k}" for k in ("added", "removed", "reranked", "rescored"))
        lines.append(
            f"changes against {changes.get('against')}: {counts} ({changes.get('files')} change file(s))"
        )
    if (drift := figures.get("drift")) and drift.get("queries"):
        overlap, tau = drift.get("overlap10") or {}, drift.get("tau") or {}
        share = drift.get("top1_changed_share")
        lines.append(
            f"drift over {drift['queries']:,} queries in both runs: top-10 overlap median "
            f"{_fig(overlap.get('median'))} (p10 {_fig(overlap.get('p10'))}), Kendall tau median "
            f"{_fig(tau.get('median'))} (p10 {_fig(tau.get('p10'))}), top-1 changed for "
            + ("n/a" if share is None else f"{100 * share:.1f} %")
        )
    if quality := figures.get("quality"):
        first, reranked = quality.get("first_stage") or {}, quality.get("reranked") or {}
        measures = ", ".join(
            f"{name} {_fig(first.get(key))} -> {_fig(reranked.get(key))}"
            for key, name in (("ndcg10", "nDCG@10"), ("mrr10", "MRR@10"), ("recall100", "Recall@100"))
        )
        gate = quality.get("gate") or {}
        verdict = "" if not gate.get("checks") else "; gate passed" if gate.get("passed") else "; gate failed"
        queries = quality.get("queries", 0)
        lines.append(f"quality on {queries:,} judged queries: {measures} (first stage -> reranked){verdict}")
    return lines


def _fig(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _shard_lines(s: RunStatus) -> list[str]:
    if s.digest is None:
        listed = f"{s.shards_total} in {s.pending_from}; " if s.shards_total is not None else ""
        return [f"shards: {listed}which are done is unknown without a readable _rerank/run.json"]
    if s.pending is None:
        lines = [f"shards: {s.shards_done} done; pending unknown (pass --input INPUT)"]
    else:
        lines = [
            f"shards: {s.shards_done} of {s.shards_total} done, {len(s.pending)} pending "
            f"({len(s.failed)} of them failed in the last run); compared with {s.pending_from}"
        ]
        if s.pending:
            lines.append(f"  pending: {_names(s.pending)}")
    lines += [f"  failed: {relpath}: {reason}" for relpath, reason in list(s.failed.items())[:SHOWN]]
    if s.not_in_input:
        lines.append(
            f"  in _SUCCESS but not in {s.pending_from}: {_names(s.not_in_input)} (a rerun on it "
            "writes _SUCCESS without them)"
        )
    return lines


def last_run_line(last: dict[str, Any]) -> str:
    """The last run's outcome and figures, each only when known (a stopped run has no summary)."""
    facts = [str(last.get("outcome") or "outcome unknown")]
    if last.get("ended_at"):
        facts.append(f"ended {_when(last['ended_at'])}")
    shards = last.get("shards") or {}
    if shards.get("total") is not None and shards.get("published") is not None:
        published = int(shards.get("skipped") or 0) + int(shards["published"])
        facts.append(f"{published} of {shards['total']} shards published ({shards['published']} by it)")
    summary = last.get("summary") or {}
    reused = bool(summary.get("pairs_reused") or summary.get("reuse_lookup"))  # --reuse
    figures = _FIGURES[1:] if reused else _FIGURES  # with --reuse the pairs are told apart
    known = [form.format(summary[key]) for key, form in figures if summary.get(key) is not None]
    if reused:
        pairs = {k: int(summary.get(k) or 0) for k in ("pairs_scored", "pairs_reused")}
        known.insert(0, f"pairs {pairs_text(pairs)}")
    return "; ".join(
        [", ".join(facts), ", ".join(known) or "no throughput figures (it ended before scoring did)"]
    )


def pairs_text(pairs: dict[str, int]) -> str:
    """Pairs scored and reused, with the share reused: "1,200 scored, 18,800 reused (94.0 %)"."""
    scored, reused = pairs.get("pairs_scored", 0), pairs.get("pairs_reused", 0)
    share = f" ({100 * reused / (scored + reused):.1f} %)" if scored + reused else ""
    return f"{scored:,} scored, {reused:,} reused{share}"


_FIGURES = (  # the summary's figures of the last-run line, in order
    ("pairs_scored", "{} pairs"),
    ("wall_s", "in {}s"),
    ("pairs_per_s", "{} pairs/s"),
    ("steady_pairs_per_s", "steady {} pairs/s"),
    ("startup_s", "start-up {}s"),
)


def _lease_lines(s: RunStatus) -> list[str]:
    lease = s.lease
    if lease is None:
        return ["lease: free (no run in progress)"]
    if lease.is_damaged:
        return [f"lease: {lease.holder}; it counts as stale, and the next run takes it over"]
    state = " (its process is gone)" if lease.is_process_gone else " (stale)" if lease.is_stale else ""
    ttl = f" (ttl {lease.ttl_s}s)" if lease.ttl_s is not None else ""
    return [f"lease: held by {lease.holder}, heartbeat {lease.heartbeat_age_s}s ago{ttl}{state}"]
