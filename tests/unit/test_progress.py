import time

from pipeline.progress import Progress


def test_steady_rate_excludes_the_first_batch_and_startup():
    p = Progress(shards_total=2, pairs_total=300)
    p.scored(100, 1000, 1200)
    time.sleep(0.2)
    p.scored(200, 2000, 2100)
    p.published("a.parquet", 300)
    s = p.summary()
    assert s["pairs_scored"] == 300 and s["tokens"] == 3000 and s["padded_tokens"] == 3300
    assert s["padding_efficiency"] == round(3000 / 3300, 4)
    assert 0 < s["steady_pairs_per_s"] <= 200 / 0.2 + 1e-6
    assert p.shards_done == 1


def test_work_is_counted_per_node_and_actor():
    import pyarrow as pa

    p = Progress(shards_total=1, pairs_total=5)
    p.placed(pa.table({"row": [0, 1, 2, -1, 3], "node": ["a", "a", "b", "b", "a"], "actor": [1, 2, 3, 3, 1]}))
    assert p.summary()["nodes"] == {
        "a": {"pairs": 3, "scoring_actors": 2},
        "b": {"pairs": 1, "scoring_actors": 1},
    }
