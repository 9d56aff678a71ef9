"""`rerank nightly`: the scheduled entry point. A dated run of a job config, one copy at a time.

    rerank nightly --date 2026-11-27 --config deploy/nightly.yaml
    python -m jobs.rerank_nightly --date 2026-11-27 --config deploy/nightly.yaml   # ray job submit

`{date}` in the config's strings (INPUT/OUTPUT prefixes, usually) becomes the run date. Before any
work the run takes a lease on its OUTPUT (`_rerank/lease.json`, heartbeat every ttl/4): a second
start of the same run while the first is alive exits 3; a lease whose heartbeat is older than its
ttl (a crashed run) is taken over, so a dead run never blocks the next night. Exit codes otherwise
as `rerank run`: 0 all published, 1 some shards failed (rerun to retry), 2 bad config/input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

log = logging.getLogger("rerank.nightly")


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


def add_nightly_parser(sub: Any) -> None:
    p = sub.add_parser(
        "nightly",
        help="a dated, scheduled run of a job config (one copy at a time)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--date",
        type=parse_date,
        default=dt.datetime.now(dt.timezone.utc).date().isoformat(),
        help="run date YYYY-MM-DD, substituted for {date} in the config (default: today, UTC)",
    )
    p.add_argument("--config", required=True, help="YAML job config with {date} in its URIs")
    p.add_argument(
        "--lease-ttl-s",
        type=float,
        default=600.0,
        help="a lease without heartbeat for this long is stale and taken over (default 600)",
    )
    p.add_argument("--fresh", action="store_true", help="discard earlier progress of this date's run")
    p.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")


def dated_config(path: str, date: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"--config: no such file {path!r}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(
            [f"--config {path!r} is not valid YAML (quote URIs holding {{date}}): {e}"]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([f"--config {path!r} must hold a mapping"])
    uris = [data.get("input", {}).get("uri", ""), data.get("output", {}).get("uri", "")]
    if not any("{date}" in str(u) for u in uris):
        log.warning(
            "neither input.uri nor output.uri of %s contains {date}: every night writes the same OUTPUT", path
        )
    return with_date(data, date)


def command_nightly(args: argparse.Namespace) -> int:
    from jobs.rerank import finish
    from pipeline.config import deep_merge, load_config
    from pipeline.lease import RunLease
    from pipeline.runner import run, storage_from_config

    overrides: dict[str, Any] = {}
    if args.fresh:
        overrides["output"] = {"fresh": True}
    if args.ray_address:
        overrides["ray"] = {"address": args.ray_address}
    cfg = load_config(None, deep_merge(dated_config(args.config, args.date), overrides))
    log.info("nightly run %s: config %s", args.date, json.dumps(cfg.redacted(), sort_keys=True))
    storage = storage_from_config(cfg)
    storage.check_root(cfg.output.uri, "OUTPUT")  # a bad bucket is exit 2, before the lease write
    with RunLease(storage, cfg.output.uri, ttl_s=args.lease_ttl_s):
        report = run(cfg)
    return finish(report, cfg)


def main(argv: list[str] | None = None) -> int:
    from jobs.rerank import main as rerank_main

    return rerank_main(["nightly", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
