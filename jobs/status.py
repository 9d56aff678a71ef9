"""`rerank status OUTPUT [--input INPUT] [--json]`: where the run of OUTPUT stands, read from OUTPUT
alone (no Ray): the run that owns it, shards done / pending / failed, rows, the last run, `_SUCCESS`,
the lease holder and the age of its heartbeat (`pipeline/rerank/output/status.py`).

Exit 0 when the run is complete (`_SUCCESS` written, nothing pending), 1 when it is not, 2 when
OUTPUT holds no run (or cannot be read).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from jobs.entry import EXIT_FAILED, EXIT_OK, EXIT_USAGE
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
from pipeline.rerank.output.status import RunStatus, run_status

SHOWN = 20  # pending / failed shards named one by one

FLAG_FIELDS: FlagTable = {**STORAGE_FLAGS}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="where the run of OUTPUT stands (exit 0 complete, 1 not, 2 no run)",
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
    try:
        status = run_status(storage, output, given.get("input"))
    except OSError as e:
        raise storage_error(output, "OUTPUT", e) from e
    sys.stdout.write(
        json.dumps(status.to_dict(), indent=1, sort_keys=True) if given.get("json") else text(status)
    )
    sys.stdout.write("\n")
    return EXIT_USAGE if status.state == "no_run" else EXIT_OK if status.is_complete else EXIT_FAILED


def _when(epoch: float | None) -> str:
    return (
        dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "?"
    )


def _names(items: list[str]) -> str:
    more = f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def text(s: RunStatus) -> str:
    """The status for a person: one fact per line."""
    if s.state == "no_run":
        lines = [f"{s.output}: no run (no _rerank/run.json)"]
        if s.lease is not None:
            lines.append(f"lease: held by {s.lease.holder}, heartbeat {s.lease.heartbeat_age_s}s ago")
        return "\n".join(lines)
    lines = [f"{s.output}: {s.state}"]
    lines.append(
        f"run: model {s.model} ({s.kind}, {s.dtype}), fingerprint {s.digest}, since {_when(s.created_at)}"
    )
    if s.pending is None:
        lines.append(f"shards: {s.shards_done} done; pending unknown (pass --input INPUT)")
    else:
        lines.append(
            f"shards: {s.shards_done} of {s.shards_total} done, {len(s.pending)} pending "
            f"({len(s.failed)} of them failed in the last run); compared with {s.pending_from}"
        )
        if s.pending:
            lines.append(f"  pending: {_names(s.pending)}")
    for relpath, reason in list(s.failed.items())[:SHOWN]:
        lines.append(f"  failed: {relpath}: {reason}")
    r = s.rows
    lines.append(
        f"rows (done shards): in {r.get('rows_in')}, out {r.get('rows_out')}, rejected "
        f"{r.get('rows_rejected')}, dropped by top-k {r.get('rows_dropped_top_k')}"
    )
    lines.append(f"_SUCCESS: {'written' if s.has_success else 'not written'}")
    if s.last_run:
        summary = s.last_run.get("summary") or {}
        lines.append(
            f"last run: {s.last_run.get('outcome')}, ended {_when(s.last_run.get('ended_at'))}; "
            f"{summary.get('pairs_scored')} pairs in {summary.get('wall_s')}s, {summary.get('pairs_per_s')} "
            f"pairs/s (steady {summary.get('steady_pairs_per_s')}), start-up {summary.get('startup_s')}s"
        )
    if s.lease is None:
        lines.append("lease: free (no run in progress)")
    else:
        state = (
            " (its process is gone)" if s.lease.is_process_gone else " (stale)" if s.lease.is_stale else ""
        )
        lines.append(
            f"lease: held by {s.lease.holder}, heartbeat {s.lease.heartbeat_age_s}s ago "
            f"(ttl {s.lease.ttl_s}s){state}"
        )
    if s.report:
        lines.append(f"report: {s.report}")
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines)
