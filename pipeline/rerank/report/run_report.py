"""The run report: `OUTPUT/_rerank/report.json` (every number it draws) and `report.html` (one
self-contained page: inline SVG and CSS, no script, nothing fetched), written at the end of each
run that scored (also one that failed shards or was interrupted), through `pipeline.io` so it
lands next to the output on any storage. The HTML is made from the JSON alone (`render_html`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.errors import is_disk_full, storage_error
from pipeline.io import Storage, join
from pipeline.rerank.output.paths import REPORT_HTML, REPORT_JSON
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.html import render_html

log = logging.getLogger(__name__)

MAX_FAILURES = 200  # failed shards listed by name; the count is always whole
VERSION = 1


def report_data(
    *,
    collector: RunCollector,
    output: str,
    outcome: str,
    shards: dict[str, int],
    failed: dict[str, str],
    summary: dict[str, Any],
    config: dict[str, Any],
    fingerprint: dict[str, Any],
    digest: str,
    totals: dict[str, Any] | None = None,
    ended_at: float | None = None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What report.json holds: the run (`shards`: total, skipped, published, failed), the collected
    figures, score reuse (`reuse_data`), failures with reasons, the final summary, the redacted
    config and the fingerprint. `totals`: OUTPUT's row totals (`_SUCCESS`'s), else this run's
    published shards' are used. `comparison`: the change feed's counts, the ranking drift and the
    quality figures with the gate's verdict (pipeline/rerank/compare/finish.py), where asked for."""
    ended_at = time.time() if ended_at is None else ended_at
    shown = dict(sorted(failed.items())[:MAX_FAILURES])
    return {
        "version": VERSION,
        "output": output,
        "outcome": outcome,
        "started_at": collector.started_at,
        "ended_at": ended_at,
        "shards": shards,
        **collector.to_dict(ended_at),
        "rows": totals if totals else collector.rows(),
        "reuse": reuse_data(collector, summary, config),
        "failures": {"count": len(failed), "shards": shown},
        "summary": summary,
        "config": config,
        "fingerprint": fingerprint,
        "digest": digest,
        "comparison": comparison_data(comparison or {}),
    }


def comparison_data(comparison: dict[str, Any]) -> dict[str, Any]:
    """The comparison's figures as report.json keeps them: the change files counted, not listed
    (`_SUCCESS` lists them)."""
    if "changes" not in comparison:
        return comparison
    changes = comparison["changes"]
    return {**comparison, "changes": {**changes, "files": len(changes["files"])}}


def reuse_data(collector: RunCollector, summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Score reuse (--reuse): the run's pairs scored and reused, the share reused, its sources (the
    ones the lookup read, else those given), the lookup's figures (None: it did not run) and, per
    shard this run published, its pairs scored and reused (from its marker)."""
    lookup = summary.get("reuse_lookup")
    given = ((config.get("output") or {}).get("reuse")) or []
    scored, reused = collector.pairs_scored, collector.pairs_reused
    return {
        "sources": list(lookup["sources"] if lookup else given),
        "pairs_scored": scored,
        "pairs_reused": reused,
        "share_reused": round(reused / (scored + reused), 4) if scored + reused else None,
        "lookup": {k: v for k, v in lookup.items() if k != "sources"} if lookup else None,
        "shards": collector.shard_pairs(),
    }


def write_report(storage: Storage, output: str, data: dict[str, Any]) -> str:
    """Writes report.json and report.html under OUTPUT/_rerank/ (each atomically); returns the
    HTML's URI."""
    storage.write_json_atomic(join(output, REPORT_JSON), data)
    uri = join(output, REPORT_HTML)
    storage.write_text_atomic(uri, render_html(data))
    return uri


def publish_report(storage: Storage, output: str, data: dict[str, Any]) -> None:
    """`write_report`, logged; a report that cannot be written is a warning, never the run's
    failure (its shards and `_SUCCESS` stand), and leaves no temp file (a full disk: named)."""
    try:
        uri = write_report(storage, output, data)
    except Exception as e:
        why = storage_error(output, "OUTPUT", e) if is_disk_full(e) else f"{type(e).__name__}: {e}"
        log.warning("could not write the run report under %s: %s", output, why)
        return
    log.info("run report: %s", uri)
