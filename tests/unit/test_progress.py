import time

from pipeline.rerank.report.progress import Progress


def _calls(actor, *spans):
    import pyarrow as pa

    rows = [(actor, start, end) for start, end in spans for _ in range(3)]
    return pa.table(dict(zip(["actor", "call_start", "call_end"], map(list, zip(*rows)))))


def test_steady_rate_comes_from_the_scoring_calls_not_from_arrival_times():
    p = Progress(shards_total=2, pairs_total=300)
    t0 = p.started_epoch
    p.scored(100, 1000, 1200)
    p.scored(200, 2000, 2100)
    # blocks reach the driver late and together; the calls themselves ran from t0+5 to t0+8
    p.timed(_calls(7, (t0 + 6, t0 + 8)))
    p.timed(_calls(7, (t0 + 5, t0 + 6), (t0 + 6, t0 + 8)))  # a call delivered twice counts once
    time.sleep(0.01)  # the point: driver time passes, unrelated to the actors' call clocks
    p.published("a.parquet", 300)
    s = p.summary()
    assert s["pairs_scored"] == 300 and s["tokens"] == 3000 and s["padded_tokens"] == 3300
    assert s["padding_efficiency"] == round(3000 / 3300, 4)
    assert s["steady_pairs_per_s"] == 100.0 and s["startup_s"] == 5.0
    assert s["scoring_busy_s"] == 3.0
    assert p.shards_done == 1


def test_work_is_counted_per_node_and_actor():
    import pyarrow as pa

    p = Progress(shards_total=1, pairs_total=5)
    p.placed(pa.table({"row": [0, 1, 2, -1, 3], "node": ["a", "a", "b", "b", "a"], "actor": [1, 2, 3, 3, 1]}))
    assert p.summary()["nodes"] == {
        "a": {"pairs": 3, "scoring_actors": 2},
        "b": {"pairs": 1, "scoring_actors": 1},
    }
