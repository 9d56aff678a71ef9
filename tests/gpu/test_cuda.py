"""CUDA checks: fp16 scores track the fp32 FlagEmbedding goldens; the scoring stage runs on GPU."""

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.stages.score import ScorePairs
from tests.helpers import MODELS, scoring_settings

STORAGE = Storage()

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-4), ("float16", 2e-2), ("bfloat16", 1e-1)])
def test_cuda_scores_track_goldens(goldens, dtype, atol):
    for case in goldens["cases"]:
        path = str(MODELS / case["model"])
        tok = PairTokenizer.load(path, case["max_length"], case["query_max_length"])
        enc = tok.encode([p[0] for p in goldens["pairs"]], [p[1] for p in goldens["pairs"]])
        reranker = Reranker.load(path, "cuda", dtype, 4096)
        scores = reranker.score(enc["input_ids"], enc.get("token_type_ids")).scores
        np.testing.assert_allclose(scores, case["scores"], atol=atol, rtol=0)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-4), ("float16", 0.25), ("bfloat16", 1.0)])
def test_cuda_decoder_scores_track_goldens(decoder_goldens, dtype, atol):
    """LLM and layerwise kinds on CUDA (loose in half precision: the tiny models amplify rounding)."""
    from pipeline.config import DEFAULT_PROMPT
    from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM
    from pipeline.models.families.template_tokenizer import TemplatePairTokenizer

    pairs = decoder_goldens["pairs"]
    for case in decoder_goldens["cases"]:
        path = str(MODELS / case["model"])
        tok = TemplatePairTokenizer.load(
            path,
            FLAG_LAYERWISE if case["kind"] == "layerwise" else FLAG_LLM,
            case["max_length"],
            case["query_max_length"],
            case["prompt"] or DEFAULT_PROMPT,
        )
        ids = tok.encode([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]
        reranker = Reranker.load(
            path, "cuda", dtype, 4096, kind=case["kind"], cutoff_layers=case["cutoff_layers"]
        )
        columns = reranker.score(ids).columns
        golden = np.array(case["scores"]).T
        np.testing.assert_allclose(columns, golden, atol=atol, rtol=0)
        assert np.corrcoef(columns[:, 0], golden[:, 0])[0, 1] > 0.95


def test_score_stage_on_cuda(tiny_bert):
    import pyarrow as pa

    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    tok = PairTokenizer.load(tiny_bert, 64, 48)
    enc = tok.encode(["what is kalo"] * 50, ["kalo sun ra " * i for i in range(50)])
    batch = pa.table(
        {
            "shard": pa.array([0] * 50, pa.int32()),
            "row": pa.array(range(50), pa.int64()),
            **enc,
            "error": pa.nulls(50, pa.string()),
            "reject": pa.nulls(50, pa.string()),
        }
    )
    out = ScorePairs(model, STORAGE, scoring_settings(512, device="cuda", dtype="float16"))(batch)
    assert out.num_rows == 50 and not np.isnan(out.column("score").to_numpy()).any()
