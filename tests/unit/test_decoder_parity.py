"""LLM (gemma-style) and layerwise (minicpm-style) rerankers equal FlagEmbedding 1.4.2 (fp32).

Goldens: tests/assets/make_goldens.py in the side venv (transformers 4.57.6), where
`FlagLLMReranker` / `LayerWiseFlagLLMReranker.compute_score` ran on the same tiny checkpoints; the
token ids stored there are the ones FlagEmbedding fed its model.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.config import DEFAULT_PROMPT
from pipeline.errors import ModelLoadError
from pipeline.modeling.minicpm_layerwise import LayerwiseReranker
from pipeline.modeling.reranker import Reranker
from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.text_tokenizer import TextTokenizer
from pipeline.rerank.output.ranking import sigmoid
from tests.conftest import MODELS

TOLERANCE = 1e-4


def _tokenizer(case, tok=None):
    tok = tok or TextTokenizer.load(str(MODELS / case["model"]))
    family = FLAG_LAYERWISE if case["kind"] == "layerwise" else FLAG_LLM
    prompt = case["prompt"] or DEFAULT_PROMPT
    return TemplatePairTokenizer(family, tok, case["max_length"], case["query_max_length"], prompt)


def _reranker(case, budget=4096, dtype="float32", cutoff_layers="case"):
    layers = case["cutoff_layers"] if cutoff_layers == "case" else cutoff_layers
    return Reranker.load(
        str(MODELS / case["model"]), "cpu", dtype, budget, kind=case["kind"], cutoff_layers=layers
    )


@pytest.fixture(params=range(6), ids=lambda i: f"case{i}")
def case(request, decoder_goldens):
    c = decoder_goldens["cases"][request.param]
    return c, [p[0] for p in decoder_goldens["pairs"]], [p[1] for p in decoder_goldens["pairs"]]


def test_goldens_cover_truncation_prompt_and_layers(decoder_goldens):
    cases = decoder_goldens["cases"]
    assert {c["kind"] for c in cases} == {"llm", "layerwise"}
    assert any(c["prompt"] for c in cases) and any(c["cutoff_layers"] == [2, 4, 6] for c in cases)
    short = [c for c in cases if c["max_length"] == 64]
    assert short and all(max(len(x) for x in c["input_ids"]) > 64 for c in short)  # + sep + prompt
    for c in cases:
        assert all(np.std(layer) > 0.5 for layer in c["scores"])  # the goldens discriminate


def test_token_ids_match_flagembedding(case):
    c, queries, passages = case
    assert _tokenizer(c).encode(queries, passages)["input_ids"].to_pylist() == c["input_ids"]


@pytest.mark.parametrize("max_batch_tokens", [1024, 4096, 1 << 20])
def test_scores_match_flagembedding(case, max_batch_tokens):
    c, queries, passages = case
    ids = _tokenizer(c).encode(queries, passages)["input_ids"]
    result = _reranker(c, max_batch_tokens).score(ids)
    golden = np.array(c["scores"]).T  # [pairs, layers]
    np.testing.assert_allclose(result.columns, golden, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(sigmoid(result.columns), np.array(c["scores_normalized"]).T, atol=TOLERANCE)


@pytest.mark.parametrize("kind", ["llm", "layerwise"])
def test_score_does_not_depend_on_padding(kind, decoder_goldens):
    c = next(x for x in decoder_goldens["cases"] if x["kind"] == kind)
    tok, reranker = _tokenizer(c), _reranker(c)
    queries = ["kalo sun", "zo pe dre ul ix vel on is ter", "mi", "what is the bar"]
    passages = ["a b c " * 60, "short one", "ra " * 3, "sun " * 20]
    together = reranker.score(tok.encode(queries, passages)["input_ids"]).columns
    alone = [reranker.score(tok.encode([q], [p])["input_ids"]).columns[0] for q, p in zip(queries, passages)]
    np.testing.assert_allclose(together, np.array(alone), atol=1e-5, rtol=0)


def test_several_cutoff_layers_give_one_column_each_in_the_order_asked(decoder_goldens, tiny_layerwise):
    c = next(x for x in decoder_goldens["cases"] if x["cutoff_layers"] == [2, 4, 6])
    pairs = decoder_goldens["pairs"]
    ids = _tokenizer(c).encode([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]
    by_layer = dict(zip(c["cutoff_layers"], np.array(c["scores"])))
    result = _reranker(c, cutoff_layers=[6, 2]).score(ids)
    np.testing.assert_allclose(result.columns[:, 0], by_layer[6], atol=TOLERANCE)
    np.testing.assert_allclose(result.columns[:, 1], by_layer[2], atol=TOLERANCE)
    np.testing.assert_allclose(result.scores, by_layer[6], atol=TOLERANCE)  # the main score: first listed


def test_layerwise_builds_and_loads_only_the_layers_it_runs(tiny_layerwise):
    model = LayerwiseReranker.load(tiny_layerwise, [3], torch.float32)
    assert len(model.model.layers) == 3
    assert not any(k.startswith(("model.layers.3.", "model.layers.5.")) for k in model.state_dict())
    assert LayerwiseReranker.load(tiny_layerwise, None, torch.float32).cutoff_layers == [6]  # the last


def test_layerwise_cutoff_out_of_range_is_a_clear_error(tiny_layerwise):
    with pytest.raises(ModelLoadError, match=r"--cutoff-layers \[1, 7\] out of range.*layers 2\.\.6"):
        LayerwiseReranker.load(tiny_layerwise, [1, 4, 7], torch.float32)


@pytest.mark.parametrize("layout", ["sharded-safetensors", "pytorch-bin"])
def test_layerwise_loads_other_checkpoint_layouts(layout, tmp_path, tiny_layerwise, decoder_goldens):
    """Published checkpoints come as sharded safetensors or .bin files, not only one file."""
    target = tmp_path / "model"
    shutil.copytree(tiny_layerwise, target)
    tensors = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    names = sorted(tensors)
    if layout == "pytorch-bin":
        torch.save(tensors, target / "pytorch_model.bin")
    else:
        halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
        for file, keys in halves.items():
            save_file({k: tensors[k] for k in keys}, target / file)
        weight_map = {k: f for f, keys in halves.items() for k in keys}
        (target / "model.safetensors.index.json").write_text(
            f'{{"weight_map": {weight_map}}}'.replace("'", '"')
        )
    c = next(x for x in decoder_goldens["cases"] if x["kind"] == "layerwise")
    pairs = decoder_goldens["pairs"][:6]
    ids = _tokenizer(c).encode([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]
    reranker = Reranker.load(str(target), "cpu", "float32", 4096, kind="layerwise")
    np.testing.assert_allclose(reranker.score(ids).scores, np.array(c["scores"][0][:6]), atol=TOLERANCE)


def test_layerwise_missing_tensor_is_named(tmp_path, tiny_layerwise):
    target = tmp_path / "model"
    shutil.copytree(tiny_layerwise, target)
    tensors = load_file(target / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, target / "model.safetensors")
    with pytest.raises(
        ModelLoadError, match="lacks tensors the model needs: model.layers.1.mlp.up_proj.weight"
    ):
        LayerwiseReranker.load(str(target), [4], torch.float32)


def test_llm_layout_without_bos_when_bos_is_the_pad_token(tiny_gemma, decoder_goldens, tmp_path):
    """FlagLLMReranker prepends BOS only if the tokenizer has one distinct from its pad token."""
    from transformers import AutoTokenizer

    c = next(x for x in decoder_goldens["cases"] if x["kind"] == "llm")
    tok = AutoTokenizer.from_pretrained(tiny_gemma)
    first = _tokenizer(c, TextTokenizer.load(tiny_gemma)).encode_pairs(["q"], ["p"])[0]
    assert first[0] == tok.bos_token_id
    bos_pads = tmp_path / "bos-pads"  # the tiny gemma saved with `tok.pad_token = tok.bos_token`
    shutil.copytree(tiny_gemma, bos_pads)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        saved = json.loads((bos_pads / name).read_text())
        (bos_pads / name).write_text(json.dumps(saved | {"pad_token": tok.bos_token}))
    assert AutoTokenizer.from_pretrained(bos_pads).pad_token_id == tok.bos_token_id
    ids = _tokenizer(c, TextTokenizer.load(str(bos_pads))).encode(["q"], ["p"])["input_ids"].to_pylist()[0]

    def pieces(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    sep = pieces("\n")
    assert ids == pieces("A: q") + sep + pieces("B: p") + sep + pieces(DEFAULT_PROMPT)


@pytest.mark.parametrize("kind", ["llm", "layerwise"])
@pytest.mark.parametrize("dtype,tolerance", [("float16", 0.1), ("bfloat16", 1.0)])
def test_half_precision_scores_stay_close_to_fp32(kind, dtype, tolerance, decoder_goldens):
    """The dtype flags work for decoder kinds (loose: tiny random models amplify rounding)."""
    c = next(x for x in decoder_goldens["cases"] if x["kind"] == kind)
    pairs = decoder_goldens["pairs"][:10]
    ids = _tokenizer(c).encode([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]
    half = _reranker(c, dtype=dtype).score(ids).scores
    fp32 = np.array(c["scores"][0][:10])
    np.testing.assert_allclose(half, fp32, atol=tolerance)
    assert np.corrcoef(half, fp32)[0, 1] > 0.95
