import hashlib

import numpy as np
import pyarrow as pa

from pipeline.rerank.input.split_queries import (
    decode_hashes,
    encode_hashes,
    names_of,
    query_id_hashes,
    split_queries,
)


def test_split_queries_found_across_shards():
    a = query_id_hashes(pa.chunked_array([["q1", "q1", "q2"]]))
    b = query_id_hashes(pa.chunked_array([["q3", "q2"]]))
    assert len(a) == 2 and len(b) == 2 and a.dtype == np.uint64
    np.testing.assert_array_equal(decode_hashes(encode_hashes(a)), np.sort(a))
    split = split_queries({"a.parquet": a, "b.parquet": b, "c.parquet": np.array([], np.uint64)})
    (h,) = split
    assert split[h] == ["a.parquet", "b.parquet"]
    assert names_of(pa.chunked_array([["q1", "q2"]]), {h}) == {h: "q2"}


def test_the_same_id_in_three_shards_names_all_three():
    q = query_id_hashes(pa.array(["x"]))
    assert list(split_queries({"c": q, "a": q, "b": q}).values()) == [["a", "b", "c"]]


def test_no_split_and_no_shards():
    assert split_queries({"a": query_id_hashes(pa.array(["1"])), "b": query_id_hashes(pa.array(["2"]))}) == {}
    assert split_queries({}) == {}


def test_types_are_part_of_the_id():
    assert set(query_id_hashes(pa.array([1]))) != set(query_id_hashes(pa.array(["1"])))


def test_hashes_match_the_ones_older_markers_hold():
    # the hash of "q1" as markers written before this change store it (blake2b-8 of repr, little end)
    expected = int.from_bytes(hashlib.blake2b(b"'q1'", digest_size=8).digest(), "little")
    assert int(query_id_hashes(pa.array(["q1"]))[0]) == expected
