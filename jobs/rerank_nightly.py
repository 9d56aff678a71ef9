"""`rerank nightly`: the scheduled entry point. A dated run of a job config, one copy at a time.

    rerank nightly --date 2026-11-27 --config deploy/nightly.yaml
    python -m jobs.rerank_nightly --date 2026-11-27 --config deploy/nightly.yaml   # ray job submit

`{date}` in the config's strings (INPUT/OUTPUT prefixes, usually) becomes the run date. Before any
work the run takes a lease on its OUTPUT (`_rerank/lease.json`, heartbeat every ttl/4), as
`rerank run` does: a second start of the same run while the first is alive exits 3; a lease whose
heartbeat is older than its ttl (a crashed run) is taken over, so a dead run never blocks the next
night; a run that finds its lease taken over (it stalled past the ttl) stops, exit 3. Exit codes
as every command's (`jobs/entry.py`): 0 all published, 1 some shards failed (rerun to retry), 2 bad
config/input, 3 already in progress / lease lost, 4 internal error, 130/143 SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from jobs.entry import add_console_flags, configure_logging, execute
from jobs.flags import FlagTable, add_field_flags
from jobs.rerank import finish, run_exclusively
from pipeline.config import deep_merge, read_yaml_config
from pipeline.rerank.config import JobConfig, load_config

log = logging.getLogger("rerank.nightly")

FLAG_FIELDS: FlagTable = {
    "fresh": ("output", "fresh"),
    "lease_ttl_s": ("output", "lease_ttl_s"),
    "ray_address": ("ray", "address"),
    "progress_interval_s": ("progress", "interval_s"),
}


def with_date(value: Any, date: str) -> Any:
    """`value` with every `{date}` in its strings replaced by the run date."""
    if isinstance(value, str):
        return value.replace("{date}", date)
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--date",
        type=parse_date,
        default=dt.datetime.now(dt.timezone.utc).date().isoformat(),
        help="run date YYYY-MM-DD, substituted for {date} in the config (default: today, UTC)",
    )
    p.add_argument("--config", required=True, help="YAML job config with {date} in its URIs")
    add_field_flags(p, JobConfig, FLAG_FIELDS)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "nightly",
        help="a dated, scheduled run of a job config (one copy at a time)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)


def dated_config(path: str, date: str) -> dict[str, Any]:
    data = read_yaml_config(path, hint=" (quote URIs holding {date})")
    uris = [data.get("input", {}).get("uri", ""), data.get("output", {}).get("uri", "")]
    if not any("{date}" in str(u) for u in uris):
        log.warning(
            "neither input.uri nor output.uri of %s contains {date}: every night writes the same OUTPUT", path
        )
    return with_date(data, date)


def command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.fresh:
        overrides["output"] = {"fresh": True}
    if args.lease_ttl_s is not None:
        overrides.setdefault("output", {})["lease_ttl_s"] = args.lease_ttl_s
    if args.ray_address:
        overrides["ray"] = {"address": args.ray_address}
    if args.progress_interval_s is not None:
        overrides["progress"] = {"interval_s": args.progress_interval_s}
    cfg = load_config(None, deep_merge(dated_config(args.config, args.date), overrides))
    log.info("nightly run %s: config %s", args.date, json.dumps(cfg.redacted(), sort_keys=True))
    return finish(run_exclusively(cfg), cfg)


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.rerank_nightly ...` (for `ray job submit`): the flags of `rerank nightly`."""
    parser = argparse.ArgumentParser(
        prog="rerank_nightly", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    add_console_flags(parser)
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    return execute(command, args)


if __name__ == "__main__":
    sys.exit(main())
