"""The committed tiny models and FlagEmbedding goldens as session fixtures, with no test tool
imported (no s3fs, moto or Ray): tests/conftest.py and tests/gpu/conftest.py (which
bench/gpu/check.sh runs alone on a CUDA machine without them) both take them from here."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ASSETS, MODELS


@pytest.fixture(scope="session")
def tiny_bert() -> str:
    return str(MODELS / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_xlmr() -> str:
    return str(MODELS / "tiny-xlmr")


@pytest.fixture(scope="session")
def tiny_gemma() -> str:
    return str(MODELS / "tiny-gemma")


@pytest.fixture(scope="session")
def tiny_layerwise() -> str:
    return str(MODELS / "tiny-minicpm-layerwise")


@pytest.fixture(scope="session")
def goldens() -> dict:
    return json.loads((ASSETS / "goldens" / "encoder.json").read_text())


@pytest.fixture(scope="session")
def decoder_goldens() -> dict:
    return json.loads((ASSETS / "goldens" / "decoder.json").read_text())
