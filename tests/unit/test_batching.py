import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models.batching import longest_first, padded_tokens, plan_micro_batches

lengths_st = st.lists(st.integers(min_value=1, max_value=600), min_size=0, max_size=300)


@given(lengths=lengths_st, budget=st.integers(min_value=16, max_value=20000))
@settings(max_examples=300, deadline=None)
def test_every_row_exactly_once_and_budget_held(lengths, budget):
    lengths = np.array(lengths, dtype=np.int64)
    batches = plan_micro_batches(lengths, budget)
    seen = np.concatenate(batches) if batches else np.array([], int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * lengths[b].max()
        # the budget holds, unless a single pair alone exceeds it
        assert padded <= budget or len(b) == 1


@given(lengths=lengths_st, budget=st.integers(min_value=16, max_value=20000))
@settings(max_examples=200, deadline=None)
def test_batches_are_length_ordered_and_greedy(lengths, budget):
    lengths = np.array(lengths, dtype=np.int64)
    batches = plan_micro_batches(lengths, budget)
    flat = np.concatenate(batches) if batches else np.array([], int)
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first throughout
    for b in batches[:-1]:
        # TEI's rule: the batch closed because one more row would have exceeded the budget
        assert lengths[b].max() * (len(b) + 1) > budget


@given(
    lengths=lengths_st,
    budget=st.integers(min_value=16, max_value=20000),
    fill=st.floats(min_value=0.0, max_value=1.0),
)
@settings(max_examples=300, deadline=None)
def test_min_fill_bounds_padding_and_keeps_every_row(lengths, budget, fill):
    lengths = np.array(lengths, dtype=np.int64)
    batches = plan_micro_batches(lengths, budget, min_fill=fill)
    flat = np.concatenate(batches) if batches else np.array([], int)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert np.all(np.diff(lengths[flat]) <= 0)
    for i, b in enumerate(batches):
        longest = max(int(lengths[b].max()), 1)
        assert len(b) * lengths[b].max() <= budget or len(b) == 1
        assert np.all(lengths[b] >= fill * longest)  # every row at least min_fill full
        if i + 1 < len(batches):  # closed by the budget or by the next row's fill
            nxt = lengths[batches[i + 1][0]]
            assert longest * (len(b) + 1) > budget or nxt < fill * longest


def test_min_fill_raises_padding_efficiency():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(4.5, 0.7, 300).astype(int), 4, 512)
    plain = padded_tokens(lengths, plan_micro_batches(lengths, 8192))
    filled = padded_tokens(lengths, plan_micro_batches(lengths, 8192, min_fill=0.95))
    assert lengths.sum() / filled > 0.97 > lengths.sum() / plain


def test_longest_first_is_stable():
    assert longest_first(np.array([3, 5, 3, 5, 1])).tolist() == [1, 3, 0, 2, 4]


def test_padded_tokens():
    lengths = np.array([4, 2, 3])
    assert padded_tokens(lengths, [np.array([0, 2]), np.array([1])]) == 4 * 2 + 2
