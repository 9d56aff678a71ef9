"""The change feed of one output shard: which (query, passage) rows a rerun added, removed, moved
(`reranked`) or only rescored, compared with the earlier run's rows of the same queries.

Rows pair up by (query_id, doc_id); a pair listed k times in one table pairs its k-th occurrence in
rank order with the k-th in the other. `match_rows` does that pairing once, vectorized (pyarrow hash
encoding, numpy gathers; no Python loop per row or per query), and `pipeline.rerank.compare.drift`
reuses it to measure how far each query's ranking moved. Both tables hold one ranked output's rows:
the id columns, `score` (float32, NaN where unscored) and `rank` (int32, 1 = best in its query).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rerank.output.ranking import first_appearance_codes

CHANGE_KINDS = ("added", "removed", "reranked", "rescored")
ADDED, REMOVED, RERANKED, RESCORED = range(len(CHANGE_KINDS))
UNCHANGED = -1
_CAST_FAILED = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass(frozen=True)
class RankedSide:
    """One table's rows as arrays. Ids are in the type both tables share; codes are shared too."""

    query_ids: pa.ChunkedArray
    doc_ids: pa.ChunkedArray
    query_codes: np.ndarray  # int64; queries numbered by first appearance, current's first
    doc_codes: np.ndarray  # int64; equal doc ids share a code across both tables
    rank: np.ndarray  # int32
    score: np.ndarray  # float32, NaN where unscored or null


@dataclass(frozen=True)
class Matching:
    """Two ranked tables' rows paired by (query_id, doc_id, occurrence in rank order)."""

    current: RankedSide
    previous: RankedSide
    match: np.ndarray  # int64 per current row: the previous row it pairs with, -1 when none
    matched: np.ndarray  # bool per previous row: whether a current row pairs with it
    n_queries: int  # query codes run 0..n_queries-1
    n_docs: int  # doc codes run 0..n_docs-1


def change_schema(query_id_type: pa.DataType, doc_id_type: pa.DataType) -> pa.Schema:
    """The change file's columns. Fixed names whatever the input's id columns are called, so every
    shard's change file, and every run's, reads the same."""
    return pa.schema(
        [
            ("query_id", query_id_type),
            ("doc_id", doc_id_type),
            ("change", pa.string()),
            ("prev_rank", pa.int32()),
            ("rank", pa.int32()),
            ("prev_score", pa.float32()),
            ("score", pa.float32()),
        ]
    )


def diff_rankings(
    current: pa.Table, previous: pa.Table, *, query_id: str, doc_id: str, epsilon: float = 0.0
) -> pa.Table:
    """One row per change from `previous` to `current` (see `change_schema`); unchanged rows are
    left out. `added`: only in current; `removed`: only in previous; `reranked`: in both, rank
    differs; `rescored`: in both, same rank, |score - prev_score| > epsilon (NaN against NaN is no
    change, NaN against a number is one). Queries come in order of first appearance in current,
    then the queries only previous holds; within a query rows go by rank (prev_rank for removed
    rows; a removed row after a current row of the same rank)."""
    if not epsilon >= 0:  # also refuses NaN
        raise ValueError(f"epsilon={epsilon!r}: pass a score tolerance >= 0 (0: any score change counts)")
    m = match_rows(current, previous, query_id=query_id, doc_id=doc_id)
    kinds = current_kinds(m, epsilon)
    changed = np.flatnonzero(kinds != UNCHANGED)
    removed = np.flatnonzero(~m.matched)
    cur_idx = np.concatenate([changed, np.full(len(removed), -1)])
    prev_idx = np.concatenate([m.match[changed], removed])
    is_removed = cur_idx < 0
    query_key = np.where(
        is_removed, _gather(m.previous.query_codes, prev_idx), _gather(m.current.query_codes, cur_idx)
    )
    rank_key = np.where(is_removed, _gather(m.previous.rank, prev_idx), _gather(m.current.rank, cur_idx))
    order = np.lexsort((is_removed, rank_key, query_key))  # stable: ties keep row order
    cur_idx, prev_idx = cur_idx[order], prev_idx[order]
    codes = np.where(cur_idx < 0, REMOVED, _gather(kinds, cur_idx))
    return _change_table(m, cur_idx, prev_idx, codes)


def change_counts(changes: pa.Table) -> dict[str, int]:
    """{kind: rows} of a change table, every kind of CHANGE_KINDS listed (0 where none)."""
    if "change" not in changes.column_names:
        raise ValueError(
            f"no column 'change' in this table (found: {', '.join(changes.column_names)}); "
            "pass a table made by diff_rankings"
        )
    counted = pc.value_counts(changes.column("change")).to_pylist()
    counts = {str(c["values"]): int(c["counts"]) for c in counted}
    unknown = sorted(set(counts) - set(CHANGE_KINDS), key=str)
    if unknown:
        raise ValueError(f"unknown change kind(s) {unknown}; a change is one of {', '.join(CHANGE_KINDS)}")
    return {kind: counts.get(kind, 0) for kind in CHANGE_KINDS}


def current_kinds(m: Matching, epsilon: float) -> np.ndarray:
    """Per current row: ADDED, RERANKED, RESCORED, or UNCHANGED."""
    cur, prev = m.current, m.previous
    has_match = m.match >= 0
    prev_rank = _gather(prev.rank, m.match)
    reranked = has_match & (cur.rank != prev_rank)
    rescored = has_match & ~reranked & score_changed(cur.score, _gather(prev.score, m.match), epsilon)
    return np.select([~has_match, reranked, rescored], [ADDED, RERANKED, RESCORED], UNCHANGED)


def score_changed(score: np.ndarray, prev_score: np.ndarray, epsilon: float) -> np.ndarray:
    """|score - prev_score| > epsilon, in float64; NaN against NaN is no change, NaN against a
    number is one (a row scored now and not before, or the other way round)."""
    a, b = score.astype(np.float64), prev_score.astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, compares False (the same score)
        moved = np.abs(a - b) > epsilon
    return moved | (np.isnan(a) != np.isnan(b))


def match_rows(current: pa.Table, previous: pa.Table, *, query_id: str, doc_id: str) -> Matching:
    """Pairs the rows of two ranked tables by (query_id, doc_id); the k-th occurrence of a pair in
    rank order pairs with the k-th in the other table. Null ids are a value like any other."""
    for name, table in (("current", current), ("previous", previous)):
        _check_columns(name, table, (query_id, doc_id, "score", "rank"))
    cur_q, prev_q = common_ids(current.column(query_id), previous.column(query_id), query_id)
    cur_d, prev_d = common_ids(current.column(doc_id), previous.column(doc_id), doc_id)
    n = current.num_rows
    q_codes = _codes(cur_q, prev_q)
    d_codes = _codes(cur_d, prev_d)
    cur = RankedSide(cur_q, cur_d, q_codes[:n], d_codes[:n], *_rank_and_score("current", current))
    prev = RankedSide(prev_q, prev_d, q_codes[n:], d_codes[n:], *_rank_and_score("previous", previous))
    n_docs = int(d_codes.max(initial=-1)) + 1
    pairs = _pair_codes(q_codes, d_codes, n_docs)
    match = _pair_up(pairs[:n], pairs[n:], cur.rank, prev.rank)
    matched = np.zeros(previous.num_rows, bool)
    matched[match[match >= 0]] = True
    return Matching(cur, prev, match, matched, int(q_codes.max(initial=-1)) + 1, n_docs)


def common_ids(
    current: pa.ChunkedArray, previous: pa.ChunkedArray, column: str
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """`column` of both tables in one type: current's, previous's cast to it where pyarrow can do
    so safely (int64 -> string; string '12' -> int64), else both as strings. Dictionary columns
    are decoded first."""
    current, previous = _decoded(current), _decoded(previous)
    if current.type == previous.type:
        return current, previous
    try:
        return current, previous.cast(current.type, safe=True)
    except _CAST_FAILED:
        pass
    try:
        return current.cast(pa.string()), previous.cast(pa.string())
    except _CAST_FAILED as error:
        raise ValueError(
            f"column {column!r} is {current.type} in the current table and {previous.type} in the "
            f"previous one; the previous one does not cast to the current one's type, and they do not "
            f"both cast to string ({error}); cast one table's column to the other's type first"
        ) from error


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _codes(current: pa.ChunkedArray, previous: pa.ChunkedArray) -> np.ndarray:
    """One int64 per row of current then previous: equal values share a code, numbered by first
    appearance (the query order)."""
    both = pa.chunked_array(current.chunks + previous.chunks, type=current.type)
    if not len(both):
        return np.zeros(0, np.int64)
    return first_appearance_codes(both).astype(np.int64)


def _pair_codes(q_codes: np.ndarray, d_codes: np.ndarray, n_docs: int) -> np.ndarray:
    """Dense codes of the (query, doc) pairs, below n_docs + rows. A doc that one query alone holds
    (the usual case) is its own code, no hashing; the pairs of docs several queries hold are
    hash-encoded after those."""
    owner = np.zeros(n_docs, np.int64)
    owner[d_codes] = q_codes  # any one of the doc's queries
    is_shared_doc = np.zeros(n_docs, bool)
    is_shared_doc[d_codes[owner[d_codes] != q_codes]] = True
    shared = is_shared_doc[d_codes]
    codes = d_codes.copy()
    if shared.any():
        pairs = q_codes[shared] * n_docs + d_codes[shared]  # < rows**2: no overflow
        codes[shared] = n_docs + _dense(pairs)
    return codes


def _dense(keys: np.ndarray) -> np.ndarray:
    """Equal keys share a code, codes below len(keys)."""
    return pc.dictionary_encode(pa.array(keys)).indices.to_numpy().astype(np.int64)


def _pair_up(
    cur_keys: np.ndarray, prev_keys: np.ndarray, cur_rank: np.ndarray, prev_rank: np.ndarray
) -> np.ndarray:
    """Per current row, the previous row of the same key and the same occurrence in rank order
    (-1 where none). Keys are dense: non-negative, below a few times the rows."""
    n = len(cur_keys)
    size = int(max(cur_keys.max(initial=-1), prev_keys.max(initial=-1))) + 1
    if _has_repeats(cur_keys, size) or _has_repeats(prev_keys, size):
        cur_occ, prev_occ = _occurrences(cur_keys, cur_rank), _occurrences(prev_keys, prev_rank)
        width = int(max(cur_occ.max(initial=0), prev_occ.max(initial=0))) + 1
        keys = _dense(np.concatenate([cur_keys * width + cur_occ, prev_keys * width + prev_occ]))
        return _pair_up(keys[:n], keys[n:], cur_rank, prev_rank)  # now without repeats
    where = np.full(size, -1, np.int64)
    where[prev_keys] = np.arange(len(prev_keys))
    return where[cur_keys]


def _has_repeats(keys: np.ndarray, size: int) -> bool:
    return bool(len(keys)) and int(np.bincount(keys, minlength=size).max()) > 1


def _occurrences(keys: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Per row: how many rows with the same key come before it in rank order (ties: row order)."""
    order = np.lexsort((rank, keys))
    sorted_keys = keys[order]
    position = np.arange(len(keys))
    is_first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(keys) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(is_first, position, 0))
    occurrence = np.empty(len(keys), np.int64)
    occurrence[order] = position - first
    return occurrence


def _rank_and_score(name: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    rank = table.column("rank")
    if rank.null_count or not (pa.types.is_integer(rank.type) or pa.types.is_null(rank.type)):
        raise ValueError(
            f"the {name} table's 'rank' column is {rank.type} with {rank.null_count} null(s); "
            "pass a ranked output (pipeline.rerank.output.ranking.rank_table): integer ranks, none null"
        )
    try:
        ranks = rank.cast(pa.int32()).to_numpy()
        scores = pc.fill_null(table.column("score").cast(pa.float32(), safe=False), np.float32("nan"))
    except _CAST_FAILED as error:
        raise ValueError(
            f"the {name} table's rank ({rank.type}) or score ({table.column('score').type}) column does "
            f"not convert to int32 / float32 ({error}); pass a ranked output"
        ) from error
    return ranks, scores.to_numpy()


def _check_columns(name: str, table: pa.Table, wanted: tuple[str, ...]) -> None:
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise ValueError(
            f"the {name} table has no column {', '.join(map(repr, missing))} (found: "
            f"{', '.join(table.column_names) or 'none'}); pass query_id= and doc_id= naming its id "
            "columns, and a ranked output with 'score' and 'rank'"
        )


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], with a zero (False) where index is -1: safe on an empty `values`."""
    return np.append(values, np.zeros(1, values.dtype))[index]


def _change_table(m: Matching, cur_idx: np.ndarray, prev_idx: np.ndarray, codes: np.ndarray) -> pa.Table:
    cur, prev = m.current, m.previous
    is_removed, is_added = cur_idx < 0, prev_idx < 0
    row = np.where(is_removed, len(cur.rank) + prev_idx, cur_idx)  # in current's rows, then previous's
    query_ids = pa.chunked_array(cur.query_ids.chunks + prev.query_ids.chunks, type=cur.query_ids.type)
    doc_ids = pa.chunked_array(cur.doc_ids.chunks + prev.doc_ids.chunks, type=cur.doc_ids.type)
    take = pa.array(row, pa.int64())
    columns = [
        query_ids.take(take).combine_chunks() if len(take) else pa.array([], query_ids.type),
        doc_ids.take(take).combine_chunks() if len(take) else pa.array([], doc_ids.type),
        pc.take(pa.array(CHANGE_KINDS), pa.array(codes, pa.int64())),
        pa.array(_gather(prev.rank, prev_idx), pa.int32(), mask=is_added),
        pa.array(_gather(cur.rank, cur_idx), pa.int32(), mask=is_removed),
        pa.array(_gather(prev.score, prev_idx), pa.float32(), mask=is_added),
        pa.array(_gather(cur.score, cur_idx), pa.float32(), mask=is_removed),
    ]
    return pa.Table.from_arrays(columns, schema=change_schema(query_ids.type, doc_ids.type))
