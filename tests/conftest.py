"""Fixtures shared by every test tier: the committed tiny models and inline shard builders."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests talk only to a local moto S3 server: fake credentials, never a user's real ones. Set before
# Ray starts, so its workers inherit them.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)
# Models fetched from object storage land in a cache private to this test session.
os.environ["RERANK_CACHE_DIR"] = tempfile.mkdtemp(prefix="rerank-model-cache-")

ASSETS = Path(__file__).parent / "assets"


def done_markers(markers_dir: Path) -> list[Path]:
    """Published done-markers under OUTPUT/_rerank/done: not the `.tmp-*.json` files of a marker
    being written (an atomic write's temp file also ends in .json)."""
    if not markers_dir.exists():
        return []
    return [p for p in markers_dir.rglob("*.json") if not p.name.startswith(".tmp-")]


MODELS = ASSETS / "models"


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
def decoder_goldens() -> dict:
    return json.loads((ASSETS / "goldens" / "decoder.json").read_text())


@pytest.fixture(scope="session")
def goldens() -> dict:
    return json.loads((ASSETS / "goldens" / "encoder.json").read_text())


def pairs_table(n_queries: int, candidates: int, seed: int = 0, prefix: str = "q") -> pa.Table:
    """A long-format pairs table with an extra pass-through column; passages of varied length."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ter", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre"]

    def words(n: int) -> str:
        return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(n))

    rows: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "passage": [], "extra": []}
    for q in range(n_queries):
        query = words(rng.randint(2, 8))
        for c in range(candidates):
            rows["query_id"].append(f"{prefix}{q}")
            rows["query"].append(query)
            rows["doc_id"].append(f"{prefix}{q}-d{c}")
            rows["passage"].append(words(int(rng.lognormvariate(2.5, 1.0)) + 1))
            rows["extra"].append(rng.randint(0, 1000))
    return pa.table(rows)


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
