"""`rerank nightly`: the scheduled entry point. A dated run of a job config, one copy at a time.

    rerank nightly --date 2026-11-27 --config deploy/nightly.yaml
    python -m jobs.rerank_nightly --date 2026-11-27 --config deploy/nightly.yaml   # ray job submit

`{date}` in the config's strings (INPUT/OUTPUT prefixes, usually) becomes the run date, and
`{previous_date}` the day before (`output.reuse`: take last night's scores, docs/reuse.md;
`compare.diff_against`: last night's output, for the change feed, docs/compare.md). Before any
work the run takes a lease on its OUTPUT (`_rerank/lease.json`, heartbeat every ttl/4), as
`rerank run` does: a second start of the same run while the first is alive exits 3; a lease whose
heartbeat is older than its ttl (a crashed run) is taken over, so a dead run never blocks the next
night; a run that finds its lease taken over (it stalled past the ttl) stops, exit 3. Exit codes
as every command's (`jobs/entry.py`): 0 all published, 1 some shards failed (rerun to retry), 2 bad
config/input, 3 already in progress / lease lost, 4 internal error, 5 every shard published but the
quality gate held `_SUCCESS` back, 130/143 SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from typing import Any

from jobs import rerank
from jobs.entry import run_command_as_main
from jobs.flags import FlagTable, add_config_file, add_field_flags, flag_overrides
from pipeline.config import deep_merge, read_yaml_config
from pipeline.rerank.config import JobConfig, load_config
from pipeline.rerank.exclusive_run import run_exclusively

log = logging.getLogger("rerank.nightly")

# the flags of `rerank run` a scheduled run may override its config with
FLAG_FIELDS: FlagTable = {
    dest: rerank.FLAG_FIELDS[dest]
    for dest in (
        "fresh",
        "reuse",
        "diff_against",
        "min_ndcg",
        "max_ndcg_drop",
        "lease_ttl_s",
        "ray_address",
        "progress_interval_s",
    )
}


def with_date(value: Any, date: str) -> Any:
    """`value` with every `{date}` in its strings replaced by the run date, and every
    `{previous_date}` by the day before (`output.reuse: ["s3://b/reranked/{previous_date}/"]`)."""
    if isinstance(value, str):
        previous = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
        return value.replace("{date}", date).replace("{previous_date}", previous)
    if isinstance(value, dict):
        return {k: with_date(v, date) for k, v in value.items()}
    if isinstance(value, list):
        return [with_date(v, date) for v in value]
    return value


def parse_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--date must be YYYY-MM-DD, got {text!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "nightly",
        help="a dated, scheduled run of a job config (one copy at a time)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--date",
        type=parse_date,
        default=dt.datetime.now(dt.timezone.utc).date().isoformat(),
        help="run date YYYY-MM-DD, substituted for {date} in the config (default: today, UTC)",
    )
    add_config_file(p, "as `rerank run`'s, with {date} in its URIs", is_required=True)
    add_field_flags(p, JobConfig, FLAG_FIELDS)


def dated_config(path: str, date: str) -> dict[str, Any]:
    """The config file with `{date}` replaced; a section that is not a mapping is left to the
    config's validation to name (exit 2)."""
    data = read_yaml_config(path, hint=" (quote URIs holding {date})")
    sections = [data.get("input"), data.get("output")]
    uris = [section.get("uri", "") for section in sections if isinstance(section, dict)]
    if not any("{date}" in str(u) for u in uris):
        log.warning(
            "neither input.uri nor output.uri of %s contains {date}: every night writes the same OUTPUT", path
        )
    return with_date(data, date)


def command(args: argparse.Namespace) -> int:
    overrides = flag_overrides(vars(args), FLAG_FIELDS)
    cfg = load_config(None, deep_merge(dated_config(args.config, args.date), overrides))
    log.info("nightly run %s: config %s", args.date, json.dumps(cfg.redacted(), sort_keys=True))
    return rerank.finish(run_exclusively(cfg), cfg)


if __name__ == "__main__":  # `python -m jobs.rerank_nightly ...` (ray job submit): `rerank nightly ...`
    run_command_as_main("nightly")
