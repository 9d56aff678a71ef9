"""The token-logit score head: the folded row (or the soft-capped rows) gives exactly what the full
vocabulary logits give, and each family's score token ids come from its tokenizer.json."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ModelLoadError
from pipeline.modeling.token_head import TokenLogitHead, load_rows, token_logit_head
from pipeline.models.families.family import Score
from pipeline.models.families.registry import CROSS_ENCODER, FLAG_LLM, MXBAI_V2, QWEN3
from pipeline.models.families.score_tokens import score_token_ids, score_weights
from pipeline.models.text_tokenizer import TextTokenizer

TEXTS = [
    "<Query>: what is kalo\n<Document>: kalo is a sunra of the velon.",
    "Ünïcödé — 🙂 yes or no?",
    "a short one",
]


def _causal_lm(directory: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def test_score_token_ids_of_each_family(tiny_qwen3_reranker, tiny_mxbai_v2, tiny_gemma):
    from transformers import AutoTokenizer

    assert score_token_ids(QWEN3, TextTokenizer.load(tiny_qwen3_reranker)) == (9693, 2152)
    assert score_token_ids(MXBAI_V2, TextTokenizer.load(tiny_mxbai_v2)) == (16, 15)
    flag_ids = score_token_ids(FLAG_LLM, TextTokenizer.load(tiny_gemma))
    # FlagLLMReranker's: the first id of tokenizer("Yes", add_special_tokens=False)
    assert flag_ids == (
        AutoTokenizer.from_pretrained(tiny_gemma)("Yes", add_special_tokens=False)["input_ids"][0],
    )
    # the Qwen3 card's lookup is the same id
    qwen = AutoTokenizer.from_pretrained(tiny_qwen3_reranker)
    assert (qwen.convert_tokens_to_ids("yes"), qwen.convert_tokens_to_ids("no")) == (9693, 2152)
    assert score_weights(QWEN3) == score_weights(MXBAI_V2) == (1.0, -1.0)
    assert score_weights(FLAG_LLM) == (1.0,)


def test_a_single_token_of_two_ids_is_refused(tiny_qwen3_reranker):
    family = dataclasses.replace(QWEN3, score=Score(kind="token-difference", tokens=("yes", "kalonid")))
    with pytest.raises(ModelLoadError, match=r"score token 'kalonid' into \d+ ids \[\d+, \d+"):
        score_token_ids(family, TextTokenizer.load(tiny_qwen3_reranker))


def test_a_family_without_score_tokens_is_refused(tiny_qwen3_reranker):
    with pytest.raises(ModelLoadError, match="cross-encoder family's score .* not read from token logits"):
        score_token_ids(CROSS_ENCODER, TextTokenizer.load(tiny_qwen3_reranker))


def test_folded_row_equals_the_full_logits_difference(tiny_qwen3_reranker):
    model = _causal_lm(tiny_qwen3_reranker)
    yes, no = score_token_ids(QWEN3, TextTokenizer.load(tiny_qwen3_reranker))
    head = token_logit_head(model, (yes, no), score_weights(QWEN3))
    assert head.is_folded and head.rows.shape == (1, model.config.hidden_size)
    assert head.rows.dtype == torch.float32
    with torch.no_grad():
        for ids in TextTokenizer.load(tiny_qwen3_reranker).ids(TEXTS):
            input_ids = torch.tensor([ids])
            logits = model(input_ids=input_ids).logits[:, -1]
            final = model.model(input_ids=input_ids).last_hidden_state[:, -1]
            expected = logits[:, yes] - logits[:, no]
            torch.testing.assert_close(head(final), expected, atol=1e-5, rtol=0)


def test_folding_keeps_the_bias_and_the_model_dtype():
    torch.manual_seed(0)
    rows, bias, final = torch.randn(2, 16), torch.randn(2), torch.randn(5, 16)
    folded = TokenLogitHead(rows, (1.0, -1.0), bias)
    expected = F.linear(final, rows, bias) @ torch.tensor([1.0, -1.0])
    torch.testing.assert_close(folded(final), expected, atol=1e-5, rtol=0)
    half = TokenLogitHead(rows.bfloat16(), (1.0, -1.0), bias.bfloat16())
    assert half.rows.dtype == half.bias.dtype == torch.bfloat16
    assert half(final.bfloat16()).dtype == torch.float32


def _tiny_softcapped_lm() -> torch.nn.Module:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=3.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # logits well past the cap: tanh is far from linear there
    return model


def test_softcapped_rows_equal_the_capped_full_logits():
    model = _tiny_softcapped_lm()
    yes, no = 7, 11
    head = token_logit_head(model, (yes, no), (1.0, -1.0))
    assert not head.is_folded and head.rows.shape == (2, 16)
    rows, bias = load_rows(model, (yes, no))
    uncapped = TokenLogitHead(rows, (1.0, -1.0), bias)  # what folding would wrongly give
    input_ids = torch.tensor([[2, 5, 9, 13, 21, 34], [2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, -1]  # capped by the model
        final = model.model(input_ids=input_ids).last_hidden_state[:, -1]
        expected = logits[:, yes] - logits[:, no]
        torch.testing.assert_close(head(final), expected, atol=1e-5, rtol=0)
        assert logits.abs().max() > 2.0  # the cap was reached, so the uncapped fold must differ
        assert not torch.allclose(uncapped(final), expected, atol=1e-3)


def test_rows_of_ids_outside_the_vocabulary_are_refused():
    model = _tiny_softcapped_lm()
    with pytest.raises(ModelLoadError, match=r"score token ids \[64\] are outside .* 64 rows"):
        load_rows(model, (3, 64))
