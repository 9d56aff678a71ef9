"""Fixtures of the CUDA tier, self-contained: bench/gpu/check.sh runs this folder alone
(`pytest --confcutdir tests/gpu tests/gpu`) on a CUDA machine that has torch and transformers but
not the suite's S3 and Ray test tools, which tests/conftest.py imports. Its fixtures come from
tests/model_fixtures.py, as tests/conftest.py's do."""

from __future__ import annotations

import os

from tests.model_fixtures import decoder_goldens, goldens, tiny_bert, tiny_gemma, tiny_layerwise, tiny_xlmr

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["decoder_goldens", "goldens", "tiny_bert", "tiny_gemma", "tiny_layerwise", "tiny_xlmr"]
