"""The sections of the run report's page, each made from report.json's numbers: tables and the
SVG charts of `svg.py`; every string from the run is escaped."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from pipeline.rerank.report import svg

SCORE_BINS_SHOWN = 48
POINTS_SHOWN = 80  # throughput plots: adjacent time bins averaged down to at most this many points
ACTOR_SERIES_SHOWN = 8
REUSE_BINS = 10  # the reused share per shard: 0-10 %, ..., 90-100 %
REUSE_SHARDS_SHOWN = 20


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:,.4g}</td>' if abs(value) < 1e4 else f'<td class="n">{value:,.0f}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def phases(data: dict[str, Any]) -> list[tuple[str, float]]:
    """Consecutive parts of the wall time: planning, claim, start-up, scoring, finish."""
    p = data.get("phases", {})
    wall = p.get("wall_s") or 0.0
    cuts = [("planning", p.get("planning_s")), ("claim", p.get("plan_started_s"))]
    cuts += [("start-up", p.get("first_call_s")), ("scoring", p.get("last_call_end_s")), ("finish", wall)]
    out, last = [], 0.0
    for name, at in cuts:
        if at is None:
            continue
        at = min(max(at, last), wall)
        out.append((name, at - last))
        last = at
    return [(n, v) for n, v in out if v > 0]


def throughput(data: dict[str, Any]) -> str:
    tp = data.get("throughput", {})
    bin_s, n = tp.get("bin_s") or 1.0, tp.get("bins") or 0
    if not n:
        return "<p>No scoring call finished: no throughput to show.</p>"
    wall = (data.get("phases") or {}).get("wall_s") or n * bin_s
    scale, unit = (60.0, "minutes") if wall > 900 else (1.0, "seconds")
    k = math.ceil(n / POINTS_SHOWN)  # bins averaged into one point

    def points(values: list[float]) -> list[float]:
        return [sum(values[i : i + k]) / len(values[i : i + k]) for i in range(0, len(values), k)]

    x = [(i + k / 2) * bin_s / scale for i in range(0, n, k)]
    x_label, marks = f"{unit} since the run started (points {k * bin_s:g} s apart)", _start_marks(data, scale)

    def chart(chart_id: str, title: str, series: dict[str, list[float]], y_label: str) -> str:
        return svg.line_chart(chart_id, title, x, series, x_label=x_label, y_label=y_label, marks=marks)

    nodes = tp.get("nodes", {})
    pairs = {"all nodes": points(tp.get("pairs_per_s", []))}
    tokens = {"all nodes": points(tp.get("tokens_per_s", []))}
    if len(nodes) > 1:
        pairs |= {f"node {name}": points(v.get("pairs", [])) for name, v in nodes.items()}
        tokens |= {f"node {name}": points(v.get("tokens", [])) for name, v in nodes.items()}
    parts = [
        chart("pairs-per-s", "Pairs scored per second", pairs, "pairs/s"),
        chart("tokens-per-s", "Tokens scored per second", tokens, "tokens/s"),
    ]
    actors = sorted(tp.get("actors", {}).items(), key=lambda kv: -sum(kv[1].get("pairs", [])))
    if actors:
        shown = {f"actor {name}": points(v.get("pairs", [])) for name, v in actors[:ACTOR_SERIES_SHOWN]}
        title = "Pairs per second, per scoring actor" + (
            f" (the {ACTOR_SERIES_SHOWN} busiest of {len(actors)})"
            if len(actors) > ACTOR_SERIES_SHOWN
            else ""
        )
        parts.append(chart("actor-pairs-per-s", title, shown, "pairs/s"))
    return "\n".join(parts)


def _start_marks(data: dict[str, Any], scale: float) -> list[tuple[float, str]]:
    """The start-up marks of the throughput plots, on their time axis."""
    p = data.get("phases", {})
    return [
        (p[key] / scale, text)
        for key, text in (
            ("planning_s", "planning done"),
            ("first_call_s", "first scoring call"),
            ("first_scored_s", "first scored batch (start-up)"),
        )
        if p.get(key) is not None
    ]


def work(data: dict[str, Any]) -> str:
    nodes = data.get("nodes") or (data.get("summary") or {}).get("nodes") or {}
    actors = data.get("actors") or {}
    if not nodes and actors:  # a report without per-node figures: add up the actors
        for a in actors.values():
            n = nodes.setdefault(a["node"], {"pairs": 0, "scoring_actors": 0})
            n["pairs"] += a["pairs"]
            n["scoring_actors"] += 1
    out = [
        table(
            ["node", "scoring actors", "pairs"],
            [[k, v["scoring_actors"], v["pairs"]] for k, v in nodes.items()],
        )
    ]
    out.append(
        svg.bars("node-pairs", "Pairs scored per node", [(k, v["pairs"]) for k, v in nodes.items()], "pairs")
    )
    rows = []
    for key, a in actors.items():
        busy = a.get("busy_s") or 0.0
        rows.append(
            [
                key,
                a["node"],
                a["calls"],
                a["pairs"],
                a["tokens"],
                round(busy, 2),
                round(a["pairs"] / busy, 1) if busy else None,
            ]
        )
    out.append(
        table(["actor (node:pid)", "node", "calls", "pairs", "tokens", "busy s", "pairs/s busy"], rows)
    )
    out.append(
        svg.bars(
            "actor-pairs",
            "Pairs scored per scoring actor",
            [(k, a["pairs"]) for k, a in actors.items()],
            "pairs",
        )
    )
    return "\n".join(out)


def lengths(data: dict[str, Any]) -> str:
    t = (data.get("token_lengths") or {}).get("tokens") or {}
    p = (data.get("token_lengths") or {}).get("padded") or {}
    if not t.get("count"):
        return "<p>No pairs scored.</p>"
    max_length = (data.get("fingerprint") or {}).get("max_length")
    marks = [(float(max_length), f"max_length {max_length}")] if max_length else []
    eff = (data.get("summary") or {}).get("padding_efficiency")
    chart = svg.histogram(
        "token-lengths",
        "Tokens per pair, and the padded length of its micro-batch",
        t["edges"],
        {"tokens": t["counts"], "padded length": p.get("counts", [])},
        x_label="tokens",
        marks=marks,
    )
    note = (
        f"<p>Mean {t['mean']} tokens per pair (max {t['max']}); mean padded length {p.get('mean')}; "
        f"padding efficiency (tokens / padded tokens) {escape(str(eff))}.</p>"
    )
    return chart + note


def rebinned(h: dict[str, Any], bins: int = SCORE_BINS_SHOWN) -> tuple[list[float], list[int]]:
    """The occupied part of a histogram, merged into at most `bins` bins."""
    counts, edges = h["counts"], h["edges"]
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        return edges[:2], [0]
    lo, hi = used[0], used[-1] + 1
    k = max(1, math.ceil((hi - lo) / bins))
    merged = [sum(counts[i : min(i + k, hi)]) for i in range(lo, hi, k)]
    return [edges[i] for i in range(lo, hi, k)] + [edges[min(lo + k * len(merged), len(edges) - 1)]], merged


def scores(data: dict[str, Any]) -> str:
    out = []
    for name, h in (data.get("scores") or {}).items():
        if not h.get("count"):
            continue
        edges, counts = rebinned(h)
        out.append(
            svg.histogram(
                f"scores-{name}", f"Distribution of {name} (raw logit)", edges, {name: counts}, x_label=name
            )
        )
        out.append(f"<p>{h['count']:,} pairs: min {h['min']}, mean {h['mean']}, max {h['max']}.</p>")
    return "\n".join(out) or "<p>No pairs scored.</p>"


def problems(data: dict[str, Any]) -> str:
    rejects = data.get("rejects") or {}
    failures = data.get("failures") or {"count": 0, "shards": {}}
    out = [
        "<h3>Rejected rows (quarantined under OUTPUT/_rejected/)</h3>",
        table(["reason", "rows"], [[k, v] for k, v in rejects.items()]) if rejects else "<p>None.</p>",
        f"<h3>Failed shards: {failures['count']}</h3>",
    ]
    if failures["shards"]:
        out.append(table(["shard", "reason"], [[k, v] for k, v in failures["shards"].items()]))
        if failures["count"] > len(failures["shards"]):
            out.append(f"<p>... and {failures['count'] - len(failures['shards'])} more.</p>")
    else:
        out.append("<p>None.</p>")
    return "\n".join(out)


def has_reuse(data: dict[str, Any]) -> bool:
    """Whether the run reused stored scores or was given sources to (--reuse)."""
    r = data.get("reuse") or {}
    return bool(r.get("pairs_reused") or r.get("sources"))


def percent(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.1f} %"


def reuse(data: dict[str, Any]) -> str:
    """Pairs scored and reused, the sources and the lookup's figures; per shard published, a
    histogram of the share reused and the shards that scored the most pairs."""
    r = data.get("reuse") or {}
    lookup = r.get("lookup") or {}
    rows: list[list[Any]] = [
        ["pairs scored", r.get("pairs_scored")],
        ["pairs reused (a stored score)", r.get("pairs_reused")],
        ["share reused", percent(r.get("share_reused"))],
        *(["source", uri] for uri in r.get("sources") or []),
    ]
    if lookup:
        rows += [
            ["stored scores found by the lookup", lookup.get("pairs_found")],
            ["lookup s", lookup.get("seconds")],
            ["store files skipped (see the run's warnings)", lookup.get("store_files_skipped")],
        ]
    out = [table(["figure", "value"], rows)]
    if not lookup and r.get("sources"):
        out.append("<p>No lookup ran: no source was usable, or it failed (see the run's warnings).</p>")
    return "\n".join(out + reuse_per_shard(r.get("shards") or []))


def reuse_per_shard(shards: list[dict[str, Any]]) -> list[str]:
    """The shards this run published: how many took what share of their pairs from a store, and
    the REUSE_SHARDS_SHOWN of them that scored the most pairs."""
    if not shards:
        return ["<p>No shard published by this run.</p>"]
    counts = [0] * REUSE_BINS
    for s in shards:
        done = s["pairs_scored"] + s["pairs_reused"]
        if done:
            counts[min(REUSE_BINS - 1, s["pairs_reused"] * REUSE_BINS // done)] += 1
    no_pairs = len(shards) - sum(counts)
    edges = [100.0 * i / REUSE_BINS for i in range(REUSE_BINS + 1)]
    busiest = sorted(shards, key=lambda s: (-s["pairs_scored"], s["path"]))[:REUSE_SHARDS_SHOWN]
    rows = [[s["path"], s["pairs_scored"], s["pairs_reused"], percent(share_of(s))] for s in busiest]
    return [
        svg.histogram(
            "reuse-share",
            "Share of each shard's pairs that took a stored score",
            edges,
            {"shards": counts},
            x_label="% of the shard's pairs reused",
            y_label="shards",
        ),
        f"<p>{len(shards):,} shard(s) published by this run"
        + (f"; {no_pairs:,} with no pairs left out of the histogram" if no_pairs else "")
        + ".</p>",
        f"<h3>The {len(busiest)} shard(s) that scored the most pairs</h3>",
        table(["shard", "pairs scored", "pairs reused", "share reused"], rows),
    ]


def share_of(shard: dict[str, Any]) -> float | None:
    done = shard["pairs_scored"] + shard["pairs_reused"]
    return shard["pairs_reused"] / done if done else None
