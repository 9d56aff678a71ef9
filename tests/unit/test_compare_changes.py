"""The change feed (pipeline.rerank.compare.changes) and the ranking drift
(pipeline.rerank.compare.drift) of one shard against an earlier run's, on hand-made tables."""

import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

from pipeline.rerank.compare.changes import CHANGE_KINDS, change_counts, change_schema, diff_rankings
from pipeline.rerank.compare.drift import (
    MOVERS,
    TAU_BINS,
    describe,
    drift_summary,
    merge_summaries,
    query_drift,
)

NAN = float("nan")
STRING = pa.string()


def ranked(rows, q_type=STRING, d_type=STRING):
    """A ranked output from (query_id, doc_id, score, rank) tuples."""
    q, d, score, rank = zip(*rows) if rows else ([], [], [], [])
    return pa.table(
        {
            "qid": pa.array(q, q_type),
            "did": pa.array(d, d_type),
            "score": pa.array(score, pa.float32()),
            "rank": pa.array(rank, pa.int32()),
        }
    )


def diff(current, previous, epsilon=0.0):
    return diff_rankings(current, previous, query_id="qid", doc_id="did", epsilon=epsilon).to_pylist()


def drift(current, previous):
    return query_drift(current, previous, query_id="qid", doc_id="did")


def change(q, d, kind, prev_rank, rank, prev_score, score):
    return {
        "query_id": q,
        "doc_id": d,
        "change": kind,
        "prev_rank": prev_rank,
        "rank": rank,
        "prev_score": prev_score,
        "score": score,
    }


def test_every_kind_in_query_then_rank_order():
    previous = ranked(
        [
            ("q1", "a", 0.875, 1),
            ("q1", "b", 0.5, 2),
            ("q1", "c", 0.25, 3),
            ("q1", "gone", 0.125, 4),
            ("q0", "x", 1.0, 1),
        ]
    )
    current = ranked(
        [
            ("q1", "b", 0.75, 1),
            ("q1", "a", 0.5, 2),
            ("q1", "c", 0.375, 3),  # same rank, other score
            ("q1", "new", 0.0, 4),  # rank 4, like the removed row: the removed one goes after it
            ("q0", "x", 1.0, 1),  # unchanged: not listed
        ]
    )
    table = diff_rankings(current, previous, query_id="qid", doc_id="did")
    assert table.schema == change_schema(pa.string(), pa.string())
    assert table.to_pylist() == [
        change("q1", "b", "reranked", 2, 1, 0.5, 0.75),
        change("q1", "a", "reranked", 1, 2, 0.875, 0.5),
        change("q1", "c", "rescored", 3, 3, 0.25, 0.375),
        change("q1", "new", "added", None, 4, None, 0.0),
        change("q1", "gone", "removed", 4, None, 0.125, None),
    ]
    assert change_counts(table) == {"added": 1, "removed": 1, "reranked": 2, "rescored": 1}


def test_epsilon_is_the_tolerance_on_the_score():
    previous = ranked([("q", "a", 0.5, 1), ("q", "b", 0.25, 2)])
    current = ranked([("q", "a", 0.5625, 1), ("q", "b", 0.25, 2)])
    assert [r["doc_id"] for r in diff(current, previous)] == ["a"]
    assert diff(current, previous, epsilon=0.0625) == []  # |0.0625| is not above it
    assert [r["change"] for r in diff(current, previous, epsilon=0.03)] == ["rescored"]
    for bad in (-0.1, NAN):
        with pytest.raises(ValueError, match="epsilon"):
            diff(current, previous, epsilon=bad)


def test_nan_against_nan_is_no_change_nan_against_a_number_is_one():
    previous = ranked([("q", "a", NAN, 1), ("q", "b", NAN, 2), ("q", "c", 0.5, 3), ("q", "d", math.inf, 4)])
    current = ranked([("q", "a", NAN, 1), ("q", "b", 0.5, 2), ("q", "c", NAN, 3), ("q", "d", math.inf, 4)])
    rows = diff(current, previous, epsilon=1.0)
    assert [(r["doc_id"], r["change"]) for r in rows] == [("b", "rescored"), ("c", "rescored")]
    assert math.isnan(rows[0]["prev_score"]) and math.isnan(rows[1]["score"])


def test_a_repeated_pair_matches_occurrence_by_occurrence_in_rank_order():
    previous = ranked([("q", "a", 0.9, 1), ("q", "b", 0.5, 2), ("q", "a", 0.1, 3)])
    current = ranked([("q", "a", 0.9, 1), ("q", "a", 0.4, 2), ("q", "b", 0.3, 3), ("q", "a", 0.2, 4)])
    assert [(r["doc_id"], r["change"], r["prev_rank"], r["rank"]) for r in diff(current, previous)] == [
        ("a", "reranked", 3, 2),  # the 2nd "a" of each
        ("b", "reranked", 2, 3),
        ("a", "added", None, 4),  # current's 3rd "a" has no partner
    ]
    assert drift(current, previous).column("common").to_pylist() == [3]


def test_a_query_only_in_previous_is_all_removed_only_in_current_all_added():
    previous = ranked([("old", "a", 0.9, 1), ("old", "b", 0.1, 2), ("both", "x", 1.0, 1)])
    current = ranked([("new", "c", 0.5, 1), ("both", "x", 1.0, 1), ("new", "d", 0.4, 2)])
    rows = diff(current, previous)
    assert [(r["query_id"], r["doc_id"], r["change"]) for r in rows] == [
        ("new", "c", "added"),
        ("new", "d", "added"),
        ("old", "a", "removed"),
        ("old", "b", "removed"),
    ]
    assert drift(current, previous).column("query_id").to_pylist() == ["both"]


def test_drift_of_a_query_whose_top_changed():
    previous = ranked([("q", d, 1.0 - r / 10, r) for r, d in enumerate("abcdefghijkl", 1)])
    now = "cabdefghijzk"  # c leads; l left; z came in at 11; k moved 11 -> 12
    current = ranked([("q", d, 1.0 - r / 10, r) for r, d in enumerate(now, 1)])
    [row] = drift(current, previous).to_pylist()
    assert row["query_id"] == "q"
    assert row["overlap10"] == 1.0  # a..j in both top 10s
    assert row["top1_changed"] is True
    assert row["common"] == 11  # a..k
    common = [d for d in now if d in "abcdefghijk"]
    expected = kendalltau([now.index(d) for d in common], ["abcdefghijkl".index(d) for d in common]).statistic
    assert row["tau"] == pytest.approx(expected)
    assert row["tau"] == pytest.approx(1 - 2 * 2 / 55)  # c passed a and b: 2 discordant of 55 pairs

    current = ranked([("q", d, 1.0, r) for r, d in enumerate("abcxyzuvwt", 1)])  # 3 of 10 kept
    [row] = drift(current, previous).to_pylist()
    assert (row["overlap10"], row["tau"], row["top1_changed"], row["common"]) == (0.3, 1.0, False, 3)


def test_tau_matches_scipy_for_large_queries_and_tied_ranks():
    rng = np.random.default_rng(7)
    rows_now, rows_before, expected = [], [], {}
    for q, n in (("big", 700), ("mid", 40), ("tied_before", 30), ("tied_now", 20)):
        docs = [f"{q}{i}" for i in range(n)]
        now, before = np.arange(n) + 1, rng.permutation(n) + 1
        if q == "tied_before":
            before[before == 2] = 1  # two docs share rank 1: tau-b, as scipy
        if q == "tied_now":
            now[3] = 3
        rows_now += [(q, d, 0.0, int(r)) for d, r in zip(docs, now)]
        rows_before += [(q, d, 0.0, int(r)) for d, r in zip(docs, before)]
        expected[q] = kendalltau(now, before).statistic
    table = drift(ranked(rows_now), ranked(rows_before))
    got = dict(zip(table.column("query_id").to_pylist(), table.column("tau").to_pylist()))
    assert got == pytest.approx(expected)


def test_ids_of_different_types_are_compared_in_one_type():
    now = ranked([(1, 10, 0.5, 1), (1, 11, 0.4, 2)], pa.int64(), pa.int64())
    before_strings = ranked([("1", "11", 0.5, 1), ("1", "10", 0.4, 2)])
    assert [(r["query_id"], r["doc_id"]) for r in diff(now, before_strings)] == [(1, 10), (1, 11)]  # cast
    before_words = ranked([("1", "11", 0.5, 1), ("one", "10", 0.4, 2)])
    table = diff_rankings(now, before_words, query_id="qid", doc_id="did")
    assert table.schema.field("query_id").type == pa.string()  # "one" is no int64: both as strings
    assert change_counts(table) == {"added": 1, "removed": 1, "reranked": 1, "rescored": 0}
    coded = now.set_column(0, "qid", now.column("qid").dictionary_encode())
    assert diff(coded, now) == []
    assert drift(now, before_strings).column("query_id").type == pa.int64()


def test_empty_tables():
    rows = [("q", "a", 0.5, 1), ("q", "b", 0.4, 2)]
    empty = ranked([])
    assert diff(empty, empty) == []
    assert [r["change"] for r in diff(ranked(rows), empty)] == ["added", "added"]
    assert [r["change"] for r in diff(empty, ranked(rows))] == ["removed", "removed"]
    assert drift(empty, ranked(rows)).num_rows == 0
    assert change_counts(diff_rankings(empty, empty, query_id="qid", doc_id="did")) == dict.fromkeys(
        CHANGE_KINDS, 0
    )
    summary = drift_summary(drift(empty, empty))
    assert summary["queries"] == 0 and summary["tau_hist"] == [0] * TAU_BINS
    assert describe(summary)["overlap10"] == {"median": None, "p10": None}
    assert describe(summary)["tau"]["median"] is None and describe(merge_summaries([]))["queries"] == 0


def test_bad_input_names_the_column_and_the_fix():
    with pytest.raises(ValueError, match=r"no column 'query_id' \(found: qid, did, score, rank\)"):
        diff_rankings(ranked([]), ranked([]), query_id="query_id", doc_id="did")
    with pytest.raises(ValueError, match="unknown change kind"):
        change_counts(pa.table({"change": ["added", "moved"]}))


def shard(first_query, queries, rng):
    """A pair of ranked tables of `queries` queries with 12 candidates each, shuffled between runs."""
    now, before = [], []
    for q in range(first_query, first_query + queries):
        docs = [f"d{i}" for i in range(12)]
        kept = rng.permutation(12)[: rng.integers(1, 13)]
        now += [(f"q{q}", docs[i], 0.0, r) for r, i in enumerate(rng.permutation(12), 1)]
        before += [(f"q{q}", docs[i], 0.0, r) for r, i in enumerate(kept, 1)]
    return ranked(now), ranked(before)


def test_merged_summaries_equal_the_summary_of_the_union():
    rng = np.random.default_rng(3)
    (now_a, before_a), (now_b, before_b) = shard(0, 30, rng), shard(30, 25, rng)
    merged = merge_summaries([drift_summary(drift(now_a, before_a)), drift_summary(drift(now_b, before_b))])
    union = drift_summary(drift(pa.concat_tables([now_a, now_b]), pa.concat_tables([before_a, before_b])))
    assert json.loads(json.dumps(merged)) == union == merged
    assert union["queries"] == 55 and len(union["movers"]) == MOVERS
    assert sum(union["tau_hist"]) == union["tau_queries"] < 55  # a query with one common candidate has none


def test_describe_reads_lower_percentiles():
    overlaps = [0.1, 0.2, 0.2, 0.5, 0.5, 0.5, 0.6, 0.8, 0.9, 1.0, 1.0]
    taus = [-0.5, 0.0, 0.2, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0, NAN]
    table = pa.table(
        {
            "query_id": [f"q{i}" for i in range(11)],
            "overlap10": overlaps,
            "tau": taus,
            "top1_changed": [i % 3 == 0 for i in range(11)],
            "common": [10] * 11,
        }
    )
    summary = drift_summary(table)
    assert summary["overlap_hist"][:2] == [[1, 10, 1], [1, 5, 2]]
    figures = describe(summary)
    # 11 overlaps: the median is the 6th smallest, p10 the 2nd (ceil(1.1)); 10 taus: the 5th, the 1st
    assert figures["overlap10"] == {"median": 0.5, "p10": 0.2}
    assert figures["overlap10"]["median"] == np.percentile(overlaps, 50, method="lower")
    assert figures["tau"] == {"median": pytest.approx(0.405), "p10": pytest.approx(-0.495)}
    assert figures["top1_changed_share"] == 4 / 11 and figures["queries"] == 11
    assert [m["query_id"] for m in figures["movers"][:3]] == ["q0", "q1", "q2"]
    assert figures["movers"][-1] == {"query_id": "q10", "overlap10": 1.0, "tau": None, "top1_changed": False}


def table_st():
    """A ranked table over a few queries and docs, pairs repeated now and then, ranks 1..n a query."""
    row = st.tuples(
        st.sampled_from(["q0", "q1", "q2"]), st.sampled_from("abcd"), st.sampled_from([0.0, 0.5, NAN])
    )
    return st.lists(row, max_size=30).map(
        lambda rows: ranked(
            [(q, d, s, [r[0] for r in rows[: i + 1]].count(q)) for i, (q, d, s) in enumerate(rows)]
        )
    )


def by_occurrence(table):
    """{(query, doc, k): (rank, score)}: the k-th row of each pair in rank order, one row at a time."""
    seen, out = Counter(), {}
    for r in sorted(table.to_pylist(), key=lambda r: r["rank"]):
        pair = (r["qid"], r["did"])
        out[(*pair, seen[pair])] = (r["rank"], r["score"])
        seen[pair] += 1
    return out


@given(current=table_st(), previous=table_st())
@settings(max_examples=50, deadline=None)
def test_rows_partition_into_added_removed_and_matched(current, previous):
    """Against a row-by-row reference: every current row is added or matched, every previous row
    removed or matched; the matched ones reranked, rescored or left out; tau as scipy's."""
    now, before = by_occurrence(current), by_occurrence(previous)
    expected = Counter()
    for q, d, k in now.keys() - before.keys():
        expected[(q, d, "added", None, now[(q, d, k)][0])] += 1
    for q, d, k in before.keys() - now.keys():
        expected[(q, d, "removed", before[(q, d, k)][0], None)] += 1
    for key in now.keys() & before.keys():
        (rank, score), (prev_rank, prev_score) = now[key], before[key]
        same_score = score == prev_score or (math.isnan(score) and math.isnan(prev_score))
        kind = "reranked" if rank != prev_rank else None if same_score else "rescored"
        if kind:
            expected[(key[0], key[1], kind, prev_rank, rank)] += 1
    rows = diff(current, previous)
    kinds = Counter(r["change"] for r in rows)
    matched = len(now.keys() & before.keys())
    assert kinds["added"] + matched == current.num_rows and kinds["removed"] + matched == previous.num_rows
    assert kinds["reranked"] + kinds["rescored"] <= matched
    assert (
        Counter((r["query_id"], r["doc_id"], r["change"], r["prev_rank"], r["rank"]) for r in rows)
        == expected
    )
    order = list(dict.fromkeys(current.column("qid").to_pylist() + previous.column("qid").to_pylist()))
    keys = [(order.index(r["query_id"]), r["rank"] or r["prev_rank"], r["rank"] is None) for r in rows]
    assert keys == sorted(keys)
    for row in drift(current, previous).to_pylist():
        common = sorted(
            (now[k][0], before[k][0]) for k in now.keys() & before.keys() if k[0] == row["query_id"]
        )
        assert row["common"] == len(common)
        if len(common) < 2:
            assert math.isnan(row["tau"])
        else:
            assert row["tau"] == pytest.approx(kendalltau(*zip(*common)).statistic)
