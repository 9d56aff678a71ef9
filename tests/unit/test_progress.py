import time

import numpy as np
import pyarrow as pa

from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.stages.score import scored_schema
from pipeline.rerank.stream.assembly import ShardAssembler


def _block(rows, *, nodes, actors, spans, padded=None) -> pa.Table:
    """Scored rows of shard 0 (10 tokens each), one (node, actor, (call start, end)) per row."""
    n = len(rows)
    return pa.Table.from_pydict(
        {
            "shard": np.zeros(n, np.int32),
            "row": np.asarray(rows, np.int64),
            "score": np.zeros(n, np.float32),
            "tokens": np.full(n, 10, np.int32),
            "padded_tokens": np.asarray(padded if padded is not None else [12] * n, np.int32),
            "error": [None] * n,
            "reject": [None] * n,
            "node": nodes,
            "actor": np.asarray(actors, np.int32),
            "call_start": [start for start, _ in spans],
            "call_end": [end for _, end in spans],
        },
        schema=scored_schema(["score"]),
    )


def _feed(collector: RunCollector, assembler: ShardAssembler, block: pa.Table) -> None:
    added = assembler.add(block)
    collector.add(block, scored=added.scored, fresh=added.fresh)


def test_steady_rate_comes_from_the_scoring_calls_not_from_arrival_times():
    p = RunCollector(started_at=time.time(), max_length=64, score_columns=["score"])
    p.plan_started(0.0)
    t0 = p.scoring_started_at
    assembler = ShardAssembler({0: 300})
    # blocks reach the driver late and together; the calls themselves ran from t0+5 to t0+8
    late = _block(range(100), nodes=["n"] * 100, actors=[7] * 100, spans=[(t0 + 6, t0 + 8)] * 100)
    _feed(p, assembler, late)
    early = _block(
        range(100, 300),
        nodes=["n"] * 200,
        actors=[7] * 200,
        spans=[(t0 + 5, t0 + 6)] * 200,
        padded=[10, 11] * 100,
    )
    _feed(p, assembler, pa.concat_tables([early, late]))  # a call delivered twice counts once
    time.sleep(0.01)  # the point: driver time passes, unrelated to the actors' call clocks
    p.published({"shard": "a.parquet", "rows_out": 300})
    s = p.summary()
    assert s["pairs_scored"] == 300 and s["tokens"] == 3000 and s["padded_tokens"] == 3300
    assert s["padding_efficiency"] == round(3000 / 3300, 4)
    assert s["steady_pairs_per_s"] == 100.0 and s["startup_s"] == 5.0
    assert s["scoring_busy_s"] == 3.0
    assert p.shards_done == 1


def test_work_is_counted_per_node_and_actor():
    p = RunCollector(started_at=time.time(), max_length=64, score_columns=["score"])
    block = _block(
        [0, 1, 2, -1, 3],
        nodes=["a", "a", "b", "b", "a"],
        actors=[1, 2, 3, 3, 1],
        spans=[(1.0, 2.0), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0)],
    )
    _feed(p, ShardAssembler({0: 4}), block)
    assert p.summary()["nodes"] == {
        "a": {"pairs": 3, "scoring_actors": 2},
        "b": {"pairs": 1, "scoring_actors": 1},
    }
