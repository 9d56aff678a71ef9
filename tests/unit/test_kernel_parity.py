"""`--attention unpadded`: packed batches with per-pair attention give today's padded eager scores
(fp32, 1e-5) for every reranker kind, through the Reranker and through the scoring stage."""

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import DEFAULT_PROMPT, ModelConfig
from pipeline.errors import ModelLoadError
from pipeline.io import Storage
from pipeline.modeling.kernels.attention import packed_attention, varlen_attention_forward
from pipeline.modeling.kernels.cpu_linear import prepack_linears
from pipeline.modeling.kernels.packed import packed_scorer
from pipeline.modeling.reranker import Reranker, load_scorer
from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.config import load_config
from pipeline.rerank.output.fingerprint import fingerprint
from pipeline.rerank.stages.score import ScorePairs
from tests.helpers import MODELS, scoring_settings

# (model, kind, cutoff layers): every kind, and both encoder position schemes (BERT, RoBERTa)
CASES = [
    ("tiny-bert", "encoder", None),
    ("tiny-xlmr", "encoder", None),
    ("tiny-gemma", "llm", None),
    ("tiny-minicpm-layerwise", "layerwise", [2, 4, 6]),
]


def encoded(model: str, kind: str, pairs: list[list[str]]):
    path = str(MODELS / model)
    queries, passages = [p[0] for p in pairs], [p[1] for p in pairs]
    if kind == "encoder":
        enc = PairTokenizer.load(path, 128, 96).encode(queries, passages)
    else:
        family = FLAG_LAYERWISE if kind == "layerwise" else FLAG_LLM
        tok = TemplatePairTokenizer.load(path, family, 128, 96, DEFAULT_PROMPT)
        enc = tok.encode(queries, passages)
    return enc["input_ids"], enc.get("token_type_ids")


@pytest.mark.parametrize(("model", "kind", "cutoffs"), CASES)
def test_unpadded_scores_equal_padded_eager(goldens, model, kind, cutoffs):
    ids, types = encoded(model, kind, goldens["pairs"])
    path = str(MODELS / model)
    padded = Reranker.load(path, "cpu", "float32", 512, kind=kind, cutoff_layers=cutoffs)
    unpadded = Reranker.load(
        path, "cpu", "float32", 512, kind=kind, cutoff_layers=cutoffs, attention="unpadded"
    )
    want, got = padded.score(ids, types), unpadded.score(ids, types)
    # 1e-5, and 2.5e-5 for the layerwise tiny model (|score| up to ~9), whose padded scores
    # themselves move by up to 2.5e-5 between two batch compositions (on CPU the packed path's
    # attention is our C kernel: another summation order, pipeline/modeling/kernels/cpu_attention.c)
    atol = 2.5e-5 if kind == "layerwise" else 1e-5
    np.testing.assert_allclose(got.columns, want.columns, atol=atol, rtol=1e-5)
    lengths = np.diff(ids.offsets.to_numpy())
    assert (got.padded_lengths == lengths).all()  # packed: every pair runs at its own length


def test_a_budget_holds_real_tokens_when_packed(tiny_bert, goldens):
    ids, types = encoded("tiny-bert", "encoder", goldens["pairs"])
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 100, attention="unpadded")
    lengths = np.diff(ids.offsets.to_numpy())
    batches = reranker.plan(lengths, 100)
    assert all(lengths[b].sum() <= 100 or len(b) == 1 for b in batches)
    assert len(batches) < len(Reranker.load(tiny_bert, "cpu", "float32", 100).plan(lengths, 100))


def test_the_scoring_stage_runs_the_unpadded_path_from_the_model_config(tiny_xlmr):
    enc = PairTokenizer.load(tiny_xlmr, 64, 48).encode(
        ["what is kalo"] * 20, ["kalo ra " * i for i in range(1, 21)]
    )
    batch = pa.table(
        {
            "shard": pa.array([0] * 20, pa.int32()),
            "row": pa.array(range(20), pa.int64()),
            **enc,
            "error": pa.nulls(20, pa.string()),
            "reject": pa.nulls(20, pa.string()),
        }
    )
    settings = scoring_settings(256)
    padded = ScorePairs(ModelConfig(name_or_path=tiny_xlmr, max_length=64), Storage(), settings)
    unpadded = ScorePairs(
        ModelConfig(name_or_path=tiny_xlmr, max_length=64, attention="unpadded"), Storage(), settings
    )
    assert unpadded.reranker.attention == "unpadded" and padded.reranker.attention == "padded"
    np.testing.assert_allclose(
        unpadded(batch).column("score").to_numpy(), padded(batch).column("score").to_numpy(), atol=1e-5
    )


def test_neither_kernel_flag_is_in_the_fingerprint():
    """They change no score beyond 1e-5, so an OUTPUT scored one way resumes the other way."""
    plain = {"input": {"uri": "in"}, "output": {"uri": "out"}, "model": {"name_or_path": "m"}}
    fast = plain | {"model": {"name_or_path": "m", "attention": "unpadded", "compile": "on"}}
    assert fingerprint(load_config(None, plain), "float16") == fingerprint(load_config(None, fast), "float16")


def test_one_reranker_switches_paths_and_back(tiny_bert, goldens):
    """The `--attention auto` probe runs both paths on one module: padded again after unpadded
    gives the padded scores (the transformers model has its own attention back)."""
    ids, types = encoded("tiny-bert", "encoder", goldens["pairs"])
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 512)
    want = reranker.score(ids, types).columns
    reranker.use_attention("unpadded")
    np.testing.assert_allclose(reranker.score(ids, types).columns, want, atol=1e-5)
    reranker.use_attention("padded")
    assert reranker.attention == "padded" and reranker.position_offset == 0
    np.testing.assert_array_equal(reranker.score(ids, types).columns, want)


@pytest.mark.parametrize(("causal", "kv_heads"), [(False, 4), (True, 4), (True, 2), (True, 1)])
def test_packed_attention_is_per_pair_attention(causal, kv_heads):
    torch.manual_seed(0)
    lengths = [5, 1, 9, 3]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    total = int(cu[-1])
    q = torch.randn(total, 4, 8)
    k, v = torch.randn(total, kv_heads, 8), torch.randn(total, kv_heads, 8)
    out = packed_attention(q, k, v, cu, max(lengths), causal=causal, scale=0.3)
    for i in range(len(lengths)):
        s, e = int(cu[i]), int(cu[i + 1])
        qi = q[s:e].transpose(0, 1)[None]
        ki = k[s:e].transpose(0, 1)[None].repeat_interleave(4 // kv_heads, dim=1)
        vi = v[s:e].transpose(0, 1)[None].repeat_interleave(4 // kv_heads, dim=1)
        want = F.scaled_dot_product_attention(qi, ki, vi, is_causal=causal, scale=0.3)[0].transpose(0, 1)
        torch.testing.assert_close(out[s:e], want, atol=1e-6, rtol=1e-6)


def test_the_varlen_implementation_refuses_what_it_cannot_run():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="packed batches only"):
        varlen_attention_forward(torch.nn.Module(), q, q, q, None)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ModelLoadError, match="--attention padded"):
        varlen_attention_forward(
            torch.nn.Module(), q, q, q, None, cu_seq_lens_q=cu, max_length_q=4, softcap=50.0
        )


def test_an_unknown_head_is_refused_with_the_fix():
    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Linear(2, 1)

    with pytest.raises(ModelLoadError, match="use --attention padded"):
        packed_scorer(Scorer())


def test_cpu_linears_are_prepacked_with_bert_gelu_fused(tiny_bert, goldens):
    """On CPU the Reranker runs prepacked oneDNN products (kernels/cpu_linear.py): every linear
    layer swapped, BERT's intermediate GELU fused, the scores those of the plain module."""
    ids, types = encoded("tiny-bert", "encoder", goldens["pairs"])
    plain, pad, _ = load_scorer(tiny_bert, "encoder", torch.float32)
    want = Reranker(plain.eval(), "cpu", pad, 512).score(ids, types).columns
    packed = Reranker.load(tiny_bert, "cpu", "float32", 512)
    kinds = {type(m).__name__ for m in packed.scorer.modules()}
    assert "Linear" not in kinds and {"PackedLinear", "FusedIntermediate"} <= kinds
    np.testing.assert_allclose(packed.score(ids, types).columns, want, atol=1e-5)
    compiled = Reranker.load(tiny_bert, "cpu", "float32", 512, compiled=True)  # inductor packs its own
    assert "PackedLinear" not in {type(m).__name__ for m in compiled.scorer.modules()}
    assert prepack_linears(torch.nn.Linear(4, 4).to(torch.float16)) == 0  # a dtype oneDNN does not pack here
