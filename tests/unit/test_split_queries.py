import pyarrow as pa

from pipeline.rerank.split_queries import decode_hashes, encode_hashes, query_id_hashes, split_queries


def test_hashes_round_trip_and_find_shared_ids():
    a = query_id_hashes(pa.chunked_array([["q1", "q1", "q2"]]))
    b = query_id_hashes(pa.chunked_array([["q3", "q2"]]))
    assert sorted(a.values()) == ["q1", "q2"]
    assert decode_hashes(encode_hashes(set(a))) == set(a)
    split = split_queries({"a.parquet": set(a), "b.parquet": set(b), "c.parquet": set()})
    assert [(a[h] if h in a else b[h], shards) for h, shards in split.items()] == [
        ("q2", ["a.parquet", "b.parquet"])
    ]


def test_integer_ids_hash_apart_from_strings():
    assert set(query_id_hashes(pa.array([1]))) != set(query_id_hashes(pa.array(["1"])))
