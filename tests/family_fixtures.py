"""The tiny rerankers of the newer families (Qwen3-Reranker, mxbai-rerank-v2, ModernBERT) as session
fixtures: built once per session into a temporary directory (a few seconds; ~21 MB each with the
tokenizer, so never committed) and checked against the expected weight digests. Like
tests/model_fixtures.py it imports no test tool (no s3fs, moto or Ray), and it imports torch and
transformers (tests/assets/family_models.py) only in a session that uses one of these models:
every conftest.py that imports it stays light."""

from __future__ import annotations

import pytest


def _built(tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    from tests.assets import family_models  # torch + transformers: ~2 s, only when a test needs it

    builder, expected = {
        "tiny-qwen3-reranker": (family_models.build_tiny_qwen3_reranker, family_models.QWEN3_RERANKER_DIGEST),
        "tiny-mxbai-rerank-base-v2": (family_models.build_tiny_mxbai_v2, family_models.MXBAI_V2_DIGEST),
        "tiny-modernbert-reranker": (family_models.build_tiny_modernbert, family_models.MODERNBERT_DIGEST),
    }[name]
    model_dir = builder(tmp_path_factory.mktemp("family-models") / name)
    digest = family_models.weights_digest(model_dir)
    assert digest == expected, (
        f"{name}: weights digest {digest} != {expected}; the seeded init changed (torch?), so the "
        "goldens no longer describe this model"
    )
    return str(model_dir)


@pytest.fixture(scope="session")
def tiny_qwen3_reranker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Qwen3-Reranker-shaped model directory (Qwen3ForCausalLM, vocab 151,669, Qwen3 tokenizer)."""
    return _built(tmp_path_factory, "tiny-qwen3-reranker")


@pytest.fixture(scope="session")
def tiny_mxbai_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An mxbai-rerank-base-v2-shaped model directory (Qwen2ForCausalLM, vocab 151,936, Qwen2.5
    tokenizer)."""
    return _built(tmp_path_factory, "tiny-mxbai-rerank-base-v2")


@pytest.fixture(scope="session")
def tiny_modernbert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A gte-reranker-modernbert-base-shaped cross-encoder directory (ModernBertForSequenceClassification,
    one label, mean pooling; ModernBERT-style tokenizer over Qwen's BPE ranks, vocab 151,680)."""
    return _built(tmp_path_factory, "tiny-modernbert-reranker")
