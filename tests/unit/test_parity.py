"""Tokenization and scores equal FlagEmbedding 1.4.2 `FlagReranker.compute_score` (fp32).

Goldens: tests/assets/make_goldens.py, run in the side venv (transformers 4.57.6).
"""

import numpy as np
import pytest
import torch

from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.output.ranking import sigmoid

TOLERANCE = 1e-4


def _case_ids(goldens):
    return [f"{c['model']}-{c['max_length']}-{c['query_max_length']}" for c in goldens["cases"]]


@pytest.fixture(params=range(4), ids=lambda i: f"case{i}")
def case(request, goldens):
    c = goldens["cases"][request.param]
    return c, [p[0] for p in goldens["pairs"]], [p[1] for p in goldens["pairs"]]


def _model(name):
    from tests.conftest import MODELS

    return str(MODELS / name)


def test_goldens_cover_truncation(goldens):
    by_case = {(c["model"], c["max_length"]): c for c in goldens["cases"]}
    lengths = [len(x) for x in by_case[("tiny-bert", 512)]["input_ids"]]
    assert max(lengths) == 512  # passages longer than max_length were cut
    short = by_case[("tiny-bert", 64)]
    assert sum(len(x) == 64 for x in short["input_ids"]) > 5
    assert short["query_max_length"] == 48  # a query past it appears (60- and 200-word queries)


def test_token_ids_match_flagembedding(case):
    c, queries, passages = case
    tok = PairTokenizer.load(_model(c["model"]), c["max_length"], c["query_max_length"])
    assert tok.encode(queries, passages)["input_ids"].to_pylist() == c["input_ids"]


@pytest.mark.parametrize("max_batch_tokens", [512, 4096, 1 << 20])
def test_scores_match_flagembedding(case, max_batch_tokens):
    c, queries, passages = case
    tok = PairTokenizer.load(_model(c["model"]), c["max_length"], c["query_max_length"])
    enc = tok.encode(queries, passages)
    reranker = Reranker.load(_model(c["model"]), "cpu", "float32", max(max_batch_tokens, c["max_length"]))
    scores = reranker.score(enc["input_ids"], enc.get("token_type_ids")).scores
    np.testing.assert_allclose(scores, c["scores"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(sigmoid(scores), c["scores_normalized"], atol=TOLERANCE, rtol=0)
    assert np.std(c["scores"]) > 0.05  # the goldens discriminate: a wrong token would show


def test_pair_score_independent_of_batch(tiny_xlmr):
    tok = PairTokenizer.load(tiny_xlmr, 128, 96)
    queries = ["kalo sun", "zo pe dre ul ix vel on is ter", "mi"]
    passages = ["a b c " * 40, "short one", "ra " * 3]
    enc = tok.encode(queries, passages)
    reranker = Reranker.load(tiny_xlmr, "cpu", "float32", 4096)
    together = reranker.score(enc["input_ids"]).scores
    alone = [reranker.score(tok.encode([q], [p])["input_ids"]).scores[0] for q, p in zip(queries, passages)]
    np.testing.assert_allclose(together, alone, atol=1e-5)


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error for batches above `rows` (fault injection)."""

    def __init__(self, model, rows: int) -> None:
        super().__init__()
        self.model, self.rows, self.failures = model, rows, 0

    def forward(self, **kwargs):
        if kwargs["input_ids"].shape[0] > self.rows:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.model(**kwargs)


def test_out_of_memory_splits_the_batch_and_goes_on(goldens, caplog):
    case = goldens["cases"][0]
    path = _model(case["model"])
    tok = PairTokenizer.load(path, case["max_length"], case["query_max_length"])
    enc = tok.encode([p[0] for p in goldens["pairs"]], [p[1] for p in goldens["pairs"]])
    reranker = Reranker.load(path, "cpu", "float32", 1 << 20)  # one big batch of 23 rows
    reranker.model = OutOfMemoryAbove(reranker.model, rows=4)
    scores = reranker.score(enc["input_ids"], enc.get("token_type_ids")).scores
    np.testing.assert_allclose(scores, case["scores"], atol=TOLERANCE, rtol=0)
    assert reranker.model.failures >= 3 and "splitting it in two" in caplog.text
    reranker.model.rows = 0  # even one row does not fit: the error is raised, not swallowed
    with pytest.raises(torch.OutOfMemoryError):
        reranker.score(enc["input_ids"], enc.get("token_type_ids"))
