"""Rows the job will not score: which, and why. They go to OUTPUT/_rejected/, never silently away."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.rerank.config import REJECT_REASON, InputConfig


def reject_reasons(
    queries: list,
    passages: list,
    query_column: str,
    passage_column: str,
    query_ids: list | None = None,
    query_id_column: str = "query_id",
) -> list[str | None]:
    """Per row, why it cannot be scored (a null query id, when `query_ids` are given: it would
    rank with every other null id as one query; a null or empty query or passage), or None."""
    reasons: list[str | None] = []
    ids = query_ids if query_ids is not None else [""] * len(queries)
    for qid, q, p in zip(ids, queries, passages, strict=True):
        if qid is None:
            reasons.append(f"null {query_id_column}")
        elif q is None or p is None:
            reasons.append(f"null {query_column if q is None else passage_column}")
        elif not q.strip() or not p.strip():
            reasons.append(f"empty {query_column if not q.strip() else passage_column}")
        else:
            reasons.append(None)
    return reasons


def table_reject_reasons(table: pa.Table, columns: InputConfig) -> list[str | None]:
    """`reject_reasons` of a flat table's rows, by the job's columns (the query id's included)."""
    c = columns
    return reject_reasons(
        table.column(c.query_column).to_pylist(),
        table.column(c.passage_column).to_pylist(),
        c.query_column,
        c.passage_column,
        query_ids=table.column(c.query_id_column).to_pylist(),
        query_id_column=c.query_id_column,
    )


def split_rejected(table: pa.Table, rows: np.ndarray, reasons: list[str]) -> tuple[np.ndarray, pa.Table]:
    """A mask of the rows to keep, and the rejected rows (all columns) with a `reject_reason`."""
    keep = np.ones(table.num_rows, dtype=bool)
    keep[rows] = False
    rejected = table.take(pa.array(rows, pa.int64())).append_column(
        REJECT_REASON, pa.array(reasons, pa.string())
    )
    return keep, rejected


def duplicate_pairs(table: pa.Table, query_id_column: str, doc_id_column: str) -> int:
    """Rows that repeat an earlier (query_id, doc_id): kept and scored, but worth reporting."""
    if table.num_rows == 0:
        return 0
    counts = table.group_by([query_id_column, doc_id_column]).aggregate([([], "count_all")])
    return int(table.num_rows - counts.num_rows)
