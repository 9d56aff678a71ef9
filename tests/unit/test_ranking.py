import numpy as np
import pyarrow as pa
import pytest

from pipeline.rerank.output.ranking import rank_table


def table():
    return pa.table(
        {
            "query_id": ["b", "b", "a", "b", "a", "c"],
            "doc_id": ["b1", "b2", "a1", "b3", "a2", "c1"],
            "extra": [1, 2, 3, 4, 5, 6],
        }
    )


def test_grouped_by_first_appearance_sorted_best_first_ranked():
    scores = np.array([0.1, 0.9, -1.0, 0.5, 2.0, 0.0], np.float32)
    out = rank_table(table(), scores, "query_id")
    assert out.column("query_id").to_pylist() == ["b", "b", "b", "a", "a", "c"]
    assert out.column("doc_id").to_pylist() == ["b2", "b3", "b1", "a2", "a1", "c1"]
    assert out.column("rank").to_pylist() == [1, 2, 3, 1, 2, 1]
    assert out.column("extra").to_pylist() == [2, 4, 1, 5, 3, 6]  # other columns travel with rows
    assert out.schema.field("score").type == pa.float32()
    assert out.schema.field("rank").type == pa.int32()
    assert out.column_names == ["query_id", "doc_id", "extra", "score", "rank"]


def test_ties_keep_input_order_and_nan_goes_last():
    t = pa.table({"query_id": ["q"] * 4, "doc_id": ["x", "y", "z", "w"]})
    out = rank_table(t, np.array([1.0, np.nan, 1.0, 2.0], np.float32), "query_id")
    assert out.column("doc_id").to_pylist() == ["w", "x", "z", "y"]


def test_top_k_and_normalize():
    scores = np.array([0.1, 0.9, -1.0, 0.5, 2.0, 0.0], np.float32)
    out = rank_table(table(), scores, "query_id", top_k=2, normalize=True)
    assert out.column("doc_id").to_pylist() == ["b2", "b3", "a2", "a1", "c1"]
    norm = np.array(out.column("score_norm").to_pylist())
    np.testing.assert_allclose(norm, 1 / (1 + np.exp(-np.array(out.column("score").to_pylist()))), rtol=1e-6)


def test_integer_and_null_query_ids():
    t = pa.table({"query_id": pa.array([7, None, 7, None], pa.int64()), "doc_id": ["a", "b", "c", "d"]})
    out = rank_table(t, np.array([0.0, 1.0, 2.0, 3.0], np.float32), "query_id")
    assert out.column("doc_id").to_pylist() == ["c", "a", "d", "b"]


def test_empty_table_and_length_mismatch():
    t = pa.table({"query_id": pa.array([], pa.string())})
    assert rank_table(t, np.array([], np.float32), "query_id").num_rows == 0
    with pytest.raises(ValueError, match="2 scores for 0 rows"):
        rank_table(t, np.zeros(2, np.float32), "query_id")


def test_a_length_mismatch_is_named_before_the_reshape_could_hide_or_garble_it():
    t = pa.table({"query_id": ["q", "q", "r"]})
    with pytest.raises(ValueError, match="5 scores for 3 rows"):
        rank_table(t, np.zeros(5, np.float32), "query_id")  # reshape(3, -1) fails on its own
    with pytest.raises(ValueError, match="4 scores for 3 rows"):
        rank_table(t, np.zeros((4, 2), np.float32), "query_id")


def test_dictionary_query_ids_come_out_in_first_appearance_order_not_dictionary_order():
    # q0, q1, q2 in, but the dictionary lists them q2, q1, q0 (a writer that sorted it, or a
    # dictionary shared with other data): the output follows the rows, not the dictionary
    ids = pa.DictionaryArray.from_arrays(pa.array([2, 2, 1, None, 0, 1], pa.int32()), ["q2", "q1", "q0"])
    t = pa.table({"query_id": ids, "doc_id": ["a", "b", "c", "n", "d", "e"]})
    out = rank_table(t, np.array([0.0, 1.0, 0.0, 5.0, 0.0, 1.0], np.float32), "query_id")
    assert out.column("query_id").to_pylist() == ["q0", "q0", "q1", "q1", None, "q2"]
    assert out.column("doc_id").to_pylist() == ["b", "a", "e", "c", "n", "d"]
    assert out.column("rank").to_pylist() == [1, 2, 1, 2, 1, 1]
    assert out.schema.field("query_id").type == ids.type  # the column itself is unchanged


def test_chunks_with_different_dictionaries_group_by_value():
    # two row groups read back as chunks with dictionaries of their own
    chunks = [
        pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), ["x", "y"]),
        pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), ["y", "x"]),
    ]
    t = pa.table({"query_id": pa.chunked_array(chunks), "doc_id": ["a", "b", "c", "d"]})
    out = rank_table(t, np.array([0.0, 0.0, 1.0, 1.0], np.float32), "query_id")
    assert out.column("query_id").to_pylist() == ["x", "x", "y", "y"]
    assert out.column("doc_id").to_pylist() == ["d", "a", "c", "b"]
