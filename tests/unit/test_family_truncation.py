"""The truncation rules of `pipeline.models.families.truncation`, against the code they copy:
FlagEmbedding's rule (as the flag families always cut), the `tokenizers` crate itself, and the
Qwen3-Reranker card's right cut of the body (`(head + doc)[:budget]`)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from pipeline.models.families.truncation import cut_body, cut_second_only, longest_first

ids_st = st.lists(st.integers(min_value=0, max_value=50), max_size=60)
side_st = st.sampled_from(["right", "left"])


def _span(base: int, n: int) -> list[int]:
    """n distinct ids from `base` on, so each part of a sequence can be told apart."""
    return list(range(base, base + n))


# --- cut_second_only ---------------------------------------------------------------------------


def _prompt_tokenizer_rule(first, second, budget, cut_left):
    """Today's inline rule, as `PromptPairTokenizer.encode` had it inline before the families landed."""
    remove = len(first) + len(second) - budget
    if 0 < remove < len(second):
        second = second[remove:] if cut_left else second[:-remove]
    return first, second


@given(first=ids_st, second=ids_st, budget=st.integers(min_value=-5, max_value=130), side=side_st)
@settings(max_examples=200, deadline=None)
def test_cut_second_only_equals_todays_flag_rule(first, second, budget, side):
    expected = _prompt_tokenizer_rule(list(first), list(second), budget, side == "left")
    got = cut_second_only(first, second, budget, side=side)
    assert got == expected
    kept = got[1]
    assert got[0] == first  # the first part is never cut
    assert kept == (second[len(second) - len(kept) :] if side == "left" else second[: len(kept)])
    if len(first) + len(second) > budget and len(second) > len(first) + len(second) - budget:
        assert len(first) + len(kept) == budget  # cut exactly to the budget when the second suffices
    else:
        assert kept == second  # else nothing is cut, as transformers 4 leaves both


def test_cut_second_only_leaves_both_when_the_second_alone_cannot_absorb_the_cut():
    # 3 ids over the budget and a second part of exactly 3: transformers 4 cuts only when
    # len(second) > excess, so nothing is cut (transformers 5 would empty the second part)
    assert cut_second_only([1, 2, 3, 4], [5, 6, 7], 4) == ([1, 2, 3, 4], [5, 6, 7])
    assert cut_second_only([1, 2, 3], [5, 6, 7], 4) == ([1, 2, 3], [5])
    assert cut_second_only([1, 2, 3], [5, 6, 7], 4, side="left") == ([1, 2, 3], [7])


# --- longest_first -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer() -> Tokenizer:
    """A WordLevel tokenizer: "w{i}" is id i + 3, pairs as `[CLS] a [SEP] b [SEP]` (3 specials)."""
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, **{f"w{i}": i + 3 for i in range(200)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return tok


@given(
    len_a=st.integers(min_value=0, max_value=70),
    len_b=st.integers(min_value=0, max_value=70),
    max_length=st.integers(min_value=3, max_value=90),
    side=side_st,
)
@settings(max_examples=200, deadline=None)
def test_longest_first_equals_the_tokenizers_crate(word_tokenizer, len_a, len_b, max_length, side):
    a, b = _span(0, len_a), _span(100, len_b)
    word_tokenizer.enable_truncation(max_length, strategy="longest_first", direction=side)
    enc = word_tokenizer.encode(" ".join(f"w{i}" for i in a), " ".join(f"w{i}" for i in b))
    kept_a = [i - 3 for i, s in zip(enc.ids, enc.sequence_ids) if s == 0]
    kept_b = [i - 3 for i, s in zip(enc.ids, enc.sequence_ids) if s == 1]
    assert longest_first(a, b, max_length - 3, side=side) == (kept_a, kept_b)


def test_longest_first_halves_and_gives_the_odd_id_to_the_longer_side():
    assert longest_first(_span(0, 10), _span(100, 3), 7) == (_span(0, 4), _span(100, 3))
    assert longest_first(_span(0, 10), _span(100, 8), 7) == (_span(0, 4), _span(100, 3))
    assert longest_first(_span(0, 8), _span(100, 8), 7) == (_span(0, 3), _span(100, 4))  # tie: b
    with pytest.raises(ValueError, match="room=-1"):
        longest_first([1], [2], -1)


# --- cut_body ----------------------------------------------------------------------------------


def _body(instr_len, query_len, lead_len, doc_len):
    """(head, query_span, doc, parts) of a joined body whose parts use disjoint id ranges."""
    instr, query, lead = _span(1000, instr_len), _span(2000, query_len), _span(3000, lead_len)
    span = (instr_len, instr_len + query_len)
    return instr + query + lead, span, _span(4000, doc_len), (instr, query, lead)


body_st = {
    "instr_len": st.integers(min_value=0, max_value=20),
    "query_len": st.integers(min_value=0, max_value=40),
    "lead_len": st.integers(min_value=1, max_value=5),
    "doc_len": st.integers(min_value=0, max_value=80),
    "query_cap": st.none() | st.integers(min_value=0, max_value=45),
}


@given(
    **body_st,
    max_length=st.integers(min_value=0, max_value=160),
    prefix_len=st.integers(min_value=0, max_value=6),
    suffix_len=st.integers(min_value=0, max_value=6),
)
@settings(max_examples=200, deadline=None)
def test_cut_body_keeps_the_template_and_cuts_the_document_first(
    instr_len, query_len, lead_len, doc_len, query_cap, max_length, prefix_len, suffix_len
):
    head, span, doc, (instr, query, lead) = _body(instr_len, query_len, lead_len, doc_len)
    prefix, suffix = _span(9000, prefix_len), _span(9500, suffix_len)
    budget = max_length - prefix_len - suffix_len
    if instr_len + lead_len > budget:
        with pytest.raises(ValueError, match=f"take {instr_len + lead_len} tokens .* only {budget} "):
            cut_body(head, span, doc, budget, query_cap)
        return
    head2, doc2 = cut_body(head, span, doc, budget, query_cap)
    ids = prefix + head2 + doc2 + suffix  # what the caller assembles
    assert len(ids) <= max_length
    assert ids[:prefix_len] == prefix and ids[len(ids) - suffix_len :] == suffix
    assert head2[:instr_len] == instr and head2[len(head2) - lead_len :] == lead
    kept_query = head2[instr_len : len(head2) - lead_len]
    capped = query if query_cap is None else query[:query_cap]
    assert kept_query == capped[: len(kept_query)] and doc2 == doc[: len(doc2)]
    if doc2:
        assert kept_query == capped  # no query id is cut while a document id remains
    # and nothing is cut that need not be
    assert len(head2) + len(doc2) == min(budget, instr_len + len(capped) + lead_len + doc_len)


@given(**body_st, spare=st.integers(min_value=0, max_value=100))
@settings(max_examples=200, deadline=None)
def test_cut_body_equals_the_cards_right_cut_when_the_document_suffices(
    instr_len, query_len, lead_len, doc_len, query_cap, spare
):
    head, span, doc, (instr, query, lead) = _body(instr_len, query_len, lead_len, doc_len)
    capped_head = instr + (query if query_cap is None else query[:query_cap]) + lead
    budget = len(capped_head) + spare  # the head fits: only the document is cut, if anything
    head2, doc2 = cut_body(head, span, doc, budget, query_cap)
    assert head2 + doc2 == (capped_head + doc)[:budget]


def test_cut_body_keeps_the_lead_where_the_card_would_cut_it():
    head, span, doc, (instr, query, lead) = _body(3, 6, 2, 5)
    head2, doc2 = cut_body(head, span, doc, 8, None)
    assert (head2, doc2) == (instr + query[:3] + lead, [])
    assert (head + doc)[:8] == instr + query[:5]  # the card: the lead is gone, more query is kept


def test_cut_body_errors_name_the_sizes_and_the_fix():
    head, span, doc, _ = _body(5, 4, 2, 3)
    with pytest.raises(ValueError, match=r"take 7 tokens but the body may take only 5 .*by at least 2"):
        cut_body(head, span, doc, 5, None)
    with pytest.raises(ValueError, match="not a span"):
        cut_body(head, (4, 20), doc, 50, None)
    with pytest.raises(ValueError, match="query_cap"):
        cut_body(head, span, doc, 50, -1)
