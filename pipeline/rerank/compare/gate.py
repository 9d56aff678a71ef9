"""The quality gate before `_SUCCESS`: a worse ranking is published (its shards are the run's work)
but never announced as complete.

`--min-ndcg X`: the reranked order's nDCG@10 on the judged queries is at least X.
`--max-ndcg-drop X`: it is at most X below the first-stage order's, and at most X below the
figure the earlier run (`--diff-against`, else the first `--reuse` source) recorded, where it
recorded one. The figures are means over the judged queries each run saw.

The verdict goes to `OUTPUT/_rerank/quality.json` whether it passes or not; thresholds are not in
the fingerprint, so a rerun with others checks again without scoring anything.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.io import Storage, join
from pipeline.rerank.config import CompareConfig
from pipeline.rerank.output.bookkeeping import QUALITY_RECORD, read_record
from pipeline.rerank.output.paths import QUALITY_JSON

MEASURE = "ndcg10"  # what the thresholds are about: nDCG@10


def _figure(summary: dict[str, Any] | None, order: str) -> float | None:
    value = ((summary or {}).get(order) or {}).get(MEASURE)
    return None if value is None else float(value)


def gate_checks(
    c: CompareConfig, summary: dict[str, Any], previous: dict[str, Any] | None, against: str | None
) -> list[dict[str, Any]]:
    """Each threshold set, checked: {threshold, limit, value, passed, what} (`what`: one line with
    the figures). `summary`: this run's quality summary; `previous`: the earlier run's, if any."""
    reranked, first = _figure(summary, "reranked"), _figure(summary, "first_stage")
    checks = []
    if c.min_ndcg is not None:
        ok = reranked is not None and reranked >= c.min_ndcg
        checks.append(
            _check(
                "min_ndcg",
                c.min_ndcg,
                reranked,
                ok,
                f"reranked nDCG@10 {_f(reranked)} (at least {c.min_ndcg} wanted)",
            )
        )
    if c.max_ndcg_drop is not None:
        drop = None if reranked is None or first is None else first - reranked
        ok = drop is not None and drop <= c.max_ndcg_drop
        what = (
            f"reranked nDCG@10 {_f(reranked)} vs first-stage {_f(first)}: drop {_f(drop)} "
            f"(at most {c.max_ndcg_drop})"
        )
        checks.append(_check("max_ndcg_drop", c.max_ndcg_drop, drop, ok, what, against="first_stage"))
        before = _figure(previous, "reranked")
        if before is not None and reranked is not None:
            drop = before - reranked
            what = (
                f"reranked nDCG@10 {_f(reranked)} vs {before:.4f} recorded by {against}: drop {_f(drop)} "
                f"(at most {c.max_ndcg_drop})"
            )
            checks.append(
                _check(
                    "max_ndcg_drop",
                    c.max_ndcg_drop,
                    drop,
                    drop <= c.max_ndcg_drop,
                    what,
                    against="previous_run",
                )
            )
    return checks


def _check(
    threshold: str, limit: float, value: float | None, ok: bool, what: str, **extra: Any
) -> dict[str, Any]:
    return {"threshold": threshold, "limit": limit, "value": value, "passed": bool(ok), "what": what, **extra}


def _f(value: float | None) -> str:
    return "n/a (no judged query)" if value is None else f"{value:.4f}"


def verdict(checks: list[dict[str, Any]], summary: dict[str, Any], qrels: str) -> dict[str, Any]:
    """What `_rerank/quality.json` holds: passed, the checks that failed, every check, the summary."""
    return {
        "passed": all(c["passed"] for c in checks),
        "failed": [c for c in checks if not c["passed"]],
        "checks": checks,
        "summary": summary,
        "qrels": qrels,
        "checked_at": time.time(),
    }


def write_verdict(storage: Storage, output: str, data: dict[str, Any]) -> None:
    storage.write_json_atomic(join(output, QUALITY_JSON), data)


def read_verdict(storage: Storage, output: str) -> dict[str, Any] | None:
    """The last verdict written in OUTPUT, if any (a damaged one counts as none)."""
    record = read_record(storage, join(output, QUALITY_JSON), QUALITY_RECORD)
    return record if isinstance(record, dict) else None
