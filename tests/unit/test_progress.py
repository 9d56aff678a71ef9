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
