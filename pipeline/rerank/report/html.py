"""The run report's HTML page, made from report.json's numbers alone: inline CSS, the sections of
`sections.py` (tables and inline SVG), no script and nothing fetched."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

from pipeline.rerank.report import comparison, svg
from pipeline.rerank.report.sections import (
    has_reuse,
    lengths,
    phases,
    problems,
    reuse,
    scores,
    table,
    throughput,
    work,
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:920px;
color:#111827}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb}
.sub{color:#4b5563}.ok{color:#15803d}.bad{color:#b91c1c}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #f3f4f6;text-align:left}
th{color:#374151;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:10px;overflow:auto;font-size:12px}
svg.chart{display:block;margin:8px 0;background:#fff}
svg text{font-size:11px;fill:#374151}svg text.ct{font-size:13px;font-weight:600;fill:#111827}
svg text.ml{fill:#4b5563}svg .grid{stroke:#f3f4f6}svg .axis{stroke:#9ca3af}
.gate-failed{border:2px solid #b91c1c;background:#fef2f2;color:#7f1d1d;padding:8px 12px;margin:10px 0}
.gate-failed ul{margin:4px 0}tr.check-failed td{background:#fef2f2}
"""


def _when(epoch: float | None) -> str:
    if not epoch:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(data: dict[str, Any]) -> str:
    """The whole page for a report.json dict."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>rerank report: {escape(str(data.get('output', '')))}</title><style>{CSS}</style></head>"
        "<body>\n" + "\n".join(_header(data) + _body(data)) + "\n</body></html>\n"
    )


def _header(data: dict[str, Any]) -> list[str]:
    """The title, the run's output, times and outcome, and its figures."""
    outcome = str(data.get("outcome", "?"))
    status = "ok" if outcome == "complete" else "bad"
    chunked = ((data.get("config") or {}).get("input") or {}).get("long_passages") == "chunk"
    return [
        "<h1>offline-rerank run report</h1>",
        f'<p class="sub">{escape(str(data.get("output", "")))}<br>'
        f"started {_when(data.get('started_at'))}, ended {_when(data.get('ended_at'))} — "
        f'<b class="{status}">{escape(outcome)}</b></p>',
        comparison.gate_banner(data),
        "<h2>Figures</h2>",
        table(["figure", "value"], _figures(data)),
        (
            "<p>--long-passages chunk: pairs count rows (a row once, when its last window is "
            "scored); tokens, token lengths and scores count windows (what one scoring row holds).</p>"
            if chunked
            else ""
        ),
    ]


def _figures(data: dict[str, Any]) -> list[list[Any]]:
    """The figures table's rows: shards, rows, pairs, tokens, rates, start-up, resources."""
    s, sh, rows = data.get("summary") or {}, data.get("shards") or {}, data.get("rows") or {}
    phases_s = data.get("phases") or {}
    return [
        [
            "shards (total / skipped as done / published / failed)",
            " / ".join(str(sh.get(k, "?")) for k in ("total", "skipped", "published", "failed")),
        ],
        [
            "rows in / out / rejected / dropped by top-k",
            " / ".join(
                str(rows.get(k, "?")) for k in ("rows_in", "rows_out", "rows_rejected", "rows_dropped_top_k")
            ),
        ],
        ["pairs scored", s.get("pairs_scored")],
        ["tokens (padded)", f"{s.get('tokens')} ({s.get('padded_tokens')})"],
        ["padding efficiency", s.get("padding_efficiency")],
        ["wall s", phases_s.get("wall_s")],
        ["pairs/s (whole run)", s.get("pairs_per_s")],
        ["steady pairs/s (scoring calls)", s.get("steady_pairs_per_s")],
        ["start-up s (to the first scored batch)", phases_s.get("first_scored_s")],
        ["scoring utilisation", s.get("scoring_utilisation")],
        *kernel_rows(s.get("kernels")),
        ["planning s", s.get("planning_s")],
        ["driver peak RSS MiB", s.get("driver_peak_rss_mib")],
    ]


def kernel_rows(kernels: dict[str, Any] | None) -> list[list[Any]]:
    """Precision, attention path and compile the scoring actors ran, each with why."""
    if not kernels:
        return []
    rows = []
    for key, label in (("dtype", "precision"), ("attention", "attention path"), ("compile", "compile")):
        ran = ", ".join(f"{v} ({n} actor{'s' if n > 1 else ''})" for v, n in (kernels.get(key) or {}).items())
        why = "; ".join((kernels.get("reasons") or {}).get(key) or [])
        rows.append([label, f"{ran}: {why}" if why else ran])
    if kernels.get("attention_kernel"):
        rows.append(["CPU attention kernel", ", ".join(kernels["attention_kernel"])])
    if kernels.get("last_layer"):
        rows.append(["last layer (packed path)", ", ".join(kernels["last_layer"])])
    return rows


def _body(data: dict[str, Any]) -> list[str]:
    """The sections after the figures: the comparison with the earlier run and the quality on
    judged queries (when asked for), score reuse (when the run had any), time, throughput, work,
    lengths, scores, problems, config."""
    busy = data.get("stage_busy_s") or {}
    stage_items = [(k, float(busy[k])) for k in ("tokenize", "score", "publish") if busy.get(k) is not None]
    return [
        *(
            ["<h2>Comparison with the earlier run</h2>", comparison.changes(data)]
            if comparison.has_changes(data)
            else []
        ),
        *(
            ["<h2>Quality on judged queries</h2>", comparison.quality(data)]
            if comparison.has_quality(data)
            else []
        ),
        *(["<h2>Score reuse (--reuse)</h2>", reuse(data)] if has_reuse(data) else []),
        "<h2>Where the time went</h2>",
        svg.stacked_bar("phases", "Wall time by phase", phases(data)),
        svg.bars("stage-busy", "Busy time per stage, summed over workers", stage_items, "s"),
        "<p>Tokenize: Ray Data's task time of the tokenize stage; score: time inside scoring calls "
        "(the actors' clocks); publish: from a shard's last score reaching the driver to its "
        "done-marker (batching wait included). Stages overlap: the sum can exceed the wall time.</p>",
        "<h2>Throughput over time</h2>",
        throughput(data),
        "<h2>Work per node and scoring actor</h2>",
        work(data),
        "<h2>Token lengths and padding</h2>",
        lengths(data),
        "<h2>Scores</h2>",
        scores(data),
        "<h2>Rejects and failures</h2>",
        problems(data),
        "<h2>Config (credentials masked) and fingerprint</h2>",
        f"<p>digest <code>{escape(str(data.get('digest', '')))}</code></p>",
        f"<pre>{escape(json.dumps(data.get('fingerprint'), indent=1, sort_keys=True))}</pre>",
        f"<pre>{escape(json.dumps(data.get('config'), indent=1, sort_keys=True))}</pre>",
    ]
