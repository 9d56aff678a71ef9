"""Small shards share a tokenize task; a big shard is a task of its own."""

from pipeline.io import ShardFile
from pipeline.rerank.build import MAX_SHARDS_PER_GROUP, shard_groups


def _shards(n: int) -> dict[int, ShardFile]:
    return {i: ShardFile(f"/in/{i}.parquet", f"{i}.parquet", 1, "v") for i in range(n)}


def test_groups_hold_at_least_group_rows_and_every_shard_once():
    rows = {0: 300, 1: 300, 2: 500, 3: 5000, 4: 10, 5: 10}
    groups = shard_groups(_shards(6), rows, 1000)
    assert groups == [[0, 1, 2], [3], [4, 5]]
    assert sorted(i for g in groups for i in g) == list(range(6))


def test_a_group_holds_at_most_the_cap():
    n = MAX_SHARDS_PER_GROUP + 3
    groups = shard_groups(_shards(n), dict.fromkeys(range(n), 1), 10**9)
    assert [len(g) for g in groups] == [MAX_SHARDS_PER_GROUP, 3]
