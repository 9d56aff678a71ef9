"""The packed cross-encoder's last layer at each pair's first token only
(pipeline.modeling.kernels.first_token) gives the scores of the whole last layer (fp32, 1e-6), and
a layer it does not know runs whole, with the reason reported."""

import numpy as np
import pytest

from pipeline.modeling.kernels.first_token import why_not_prunable
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from tests.helpers import MODELS


def encoded(model: str, pairs: list[list[str]]):
    enc = PairTokenizer.load(str(MODELS / model), 128, 96).encode(
        [p[0] for p in pairs], [p[1] for p in pairs]
    )
    return enc["input_ids"], enc.get("token_type_ids")


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-xlmr"])
def test_first_tokens_only_equals_the_whole_last_layer(goldens, model):
    ids, types = encoded(model, goldens["pairs"])
    reranker = Reranker.load(str(MODELS / model), "cpu", "float32", 512, attention="unpadded")
    assert reranker.last_layer == "first tokens only"
    pruned = reranker.score(ids, types).columns
    reranker._packed.full_last_layer = "forced by the test"  # type: ignore[union-attr]
    assert reranker.last_layer == "every token (forced by the test)"
    whole = reranker.score(ids, types).columns
    np.testing.assert_allclose(pruned, whole, atol=1e-6, rtol=1e-6)
    # in batches of a few pairs too: each pair's keys stay its own
    np.testing.assert_allclose(reranker.score(ids, types, 96).columns, whole, atol=1e-6, rtol=1e-6)
    reranker.use_attention("padded")
    assert reranker.last_layer is None


def test_an_unknown_last_layer_runs_whole(tiny_bert):
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 512, attention="unpadded")
    base = reranker._packed.model.base_model  # type: ignore[union-attr]
    assert why_not_prunable(base) is None
    assert "BertEncoder is not one of" in (why_not_prunable(base.encoder) or "")
    base.config.position_embedding_type = "relative_key"  # this reranker only: loaded for the test
    assert "relative_key position embeddings" in (why_not_prunable(base) or "")
