"""The stages run without Ray: tokenize a shard, score it, publish it."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import checkpoint
from pipeline.config import InputConfig, ModelConfig, RankingConfig
from pipeline.io import Storage
from pipeline.publish import publish_shard
from pipeline.runner import ShardAssembler
from pipeline.stages import ScorePairs, TokenizeShard

STORAGE = Storage()


@pytest.fixture
def shard(write_shards):
    root = write_shards(n_shards=1, n_queries=3, candidates=4, row_group_size=5)
    return STORAGE.list_shards(str(root))[0]


def test_tokenize_then_score_every_row(shard, tiny_bert):
    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    tokenize = TokenizeShard(model, InputConfig(uri="unused"), STORAGE)
    blocks = list(tokenize({"shard": np.array([7]), "uri": np.array([shard.uri])}))
    assert len(blocks) == 3  # one per row group (12 rows, groups of 5)
    for b in blocks:
        lengths = [len(x) for x in b.column("input_ids").to_pylist()]
        assert lengths == sorted(lengths, reverse=True)  # longest first
    tokenized = pa.concat_tables(blocks)
    assert sorted(tokenized.column("row").to_pylist()) == list(range(12))
    assert set(tokenized.column("shard").to_pylist()) == {7}
    scored = ScorePairs(model, STORAGE, "cpu", "float32", 256)(tokenized)
    assert scored.num_rows == 12
    assert not np.isnan(scored.column("score").to_numpy()).any()
    assert (scored.column("padded_tokens").to_numpy() >= scored.column("tokens").to_numpy()).all()
    assert set(scored.column("actor").to_pylist()) == {os.getpid()}  # where it ran, for the report
    assert scored.column("node").null_count == 0


def test_unreadable_shard_yields_an_error_row(tmp_path, tiny_bert):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    tokenize = TokenizeShard(ModelConfig(name_or_path=tiny_bert), InputConfig(uri="unused"), STORAGE)
    (block,) = tokenize({"shard": np.array([1]), "uri": np.array([str(bad)])})
    assert block.column("row").to_pylist() == [-1]
    assert "Parquet" in block.column("error")[0].as_py() or "parquet" in block.column("error")[0].as_py()
    scored = ScorePairs(ModelConfig(name_or_path=tiny_bert), STORAGE, "cpu", "float32", 4096)(block)
    assert scored.column("error").null_count == 0


def test_null_passage_fails_the_shard_with_the_row(tmp_path, tiny_bert):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"query": ["a", "b"], "passage": ["x", None]}), path)
    tokenize = TokenizeShard(ModelConfig(name_or_path=tiny_bert), InputConfig(uri="unused"), STORAGE)
    (block,) = tokenize({"shard": np.array([0]), "uri": np.array([str(path)])})
    assert "row 1" in block.column("error")[0].as_py()


def test_publish_writes_ranked_shard_then_marker(shard, tmp_path):
    table = STORAGE.read_table(shard.uri)
    scores = np.linspace(-1, 1, table.num_rows).astype(np.float32)
    out = str(tmp_path / "out")
    marker = publish_shard(
        STORAGE, out, shard, scores, 100, 120, InputConfig(uri="x"), RankingConfig(top_k=2), "dg"
    )
    published = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    assert published.num_rows == 3 * 2  # top-2 of each of 3 queries
    assert marker == STORAGE.read_json(checkpoint.marker_uri(out, shard.relpath))
    assert (marker["rows_in"], marker["rows_out"], marker["digest"]) == (12, 6, "dg")
    with pytest.raises(RuntimeError, match="12 rows but 3 were scored"):
        publish_shard(STORAGE, out, shard, scores[:3], 0, 0, InputConfig(uri="x"), RankingConfig(), "dg")


def _scores(shard, rows, error=None):
    n = len(rows)
    return pa.table(
        {
            "shard": pa.array([shard] * n, pa.int32()),
            "row": pa.array(rows, pa.int64()),
            "score": pa.array(np.asarray(rows, np.float32)),
            "tokens": pa.array([3] * n, pa.int32()),
            "padded_tokens": pa.array([4] * n, pa.int32()),
            "error": pa.array([error] * n, pa.string()),
        }
    )


def test_assembler_counts_each_row_once_and_isolates_failures():
    a = ShardAssembler({0: 3, 1: 2})
    assert a.add(_scores(0, [0, 1]))[0] == []
    complete, pairs, tokens, padded = a.add(_scores(0, [1, 2]))  # row 1 delivered twice
    assert complete == [0] and pairs == 1 and tokens == 3 and padded == 4
    scores, tokens, padded = a.take(0)
    assert scores.tolist() == [0.0, 1.0, 2.0] and tokens == 9 and padded == 12
    a.add(_scores(1, [0]))
    a.add(_scores(1, [-1], error="OSError: boom"))
    assert a.failed == {1: "OSError: boom"}
    assert a.incomplete() == {}
