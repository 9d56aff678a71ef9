"""Packed (unpadded) micro-batches: every pair once, the budget held, each pair's tokens and
positions where the packed row says they are. Pure numpy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.modeling.kernels.packing import pack, plan_packed_batches
from pipeline.models.padding import token_lists


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=0, max_size=80), st.integers(1, 2048))
def test_packed_plan_holds_every_row_once_within_the_budget(lengths, budget):
    lengths = np.array(lengths, dtype=np.int64)
    batches = plan_packed_batches(lengths, budget)
    seen = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) >= 1
        assert lengths[b].sum() <= budget or len(b) == 1  # only a lone row may exceed it
    # longest first: the plan walks rows in decreasing length
    assert all(np.diff(lengths[seen]) <= 0)


def test_pack_lays_pairs_end_to_end_with_their_own_positions():
    ids = token_lists([[5, 6, 7], [8], [9, 10]])
    types = token_lists([[0, 0, 1], [0], [0, 1]])
    out = pack(ids, np.array([2, 0]), types, position_offset=2)
    assert out["input_ids"].tolist() == [[9, 10, 5, 6, 7]]
    assert out["token_type_ids"].tolist() == [[0, 1, 0, 0, 1]]
    assert out["position_ids"].tolist() == [[2, 3, 2, 3, 4]]  # each pair restarts at the offset
    assert out["cu_seqlens"].tolist() == [0, 2, 5] and out["cu_seqlens"].dtype == np.int32
    assert out["first"].tolist() == [0, 2] and out["last"].tolist() == [1, 4]
    assert out["max_length"].tolist() == [3]


def test_pack_reads_a_sliced_list_array_at_its_own_rows():
    ids = token_lists([[1, 2], [3, 4, 5], [6]]).slice(1)
    out = pack(ids, np.array([1, 0]))
    assert out["input_ids"].tolist() == [[6, 3, 4, 5]]


def test_pack_refuses_an_empty_pair():
    with pytest.raises(ValueError, match="no tokens"):
        pack(token_lists([[1], []]), np.array([0, 1]))
