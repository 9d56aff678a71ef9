"""`--long-passages chunk` windowing: which tokens each window holds, and the windows' token ids
for every reranker kind, checked against token ids built independently: FlagEmbedding's own pairs
(the goldens) for the first window, the transformers tokenizer's passage ids for the others."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from pipeline.config import DEFAULT_PROMPT
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.pair_tokenizer import PairTokenizer, load_hf_tokenizer
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.models.windows import WindowOptions, window_starts
from pipeline.rerank.config import load_config
from tests.helpers import MODELS

PASSAGE_PREFIX = "B: "


def _flag(path, max_length, query_max_length, prompt, layerwise=False):
    """FlagEmbedding's decoder layout, and its pieces: (tokenizer, [BOS], "\\n" ids, prompt ids)."""
    text = TextTokenizer.load(path)
    family = FLAG_LAYERWISE if layerwise else FLAG_LLM
    tok = TemplatePairTokenizer(family, text, max_length, query_max_length, prompt)
    bos = [text.bos_token_id] if layerwise or text.bos_token_id != text.pad_token_id else []
    return tok, bos, text.ids(["\n"])[0], text.ids([prompt])[0]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 400),
    width=st.integers(1, 64),
    overlap=st.integers(0, 63),
    max_chunks=st.integers(1, 40),
)
def test_windows_cover_every_token_and_overlap_exactly(n, width, overlap, max_chunks):
    if overlap >= width:
        with pytest.raises(ValueError):
            window_starts(n, width, overlap, max_chunks)
        return
    starts, not_scored = window_starts(n, width, overlap, max_chunks)
    all_starts, none_left = window_starts(n, width, overlap, 10**9)
    assert none_left == 0 and starts == all_starts[:max_chunks]
    assert not_scored == len(all_starts) - len(starts) and len(starts) == min(max_chunks, len(all_starts))
    assert all_starts[0] == 0
    assert all(b - a == width - overlap for a, b in zip(all_starts, all_starts[1:]))  # overlap exact
    covered = set().union(*(range(s, min(s + width, n)) for s in all_starts))
    assert covered == set(range(n))  # every passage token is in some window
    assert all_starts[-1] + width >= n  # the last window reaches the end ...
    assert all(s + width < n for s in all_starts[:-1])  # ... and only the last one does
    assert all(s < max(n, 1) for s in all_starts)  # every window starts inside the passage
    if n <= width:
        assert starts == [0] and not_scored == 0  # a passage that fits is one window


def _windows(tok, queries, passages, overlap=4, max_chunks=1000):
    pair, enc = tok.encode_windows(queries, passages, WindowOptions(overlap, max_chunks))
    columns = {k: v.to_pylist() for k, v in enc.items()}
    return [
        [{k: columns[k][j] for k in columns} for j in np.flatnonzero(pair == i)] for i in range(len(queries))
    ]


def _split_windows(windows, overlap):
    """Consecutive windows' passage tokens overlap by exactly `overlap`; their union is the passage."""
    body = list(windows[0])
    for prev, nxt in zip(windows, windows[1:]):
        assert nxt[:overlap] == prev[len(prev) - overlap :]
        body += nxt[overlap:]
    return body


@pytest.mark.parametrize("case_index", range(4))
def test_encoder_windows_match_the_tokenizer(goldens, case_index):
    case = goldens["cases"][case_index]
    queries, passages = [p[0] for p in goldens["pairs"]], [p[1] for p in goldens["pairs"]]
    path = str(MODELS / case["model"])
    tok = PairTokenizer.load(path, case["max_length"], case["query_max_length"])
    hf = load_hf_tokenizer(path)
    specials = tok.template.num_special
    for i, windows in enumerate(_windows(tok, queries, passages)):
        assert windows[0]["input_ids"] == case["input_ids"][i]  # the first window: FlagEmbedding's pair
        assert [w["window"] for w in windows] == list(range(len(windows)))
        assert {w["windows"] for w in windows} == {len(windows)} and windows[0]["window_char"] == 0
        q_len = len(hf(queries[i], add_special_tokens=False)["input_ids"][: case["query_max_length"]])
        expected = hf(passages[i], add_special_tokens=False, return_offsets_mapping=True)
        width = case["max_length"] - q_len - specials
        lead = windows[0]["input_ids"][: len(tok.template.prefix) + q_len + len(tok.template.middle)]
        bodies = []
        for w in windows:
            assert w["input_ids"][: len(lead)] == lead  # the same query and template in every window
            body = w["input_ids"][len(lead) : len(w["input_ids"]) - len(tok.template.suffix)]
            assert len(body) <= width
            bodies.append(body)
            if tok.uses_token_types:
                assert w["token_type_ids"] == windows[0]["token_type_ids"][: len(w["input_ids"])]
        assert _split_windows(bodies, 4) == expected["input_ids"]
        # offsets as tokenizer.json gives them (transformers 5 rebuilds XLM-R's tokenizer, whose
        # offsets put a word's "▁" one character later: after the space, not on it)
        raw = Tokenizer.from_file(f"{path}/tokenizer.json").encode(passages[i], add_special_tokens=False)
        starts = range(0, 10**9, width - 4)
        offsets = [raw.offsets[s][0] if s else 0 for s in starts[: len(windows)]]
        assert [w["window_char"] for w in windows] == offsets
        assert len(windows) > 1 or len(expected["input_ids"]) <= width


@pytest.mark.parametrize("case_index", range(6))
def test_decoder_windows_match_the_tokenizer(decoder_goldens, case_index):
    case = decoder_goldens["cases"][case_index]
    pairs = decoder_goldens["pairs"]
    queries, passages = [p[0] for p in pairs], [p[1] for p in pairs]
    path = str(MODELS / case["model"])
    args = (case["max_length"], case["query_max_length"], case["prompt"] or DEFAULT_PROMPT)
    tok, bos, sep, prompt = _flag(path, *args, layerwise=case["kind"] == "layerwise")
    hf = load_hf_tokenizer(path)
    tail = [*sep, *prompt]
    for i, windows in enumerate(_windows(tok, queries, passages)):
        assert windows[0]["input_ids"] == case["input_ids"][i]  # the first window: FlagEmbedding's
        full = hf(PASSAGE_PREFIX + passages[i], add_special_tokens=False, return_offsets_mapping=True)
        n_lead = sum(end <= len(PASSAGE_PREFIX) for _, end in full["offset_mapping"])
        q_ids = hf("A: " + queries[i], add_special_tokens=False)["input_ids"][: case["query_max_length"]]
        head = [*bos, *q_ids, *sep, *full["input_ids"][:n_lead]]
        bodies = []
        for w in windows:
            ids = w["input_ids"]
            assert ids[: len(head)] == head and ids[len(ids) - len(tail) :] == tail
            bodies.append(ids[len(head) : len(ids) - len(tail)])
        assert _split_windows(bodies, 4) == full["input_ids"][n_lead:]
        step = len(bodies[0]) - 4
        chars = [0] + [full["offset_mapping"][n_lead + k * step][0] - 3 for k in range(1, len(windows))]
        assert [w["window_char"] for w in windows] == chars


def test_fitting_passages_are_one_window_equal_to_the_truncate_pair(tiny_bert, tiny_xlmr, tiny_gemma):
    queries = ["kalo sun", "zo pe dre ul", "mi ter on " * 30]  # the last one past query_max_length
    passages = ["ra vel on", "a b c d é 😀 e f", "is"]
    tokenizers = [
        PairTokenizer.load(tiny_bert, 128, 96),
        PairTokenizer.load(tiny_xlmr, 128, 96),
        _flag(tiny_gemma, 128, 96, DEFAULT_PROMPT)[0],
    ]
    for tok in tokenizers:
        truncated = tok.encode(queries, passages)
        windows = _windows(tok, queries, passages, overlap=16)
        assert [len(w) for w in windows] == [1, 1, 1]
        for i, (w,) in enumerate(windows):
            assert w["input_ids"] == truncated["input_ids"][i].as_py()
            if "token_type_ids" in truncated:
                assert w["token_type_ids"] == truncated["token_type_ids"][i].as_py()
            assert (w["window_char"], w["windows_not_scored"]) == (0, 0)


def test_max_chunks_scores_the_first_windows_and_counts_the_rest(tiny_bert):
    tok = PairTokenizer.load(tiny_bert, 64, 32)
    passage = "ka lo mi ter sun ra vel on is zo pe dre " * 20
    (all_windows,) = _windows(tok, ["kalo"], [passage], overlap=8)
    (capped,) = _windows(tok, ["kalo"], [passage], overlap=8, max_chunks=3)
    assert len(all_windows) > 3
    assert capped == [w | {"windows": 3, "windows_not_scored": len(all_windows) - 3} for w in all_windows[:3]]


def test_window_char_counts_characters_not_bytes(tiny_gemma):
    tok, bos, sep, prompt = _flag(tiny_gemma, 64, 16, DEFAULT_PROMPT)
    passage = "".join(f"wörd{i} 😀 " for i in range(60))  # 2-, 4-byte characters before each window
    (windows,) = _windows(tok, ["q"], [passage], overlap=4)
    assert len(windows) > 2
    hf = load_hf_tokenizer(tiny_gemma)
    full = hf(PASSAGE_PREFIX + passage, add_special_tokens=False, return_offsets_mapping=True)
    n_lead = sum(end <= len(PASSAGE_PREFIX) for _, end in full["offset_mapping"])
    head = len(bos) + len(hf("A: q", add_special_tokens=False)["input_ids"]) + len(sep) + n_lead
    tail = len(sep) + len(prompt)
    for w in windows[1:]:
        body = w["input_ids"][head : len(w["input_ids"]) - tail]
        # the passage from that character on tokenizes to the window's own first tokens (after up
        # to 3 byte tokens of that character, when the window starts inside a multi-byte one)
        ids = tok.tokenizer.ids([passage[w["window_char"] :]])[0]
        assert any(ids[k : k + 6] == body[:6] for k in range(4))


def test_an_overlap_leaving_no_step_is_refused_before_scoring(tiny_bert):
    tok = PairTokenizer.load(tiny_bert, 64, 48)  # narrowest window: 64 - 48 - 3 = 13 tokens
    with pytest.raises(ModelLoadError, match="--chunk-overlap 13 leaves windows no step"):
        tok.encode_windows(["q"], ["p"], WindowOptions(13, 4))
    tok.encode_windows(["q"], ["p"], WindowOptions(12, 4))
    base = {"output": {"uri": "o"}, "model": {"name_or_path": "m", "max_length": 64, "query_max_length": 48}}
    with pytest.raises(ConfigError, match="chunk_overlap=12 is not below the 12 passage tokens"):
        load_config(None, base | {"input": {"uri": "i", "long_passages": "chunk", "chunk_overlap": 12}})
    with pytest.raises(ConfigError, match="--chunk-overlap needs --long-passages chunk") as err:
        load_config(None, base | {"input": {"uri": "i", "long_passages": "truncate", "chunk_overlap": 12}})
    assert len(err.value.problems) == 1  # the window check is chunk mode's only
    load_config(None, base | {"input": {"uri": "i", "long_passages": "chunk", "chunk_overlap": 11}})
