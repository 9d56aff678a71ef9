"""`--reuse PREV_OUTPUT`: which earlier runs' score stores this run may take scores from.

Checked on the driver before anything is written, one source at a time, newest first as given. A
source is used only if it completed (its `_SUCCESS` names a score store) with this run's scoring
identity; any other source is skipped with one warning saying why (it does not exist, never
completed, predates score reuse, or scored with another model, max_length, dtype, ...): a night
whose previous run failed still runs, at the cost of scoring everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline.io import Storage, join
from pipeline.rerank.output.bookkeeping import SUCCESS_RECORD, Damaged, read_record
from pipeline.rerank.output.checkpoint import is_temp_file
from pipeline.rerank.output.paths import SCORES, SUCCESS
from pipeline.rerank.reuse.identity import identity_change

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReuseSource:
    """An earlier run whose stored scores this run may take: its OUTPUT and its store files."""

    uri: str
    files: list[str]  # store file URIs
    pairs: int = 0  # pairs its store holds, as its _SUCCESS counts them


def read_success(storage: Storage, uri: str) -> dict[str, Any] | str:
    """The source's `_SUCCESS`, or why there is none to use."""
    try:
        success = read_record(storage, join(uri, SUCCESS), SUCCESS_RECORD)
    except OSError as e:
        return f"its _SUCCESS cannot be read ({type(e).__name__}: {e})"
    if success is None:
        return "it holds no _SUCCESS (that run does not exist or never completed)"
    return f"{success}" if isinstance(success, Damaged) else success


def source_problem(success: dict[str, Any] | str, identity: dict[str, Any], digest: str) -> str | None:
    """Why the run whose `_SUCCESS` (or its problem) this is gives no scores to this one; None if
    it may."""
    if isinstance(success, str):
        return success
    store = success.get("score_store")
    if store is None:
        return "its _SUCCESS names no score store (a run of a version before score reuse)"
    if store["digest"] != digest:
        change = identity_change(store["identity"], identity)
        return f"it scored with {change}" if change else "its score store's identity digest differs"
    return None


def usable_sources(
    storage: Storage, uris: list[str], identity: dict[str, Any], digest: str, output: str
) -> list[ReuseSource]:
    """The sources among `uris` this run takes scores from (in the order given: newest first);
    one warning per source skipped."""
    sources = []
    given: dict[str, str] = {}  # `a` and `a/` are one source, shown as first given
    for u in uris:
        given.setdefault(u.rstrip("/") or u, u)
    for uri in given.values():
        if uri.rstrip("/") == output.rstrip("/"):
            log.warning(
                "--reuse %s skipped: it is this run's own OUTPUT (a resume keeps its done shards)", uri
            )
            continue
        success = read_success(storage, uri)
        problem = source_problem(success, identity, digest)
        files = [] if problem else store_files(storage, uri)
        if problem is None and not files:
            problem = "it holds no stored scores"
        if problem is not None:
            log.warning("--reuse %s skipped, its scores are not used: %s", uri, problem)
            continue
        log.info("--reuse %s: %d store file(s) with this run's scoring identity", uri, len(files))
        assert isinstance(success, dict)
        totals = success.get("totals")
        pairs = totals.get("pairs_stored", 0) if isinstance(totals, dict) else 0
        sources.append(ReuseSource(uri, files, pairs if isinstance(pairs, int) else 0))
    return sources


def store_files(storage: Storage, uri: str) -> list[str]:
    root = join(uri, SCORES)
    try:
        return [
            join(root, rel)
            for rel in storage.list_files(root)
            if rel.endswith(".parquet") and not is_temp_file(rel)
        ]
    except OSError as e:
        log.warning("--reuse %s: its store cannot be listed (%s: %s)", uri, type(e).__name__, e)
        return []
