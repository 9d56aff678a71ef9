"""Fixtures shared by every test tier: the committed tiny models, inline shard builders and the
session's moto S3 server. Plain helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.demo.s3_endpoint import FlakyProxy, MotoServer
from tests.family_fixtures import tiny_modernbert, tiny_mxbai_v2, tiny_qwen3_reranker

# MODELS is also imported from here by a few unit tests; new code imports it from tests.helpers.
from tests.helpers import MODELS, pairs_table
from tests.model_fixtures import decoder_goldens, goldens, tiny_bert, tiny_gemma, tiny_layerwise, tiny_xlmr

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests talk only to a local moto S3 server: fake credentials, never a user's real ones. Set before
# Ray starts, so its workers inherit them.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)
# The suite scores in fp32 on every CPU (`--dtype auto` is bf16 where the OS lists AMX or
# AVX512-BF16): parity stays fp32; the tests of auto set their own flags. Set before Ray starts.
os.environ["RERANK_CPU_FLAGS"] = ""
# Models fetched from object storage land in a cache private to this test session.
os.environ["RERANK_CACHE_DIR"] = tempfile.mkdtemp(prefix="rerank-model-cache-")

__all__ = [
    "MODELS",
    "decoder_goldens",
    "goldens",
    "tiny_bert",
    "tiny_gemma",
    "tiny_layerwise",
    "tiny_modernbert",
    "tiny_mxbai_v2",
    "tiny_qwen3_reranker",
    "tiny_xlmr",
]


@pytest.fixture
def write_shards(tmp_path: Path) -> Callable[..., Path]:
    """Writes `n_shards` shards of pairs under `root` (default tmp_path/input; nested dirs)."""

    def write(
        n_shards: int = 3,
        n_queries: int = 4,
        candidates: int = 5,
        row_group_size: int = 7,
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "input"
        for s in range(n_shards):
            path = root / f"day={s % 2}" / f"part-{s}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pairs_table(n_queries, candidates, seed=s, prefix=f"s{s}q")
            pq.write_table(table, path, row_group_size=row_group_size)
        return root

    return write


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """The session's one S3 endpoint: `moto_server` in its own process on 127.0.0.1."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3(moto_server: MotoServer) -> tuple[s3fs.S3FileSystem, str]:
    """An empty S3 (every bucket of earlier tests dropped): (filesystem, endpoint URL)."""
    moto_server.reset()
    fs = s3fs.S3FileSystem(endpoint_url=moto_server.endpoint, key="testing", secret="testing")
    fs.invalidate_cache()
    return fs, moto_server.endpoint


@pytest.fixture
def flaky_s3(s3: tuple[s3fs.S3FileSystem, str]) -> Iterator[FlakyProxy]:
    """A proxy in front of the `s3` endpoint that answers every 3rd request with 503 SlowDown."""
    proxy = FlakyProxy(s3[1], every=3)
    yield proxy
    proxy.stop()
