"""The driver side of `--long-passages chunk`: windows of a row arrive in any order, grouping and
repetition; a row is complete, with its aggregated score, once all of its windows have come."""

import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.models.windows import WINDOW_FIELDS
from pipeline.rerank.stages.score import scored_schema
from pipeline.rerank.stream.assembly import ShardAssembler

# row -> its windows' (score, start character); row 3 is rejected (one window, no score)
ROWS = {
    0: [(0.5, 0)],
    1: [(0.1, 0), (0.9, 40), (0.9, 80), (-2.0, 120)],
    2: [(-1.0, 0), (-3.0, 50)],
    3: [(np.nan, 0)],
    4: [(2.0, 0), (1.0, 33), (3.0, 66)],
}
NOT_SCORED = {4: 5}  # windows past --max-chunks
REJECTED = {3: "empty passage"}


def windows_table(items, shard=0, columns=("score",)):
    """Scored windows [(row, window)] as the scoring stage emits them (with the window columns)."""
    n = len(items)
    data = {
        "shard": [shard] * n,
        "row": [r for r, _ in items],
        **{c: [ROWS[r][w][0] + i for r, w in items] for i, c in enumerate(columns)},
        "tokens": [10] * n,
        "padded_tokens": [12] * n,
        "error": [None] * n,
        "reject": [REJECTED.get(r) for r, _ in items],
        "node": ["n"] * n,
        "actor": [1] * n,
        "call_start": [0.0] * n,
        "call_end": [1.0] * n,
    }
    table = pa.Table.from_pydict(data, schema=scored_schema(list(columns)))
    extra = {
        "window": [w for _, w in items],
        "windows": [len(ROWS[r]) for r, _ in items],
        "window_char": [ROWS[r][w][1] for r, w in items],
        "windows_not_scored": [NOT_SCORED.get(r, 0) for r, _ in items],
    }
    for f in WINDOW_FIELDS:
        table = table.append_column(f, pa.array(extra[f.name], f.type))
    return table


ALL = [(r, w) for r, ws in ROWS.items() for w in range(len(ws))]


def assemble(batches, aggregate, columns=("score",)):
    """Feeds the batches as the runner does: a shard is taken as soon as it is complete (windows
    of it that come later are ignored)."""
    assembler = ShardAssembler({0: len(ROWS)}, list(columns), aggregate)
    taken, pairs = [], 0
    for items in batches:
        added = assembler.add(windows_table(items, columns=columns))
        taken += [assembler.take(s) for s in added.complete]
        pairs += added.pairs
    assert len(taken) == 1 and pairs == len(ROWS) - len(REJECTED)
    return taken[0]


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("max", [0.5, 0.9, -1.0, np.nan, 3.0]),
        ("first", [0.5, 0.1, -1.0, np.nan, 2.0]),
        ("mean", [0.5, -0.025, -2.0, np.nan, 2.0]),
    ],
)
def test_windows_in_any_order_and_repeated_aggregate_the_same(aggregate, expected):
    rng = random.Random(7)
    for _ in range(20):
        items = ALL + rng.sample(ALL, 5)  # a retried task delivers some windows again
        rng.shuffle(items)
        cut = sorted(rng.sample(range(1, len(items)), 3))
        batches = [items[a:b] for a, b in zip([0, *cut], [*cut, len(items)])]
        scored = assemble(batches, aggregate)
        np.testing.assert_allclose(scored.scores[:, 0], expected, rtol=0, atol=1e-6)
        assert scored.chunks.tolist() == [1, 4, 2, 0, 3] and scored.chunks.dtype == np.int16
        assert scored.best_chunk_char.tolist() == [0, 40, 0, 0, 66]  # a tie: the earliest window
        assert scored.windows_scored == 10 and scored.windows_not_scored == 5
        assert scored.tokens == 11 * 10 and scored.padded_tokens == 11 * 12  # each window once
        assert scored.rejected == REJECTED


def test_a_row_is_complete_only_when_its_last_window_arrives():
    assembler = ShardAssembler({0: len(ROWS)}, ["score"], "max")
    last = (1, 3)
    added = assembler.add(windows_table([w for w in ALL if w != last] + [(1, 0), (1, 2)]))
    assert added.complete == [] and added.pairs == 3  # rows 0, 2, 4 (row 3 is rejected)
    assert assembler.shards[0].filled == 4 and not assembler.shards[0].seen[1]
    added = assembler.add(windows_table([last, last]))
    assert added.complete == [0] and added.pairs == 1
    assert not assembler.windows[0].arrived  # no window keys held for complete rows
    assembler.take(0)
    assert not assembler.shards and not assembler.windows  # nothing held once taken


def test_every_score_column_aggregates_on_its_own_best_window_from_the_first():
    scored = assemble([ALL], "max", columns=("score_l2", "score_l4"))
    np.testing.assert_allclose(scored.scores[[0, 1, 4]], [[0.5, 1.5], [0.9, 1.9], [3.0, 4.0]], atol=1e-6)
    assert scored.best_chunk_char.tolist() == [0, 40, 0, 0, 66]


def test_chunk_columns_of_the_rows_kept():
    scored = assemble([ALL], "max")
    keep = np.array([True, True, True, False, True])
    columns = scored.chunk_columns(keep)
    assert columns["chunks"].type == pa.int16() and columns["chunks"].to_pylist() == [1, 4, 2, 3]
    assert columns["best_chunk_char"].type == pa.int32()
    assert columns["best_chunk_char"].to_pylist() == [0, 40, 0, 66]
