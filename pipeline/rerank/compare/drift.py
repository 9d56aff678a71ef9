"""How far each query's ranking moved between two runs, and a fixed-size summary of it.

`query_drift` gives one row per query both tables hold: the overlap of their top 10, Kendall's tau
over the candidates both rank (paired as in `changes.match_rows`), whether the best doc changed.
`drift_summary` folds those rows into a fixed-size, JSON-able dict (an exact histogram of the
overlaps, a 0.01-wide one of tau, the MOVERS queries that moved most) that travels in a shard's
done-marker; `merge_summaries` merges the shards' into the run's, so the driver's memory never grows
with the queries; `describe` reads the medians and 10th percentiles from it.
"""

from __future__ import annotations

import heapq
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import kendalltau

from pipeline.rerank.compare.changes import Matching, match_rows

TOP = 10  # overlap10: candidates ranked 1..TOP
TAU_BINS = 200  # histogram of tau over [-1, 1], bin width 0.01
MOVERS = 20
PAIRWISE_MAX = 512  # up to this many common candidates, tau counts pairs in numpy, all queries at once;
# above it, one scipy call per query (~0.2 ms each, O(n log n)). Near 512 both cost about the same.
PAIR_BUDGET = 1 << 22  # pair cells per numpy block: bounds the memory (a few bytes a cell)
WIDTH_STEP = 16  # queries are padded to a multiple of this many candidates in a block


def query_drift(current: pa.Table, previous: pa.Table, *, query_id: str, doc_id: str) -> pa.Table:
    """One row per query both tables hold, in order of first appearance in current:
    `query_id` (current's type; strings where the id types could not be reconciled),
    `overlap10` (|top10(prev) & top10(cur)| / max(|top10(prev)|, |top10(cur)|), doc ids compared
    once each; NaN when neither ranks anything 1..10), `tau` (Kendall's tau-b between the two
    rankings over the candidates both hold; NaN under 2), `top1_changed` (the doc at the best rank
    differs), `common` (candidates both hold)."""
    m = match_rows(current, previous, query_id=query_id, doc_id=doc_id)
    cur, prev, n_queries = m.current, m.previous, m.n_queries
    in_both = (np.bincount(cur.query_codes, minlength=n_queries) > 0) & (
        np.bincount(prev.query_codes, minlength=n_queries) > 0
    )
    queries = np.flatnonzero(in_both)  # ascending codes: current's order of first appearance
    common = np.bincount(cur.query_codes[m.match >= 0], minlength=n_queries)
    top1_changed = _best_docs(cur.query_codes, cur.rank, cur.doc_codes, n_queries) != _best_docs(
        prev.query_codes, prev.rank, prev.doc_codes, n_queries
    )
    first_rows = pa.array(_first_rows(cur.query_codes)[queries], pa.int64())
    ids = cur.query_ids.take(first_rows) if len(first_rows) else pa.array([], cur.query_ids.type)
    return pa.table(
        {
            "query_id": ids,
            "overlap10": pa.array(top_overlap(m)[queries], pa.float64()),
            "tau": pa.array(kendall_tau(m)[queries], pa.float64()),
            "top1_changed": pa.array(top1_changed[queries], pa.bool_()),
            "common": pa.array(common[queries], pa.int64()),
        }
    )


def top_overlap(m: Matching) -> np.ndarray:
    """Per query code: the share of top-10 doc ids both rankings hold (NaN: neither has a top 10)."""

    def top_pairs(codes: np.ndarray, rank: np.ndarray, docs: np.ndarray) -> np.ndarray:
        top = rank <= TOP
        return np.unique(codes[top] * m.n_docs + docs[top])  # a doc listed twice counts once

    cur, prev = m.current, m.previous
    now = top_pairs(cur.query_codes, cur.rank, cur.doc_codes)
    before = top_pairs(prev.query_codes, prev.rank, prev.doc_codes)
    shared = np.intersect1d(now, before, assume_unique=True)

    def per_query(keys: np.ndarray) -> np.ndarray:
        return np.bincount(keys // max(m.n_docs, 1), minlength=m.n_queries)

    size = np.maximum(per_query(now), per_query(before))
    with np.errstate(invalid="ignore", divide="ignore"):
        return per_query(shared) / size


def kendall_tau(m: Matching) -> np.ndarray:
    """Per query code: Kendall's tau-b between current's and previous's ranks of the candidates
    they pair (NaN under 2). Queries of up to PAIRWISE_MAX without tied ranks: counted in numpy,
    all at once; larger ones, or any with ties (ranks are unique in a ranked output): scipy."""
    paired = m.match >= 0
    q, x = m.current.query_codes[paired], m.current.rank[paired].astype(np.int64)
    y = m.previous.rank[m.match[paired]].astype(np.int64)
    order = _by_query_then(q, x)
    q, x, y = q[order], x[order], y[order]
    counts = np.bincount(q, minlength=m.n_queries)
    starts = np.cumsum(counts) - counts
    tied_x = np.zeros(m.n_queries, bool)
    tied_x[q[1:][(q[1:] == q[:-1]) & (x[1:] == x[:-1])]] = True  # sorted: equal x sit side by side
    tau = np.full(m.n_queries, np.nan)
    small = np.flatnonzero((counts >= 2) & (counts <= PAIRWISE_MAX) & ~tied_x)
    tau[small] = _pairwise_tau(y, starts[small], counts[small])  # NaN where y holds a tie
    for code in np.flatnonzero((counts >= 2) & np.isnan(tau)):
        rows = slice(starts[code], starts[code] + counts[code])
        tau[code] = kendalltau(x[rows], y[rows]).statistic
    return tau


def _pairwise_tau(y: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Tau of each query whose previous ranks are y[start:start+count], in current rank order (no
    tied x): with no tied y either, (C - D) / (n(n-1)/2) = 4C / (n(n-1)) - 1, C the pairs i < j with
    y_i < y_j; NaN where y holds a tie. Blocks of queries of similar size, padded with a rank above
    all (a padded cell after a real one adds one known pair to C)."""
    tau = np.empty(len(counts))
    widths = -(-counts // WIDTH_STEP) * WIDTH_STEP
    pad = np.iinfo(np.int64).max
    for width in np.unique(widths):
        same = np.flatnonzero(widths == width)
        upper = np.triu(np.ones((width, width), bool), 1)  # [i, j]: i < j
        cols = np.arange(width)
        for block in np.array_split(same, -(-len(same) * width * width // PAIR_BUDGET)):
            n = counts[block]
            valid = cols < n[:, None]
            padded = np.where(valid, y[np.where(valid, starts[block][:, None] + cols, 0)], pad)
            rising = (padded[:, None, :] > padded[:, :, None]) & upper  # [query, i, j]: y_j > y_i
            concordant = np.count_nonzero(rising, axis=(1, 2)) - n * (width - n)
            ordered = np.sort(padded, axis=1)
            tied = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != pad)).any(axis=1)
            tau[block] = np.where(tied, np.nan, 4.0 * concordant / (n * (n - 1)) - 1.0)
    return tau


def _by_query_then(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The order that sorts rows by query code, then x; a ranked output already is (no sort)."""
    if not len(q):
        return np.zeros(0, np.int64)
    key = q * (int(x.max()) - int(x.min()) + 1) + (x - x.min())  # < 2**63: codes < rows, ranks int32
    if bool(np.all(key[1:] > key[:-1])):
        return np.arange(len(q))
    return np.argsort(key, kind="stable")


def _best_docs(codes: np.ndarray, rank: np.ndarray, docs: np.ndarray, n_queries: int) -> np.ndarray:
    """Per query code: the doc code of its best-ranked row (rank 1; the first such row), -1 if none."""
    best = np.full(n_queries, np.iinfo(np.int32).max, np.int32)  # rank's type: ufunc.at's fast path
    np.minimum.at(best, codes, rank)
    at_best = np.flatnonzero(rank == best[codes])
    queries, first = np.unique(codes[at_best], return_index=True)
    out = np.full(n_queries, -1, np.int64)
    out[queries] = docs[at_best[first]]
    return out


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """Per query code, the first current row holding it (codes number first appearances 0, 1, ...)."""
    running = np.maximum.accumulate(np.r_[-1, codes])
    return np.flatnonzero(np.diff(running) > 0)


def drift_summary(drift: pa.Table) -> dict[str, Any]:
    """A query_drift table folded into a fixed-size, JSON-able dict: `queries`, `top1_changed`,
    `tau_queries` (with a tau), `overlap_hist` ([shared, of, queries] per overlap value shared/of,
    exact, ascending), `tau_hist` (TAU_BINS counts over [-1, 1], bin width 0.01, a bin holding its
    lower edge), `movers` (the MOVERS queries that moved most; see `mover_key`)."""
    wanted = ("query_id", "overlap10", "tau", "top1_changed")
    missing = [c for c in wanted if c not in drift.column_names]
    if missing:
        raise ValueError(
            f"no column {', '.join(map(repr, missing))} in this table (found: "
            f"{', '.join(drift.column_names) or 'none'}); pass a table made by query_drift"
        )
    overlap = drift.column("overlap10").to_numpy().astype(np.float64)
    tau = drift.column("tau").to_numpy().astype(np.float64)
    top1 = drift.column("top1_changed").to_numpy(zero_copy_only=False).astype(bool)
    sort_key = (
        np.arange(len(tau)),
        ~top1,
        np.nan_to_num(tau, nan=np.inf),
        np.nan_to_num(overlap, nan=np.inf),
    )
    moved_most = np.lexsort(sort_key)[:MOVERS]
    movers = drift.select(list(wanted)).take(pa.array(moved_most, pa.int64())).to_pylist()
    return {
        "queries": drift.num_rows,
        "top1_changed": int(top1.sum()),
        "tau_queries": int(np.count_nonzero(~np.isnan(tau))),
        "overlap_hist": _overlap_hist(overlap),
        "tau_hist": _tau_hist(tau),
        "movers": [_mover(row) for row in movers],
    }


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Shards' drift summaries merged into the run's, of the same shape: counts and histograms
    added, the MOVERS that moved most of all kept (ties: in the order of `summaries`)."""
    overlaps: dict[tuple[int, int], int] = {}
    tau_hist = np.zeros(TAU_BINS, np.int64)
    for i, summary in enumerate(summaries):
        if len(summary.get("tau_hist", ())) != TAU_BINS or "overlap_hist" not in summary:
            raise ValueError(
                f"drift summary {i} has no overlap_hist or a tau_hist of other than {TAU_BINS} bins "
                f"(keys: {sorted(summary)}); recompute that shard's comparison with this version"
            )
        tau_hist += np.asarray(summary["tau_hist"], np.int64)
        for shared, of, count in summary["overlap_hist"]:
            overlaps[(shared, of)] = overlaps.get((shared, of), 0) + count
    movers = heapq.nsmallest(MOVERS, (m for s in summaries for m in s["movers"]), key=mover_key)
    return {
        "queries": sum(s["queries"] for s in summaries),
        "top1_changed": sum(s["top1_changed"] for s in summaries),
        "tau_queries": sum(s["tau_queries"] for s in summaries),
        "overlap_hist": [
            [a, b, c] for (a, b), c in sorted(overlaps.items(), key=lambda kv: Fraction(*kv[0]))
        ],
        "tau_hist": tau_hist.tolist(),
        "movers": movers,
    }


def describe(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a person reads: `queries`, `overlap10` and `tau` {median, p10} (None where no
    query has one), `top1_changed_share`, `movers`, and the distributions they come from, for a
    plot: `tau_hist` (TAU_BINS counts over [-1, 1]) and `overlap_hist` ([shared, of, queries]).
    Percentiles are "lower": p10 is the smallest value at or below which at least 10 % of the
    queries fall. Overlap's are exact; tau's are the centre of their histogram bin (resolution 0.01)."""
    queries = summary["queries"]
    overlap_values = [shared / of for shared, of, _ in summary["overlap_hist"]]
    overlap_counts = [count for _, _, count in summary["overlap_hist"]]
    centres = [round(-1.0 + (i + 0.5) * 2.0 / TAU_BINS, 6) for i in range(TAU_BINS)]
    return {
        "queries": queries,
        "overlap10": {
            "median": _lower_percentile(overlap_values, overlap_counts, Fraction(1, 2)),
            "p10": _lower_percentile(overlap_values, overlap_counts, Fraction(1, 10)),
        },
        "tau": {
            "median": _lower_percentile(centres, summary["tau_hist"], Fraction(1, 2)),
            "p10": _lower_percentile(centres, summary["tau_hist"], Fraction(1, 10)),
        },
        "top1_changed_share": summary["top1_changed"] / queries if queries else None,
        "movers": summary["movers"],
        "tau_hist": list(summary["tau_hist"]),
        "overlap_hist": [list(h) for h in summary["overlap_hist"]],
    }


def mover_key(mover: dict[str, Any]) -> tuple[float, float, bool]:
    """Moved most first: lowest overlap10, then lowest tau (none last), then top1 changed first."""
    overlap, tau = mover["overlap10"], mover["tau"]
    return (
        math.inf if overlap is None else overlap,
        math.inf if tau is None else tau,
        not mover["top1_changed"],
    )


def _mover(row: dict[str, Any]) -> dict[str, Any]:
    """A drift row as JSON-able values: NaN as None (JSON has no NaN)."""
    return {
        "query_id": row["query_id"],
        "overlap10": _number(row["overlap10"]),
        "tau": _number(row["tau"]),
        "top1_changed": bool(row["top1_changed"]),
    }


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _overlap_hist(overlap: np.ndarray) -> list[list[int]]:
    """[shared, of, queries] per overlap value, ascending: the fraction found from the float with the
    smallest denominator up to TOP that gives it back (one exists: overlap = shared / of, of <= TOP
    where ranks are unique), else its value to 6 decimals."""
    overlap = overlap[~np.isnan(overlap)]
    of = np.zeros(len(overlap), np.int64)
    for denominator in range(TOP, 0, -1):  # smallest last, so it wins
        fits = np.abs(np.round(overlap * denominator) / denominator - overlap) < 1e-12
        of[fits] = denominator
    of[of == 0] = 10**6
    shared = np.round(overlap * of).astype(np.int64)
    common = np.gcd(shared, of)
    pairs, counts = np.unique(np.stack([shared // common, of // common], 1), axis=0, return_counts=True)
    hist = [[int(a), int(b), int(c)] for (a, b), c in zip(pairs, counts, strict=True)]
    return sorted(hist, key=lambda h: Fraction(h[0], h[1]))


def _tau_hist(tau: np.ndarray) -> list[int]:
    tau = tau[~np.isnan(tau)]
    # + 1e-9: a tau on a bin edge (0.3 = 9 / 30) that (0.3 + 1) * 100 puts a hair below 130 goes in 130
    bins = np.clip(np.floor((tau + 1.0) * (TAU_BINS / 2) + 1e-9).astype(np.int64), 0, TAU_BINS - 1)
    return [int(c) for c in np.bincount(bins, minlength=TAU_BINS)]


def _lower_percentile(values: list[float], counts: list[int], share: Fraction) -> float | None:
    """The smallest of ascending `values` (each held by counts[i] queries) at or below which at
    least `share` of the queries fall; None where there are none."""
    total = sum(counts)
    if not total:
        return None
    needed = max(1, math.ceil(total * share))
    index = int(np.searchsorted(np.cumsum(counts), needed))
    return float(values[index])
