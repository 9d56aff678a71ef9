"""max_batch_tokens auto: the scoring actor times candidate budgets on its first call's pairs."""

import logging

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.models.budget_probe import probe_budget
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.reranker import Reranker
from pipeline.rerank.score_stage import ScorePairs
from tests.helpers import scoring_settings


def _pairs(tiny_bert, n=40):
    tok = PairTokenizer.load(tiny_bert, 64, 48)
    return tok.encode(["what is kalo"] * n, ["kalo sun ra " * (i % 15 + 1) for i in range(n)])


def test_probe_picks_one_of_the_candidates_and_logs_the_rates(tiny_bert, caplog):
    enc = _pairs(tiny_bert)
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 4096)
    with caplog.at_level(logging.INFO, logger="pipeline.models.budget_probe"):
        chosen = probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], (128, 256, 512))
    assert chosen in (128, 256, 512)
    assert "max_batch_tokens auto: tokens/s at median length" in caplog.text and "128: " in caplog.text


def test_score_stage_with_auto_budget_scores_every_row(tiny_bert):
    enc = _pairs(tiny_bert, 30)
    batch = pa.table(
        {
            "shard": pa.array([0] * 30, pa.int32()),
            "row": pa.array(range(30), pa.int64()),
            **enc,
            "error": pa.nulls(30, pa.string()),
            "reject": pa.nulls(30, pa.string()),
        }
    )
    stage = ScorePairs(
        ModelConfig(name_or_path=tiny_bert, max_length=64),
        Storage(),
        scoring_settings("auto", device="cpu", dtype="float32"),
    )
    out = stage(batch)
    fixed = ScorePairs(
        ModelConfig(name_or_path=tiny_bert, max_length=64),
        Storage(),
        scoring_settings(512, device="cpu", dtype="float32"),
    )(batch)
    np.testing.assert_allclose(out.column("score").to_numpy(), fixed.column("score").to_numpy(), atol=1e-5)
    assert stage._budget in (512, 1024, 2048, 4096, 8192)
