"""The run report's comparison sections, made from report.json's `comparison` (the figures of
pipeline/rerank/compare/finish.py): the changes since the earlier run (--diff-against) and how far
the rankings moved, with the distribution of Kendall's tau and of the top-10 overlap over the
queries; the quality on judged queries (--qrels) and the gate's checks. A failed gate is also
shown at the top of the page (`gate_banner`)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from pipeline.rerank.report import svg
from pipeline.rerank.report.sections import percent, table

CHANGE_KINDS = ("added", "removed", "reranked", "rescored")  # as compare/changes.py counts them
MEASURES = (("ndcg10", "nDCG@10"), ("mrr10", "MRR@10"), ("recall100", "Recall@100"))
TAU_BINS_SHOWN = 40  # tau over [-1, 1] in bins 0.05 wide
OVERLAP_STEP = 0.1  # top-10 overlaps shown to the nearest tenth: 0, 0.1, ..., 1


def has_changes(data: dict[str, Any]) -> bool:
    """Whether the run was compared with an earlier one (--diff-against)."""
    comparison = data.get("comparison") or {}
    return "changes" in comparison or "drift" in comparison


def has_quality(data: dict[str, Any]) -> bool:
    """Whether the run was measured on judged queries (--qrels)."""
    return "quality" in (data.get("comparison") or {})


def gate_of(data: dict[str, Any]) -> dict[str, Any]:
    return ((data.get("comparison") or {}).get("quality") or {}).get("gate") or {}


def gate_banner(data: dict[str, Any]) -> str:
    """A failed gate at the top of the page: the checks that failed, and that `_SUCCESS` waits."""
    gate = gate_of(data)
    if not gate or gate.get("passed", True):
        return ""
    failed = "".join(f"<li>{escape(str(c.get('what', '')))}</li>" for c in gate.get("failed") or [])
    return (
        '<div class="gate-failed"><b>Quality gate failed.</b> Every shard is published, but no '
        f"_SUCCESS was written:<ul>{failed}</ul>Rerun with the thresholds you accept: nothing is "
        "scored again.</div>"
    )


def changes(data: dict[str, Any]) -> str:
    """The change counts per kind and the earlier run; the drift figures, the two distributions,
    and the queries that moved most."""
    comparison = data.get("comparison") or {}
    out = []
    if "changes" in comparison:
        c = comparison["changes"]
        totals = c.get("totals") or {}
        rows: list[list[Any]] = [
            ["earlier run (--diff-against)", c.get("against")],
            ["score change that counts (epsilon)", c.get("epsilon")],
            *([f"rows {kind}", totals.get(kind)] for kind in CHANGE_KINDS),
            ["change files (OUTPUT/_changes/)", _count(c.get("files"))],
        ]
        out.append(table(["figure", "value"], rows))
    if "drift" in comparison:
        out += drift(comparison["drift"])
    return "\n".join(out)


def _count(files: Any) -> Any:
    """report.json counts the change files; `_SUCCESS` lists them."""
    return len(files) if isinstance(files, list) else files


def drift(d: dict[str, Any]) -> list[str]:
    overlap, tau = d.get("overlap10") or {}, d.get("tau") or {}
    rows: list[list[Any]] = [
        ["queries in both runs", d.get("queries")],
        [
            "top-10 overlap: median / 10th percentile",
            f"{_num(overlap.get('median'))} / {_num(overlap.get('p10'))}",
        ],
        ["Kendall tau: median / 10th percentile", f"{_num(tau.get('median'))} / {_num(tau.get('p10'))}"],
        ["queries whose top-1 changed", percent(d.get("top1_changed_share")) or "n/a"],
    ]
    out = ["<h3>How far the rankings moved</h3>", table(["figure", "value"], rows)]
    if sum(d.get("tau_hist") or []):
        edges, counts = tau_bins(d["tau_hist"])
        out.append(
            svg.histogram(
                "drift-tau",
                "Kendall tau between the two rankings, over the queries",
                edges,
                {"queries": counts},
                x_label="Kendall tau (1: same order, -1: reversed)",
                y_label="queries",
            )
        )
    if d.get("overlap_hist"):
        edges, counts = overlap_bins(d["overlap_hist"])
        out.append(
            svg.histogram(
                "drift-overlap",
                "Share of the top 10 both runs hold, over the queries",
                edges,
                {"queries": counts},
                x_label="top-10 overlap (to the nearest 0.1)",
                y_label="queries",
            )
        )
    return out + movers(d.get("movers") or [])


def tau_bins(hist: list[int], shown: int = TAU_BINS_SHOWN) -> tuple[list[float], list[int]]:
    """A histogram of tau over [-1, 1] (any number of equal bins) merged into about `shown` bins."""
    k = max(1, math.ceil(len(hist) / shown))
    counts = [sum(hist[i : i + k]) for i in range(0, len(hist), k)]
    width = 2.0 / len(hist)
    return [round(-1.0 + i * k * width, 6) for i in range(len(counts))] + [1.0], counts


def overlap_bins(hist: list[list[int]]) -> tuple[list[float], list[int]]:
    """[shared, of, queries] rows as bins centred on 0, 0.1, ..., 1 (each overlap to the nearest)."""
    n = round(1 / OVERLAP_STEP)
    counts = [0] * (n + 1)
    for shared, of, queries in hist:
        counts[min(n, max(0, round(shared / of * n)))] += queries
    return [round((i - 0.5) * OVERLAP_STEP, 6) for i in range(n + 2)], counts


def movers(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    shown = [
        [
            str(m.get("query_id")),
            _num(m.get("overlap10")),
            _num(m.get("tau")),
            "yes" if m.get("top1_changed") else "no",
        ]
        for m in rows
    ]
    return [
        f"<h3>The {len(rows)} queries that moved most</h3>",
        table(["query id", "top-10 overlap", "Kendall tau", "top-1 changed"], shown),
    ]


def quality(data: dict[str, Any]) -> str:
    """The measures of the first-stage and the reranked order on the judged queries, and the gate."""
    q = (data.get("comparison") or {}).get("quality") or {}
    first, reranked = q.get("first_stage") or {}, q.get("reranked") or {}
    rows = [
        [name, _num(first.get(key)), _num(reranked.get(key)), _delta(first.get(key), reranked.get(key))]
        for key, name in MEASURES
    ]
    column = q.get("first_stage_column")
    out = [
        f"<p>{q.get('queries', 0):,} judged queries; the first-stage order: "
        f"{escape(str(column)) if column else 'the input order'}.</p>",
        table(["measure", "first stage", "reranked", "change"], rows),
    ]
    return "\n".join(out + gate_checks(gate_of(data)))


def gate_checks(gate: dict[str, Any]) -> list[str]:
    """Each check of the gate, passed or failed, with its line of figures."""
    if not gate:
        return []
    checks = gate.get("checks") or []
    passed = gate.get("passed", True)
    head = (
        '<h3>Quality gate: <span class="ok">passed</span></h3>'
        if passed
        else '<h3>Quality gate: <span class="bad">failed</span> (no _SUCCESS)</h3>'
    )
    if not checks:
        return [head, "<p>No threshold was set (--min-ndcg, --max-ndcg-drop).</p>"]
    rows = "".join(
        f'<tr class="{"check-passed" if c.get("passed") else "check-failed"}">'
        f"<td>{escape(str(c.get('threshold', '')))}</td>"
        f"<td>{escape(str(c.get('against', '')))}</td>"
        f'<td class="{"ok" if c.get("passed") else "bad"}">{"passed" if c.get("passed") else "FAILED"}</td>'
        f"<td>{escape(str(c.get('what', '')))}</td></tr>"
        for c in checks
    )
    return [
        head,
        f"<table><tr><th>threshold</th><th>against</th><th>result</th><th>figures</th></tr>{rows}</table>",
    ]


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _delta(before: float | None, after: float | None) -> str:
    return "" if before is None or after is None else f"{after - before:+.4f}"
