"""Output ordering: rows grouped by query, best first, ranked. Pure pyarrow/numpy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """FlagEmbedding's `normalize=True`: sigmoid computed in float64."""
    return 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))


def first_appearance_codes(column: pa.ChunkedArray) -> np.ndarray:
    """One integer per row, numbering the values in order of first appearance (nulls one value):
    the query order. A dictionary column is decoded first: `dictionary_encode` would keep its
    dictionary's order (q2, q1, q0 for rows q0, q1, q2), and its null indices would not number."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    return np.asarray(encoded.combine_chunks().indices.to_numpy(zero_copy_only=False))


def rank_table(
    table: pa.Table,
    scores: np.ndarray,
    query_id_column: str,
    top_k: int | None = None,
    normalize: bool = False,
    score_columns: list[str] | None = None,
    unscored_order: np.ndarray | None = None,
) -> pa.Table:
    """Every input row and column unchanged, plus `score` (float32) and `rank` (int32, 1 = best).

    Queries appear in order of their first row; within a query, candidates are sorted by score,
    highest first, ties (and NaN scores, which go last) kept in input order. With `top_k`, only
    ranks 1..top_k are kept. With `normalize`, a `score_norm` column (sigmoid) is added.

    `scores` is one score per row, or [rows, columns] named by `score_columns` (layerwise rerankers
    with several cutoff layers: `score_l28`, `score_l40`, ...): then `score` is the first column and
    each named column is added too (with `<name>_norm` under `normalize`).

    `unscored_order` orders the rows without a score (NaN) within their query, ascending, before
    input order (the prefilter column's order, `pipeline.rerank.input.cascade`).
    """
    n = table.num_rows
    given = np.asarray(scores, dtype=np.float32)
    count = len(given) if given.ndim else 1
    if count != n or given.ndim > 2:  # before the reshape, which would hide it or fail on its own
        raise ValueError(
            f"{count} scores for {n} rows (shape {given.shape}); pass one score, or one row of "
            "score columns, per row"
        )
    matrix = given.reshape(n, -1) if n else np.zeros((0, 1), np.float32)
    main = matrix[:, 0]
    query_order = first_appearance_codes(table.column(query_id_column))
    sort_key = np.where(np.isnan(main), np.inf, -main.astype(np.float64))
    unscored_key = np.zeros(n) if unscored_order is None else np.where(np.isnan(main), unscored_order, 0)
    order = np.lexsort((np.arange(n), unscored_key, sort_key, query_order))
    sorted_queries = query_order[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_queries)) + 1] if n else np.array([], int)
    starts = np.repeat(group_start, np.diff(np.r_[group_start, n])) if n else np.array([], int)
    ranks = (np.arange(n) - starts + 1).astype(np.int32)
    if top_k is not None:
        keep = ranks <= top_k
        order, ranks = order[keep], ranks[keep]
    out = table.take(pa.array(order, pa.int64()))
    out = out.append_column("score", pa.array(main[order], pa.float32()))
    out = out.append_column("rank", pa.array(ranks, pa.int32()))
    if normalize:
        out = out.append_column("score_norm", pa.array(sigmoid(main[order]), pa.float32()))
    names = score_columns or ["score"]
    for i, name in enumerate(names):
        if name == "score":
            continue
        out = out.append_column(name, pa.array(matrix[order, i], pa.float32()))
        if normalize:
            out = out.append_column(f"{name}_norm", pa.array(sigmoid(matrix[order, i]), pa.float32()))
    return out
