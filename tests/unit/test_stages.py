"""The stages run without Ray: tokenize a shard, score it, publish it."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.output import checkpoint
from pipeline.rerank.stages.score import ScorePairs
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.tokenize import TokenizeShard
from pipeline.rerank.stages.write import WriteSettings, publish_shard
from pipeline.rerank.stream.assembly import ShardAssembler
from tests.helpers import scoring_settings

STORAGE = Storage()


@pytest.fixture
def shard(write_shards):
    root = write_shards(n_shards=1, n_queries=3, candidates=4, row_group_size=5)
    return STORAGE.list_shards(str(root))[0]


def test_tokenize_then_score_every_row(shard, tiny_bert):
    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    tokenize = TokenizeShard(model, InputConfig(uri="unused"), STORAGE, block_rows=5)
    assert [t.num_rows for t in tokenize.tokenize(7, shard.uri)] == [5, 5, 2]  # one per row group
    blocks = list(tokenize({"shards": [[7]], "uris": [[shard.uri]]}))
    assert [b.num_rows for b in blocks] == [5, 5, 2]  # blocks of block_rows rows
    for b in blocks:
        lengths = [len(x) for x in b.column("input_ids").to_pylist()]
        assert lengths == sorted(lengths, reverse=True)  # longest first
    tokenized = pa.concat_tables(blocks)
    assert sorted(tokenized.column("row").to_pylist()) == list(range(12))
    assert set(tokenized.column("shard").to_pylist()) == {7}
    scored = ScorePairs(model, STORAGE, scoring_settings(256, device="cpu", dtype="float32"))(tokenized)
    assert scored.num_rows == 12
    assert not np.isnan(scored.column("score").to_numpy()).any()
    assert (scored.column("padded_tokens").to_numpy() >= scored.column("tokens").to_numpy()).all()
    assert set(scored.column("actor").to_pylist()) == {os.getpid()}  # where it ran, for the report
    assert scored.column("node").null_count == 0


def test_unreadable_shard_yields_an_error_row(tmp_path, tiny_bert):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    tokenize = TokenizeShard(ModelConfig(name_or_path=tiny_bert), InputConfig(uri="unused"), STORAGE)
    (block,) = tokenize({"shards": [[1]], "uris": [[str(bad)]]})
    assert block.column("row").to_pylist() == [-1]
    assert "Parquet" in block.column("error")[0].as_py() or "parquet" in block.column("error")[0].as_py()
    scored = ScorePairs(
        ModelConfig(name_or_path=tiny_bert), STORAGE, scoring_settings(4096, device="cpu", dtype="float32")
    )(block)
    assert scored.column("error").null_count == 0


def test_null_and_empty_rows_are_quarantined_not_scored(tmp_path, tiny_bert):
    path = tmp_path / "in" / "mixed.parquet"
    path.parent.mkdir()
    table = pa.table(
        {
            "query_id": ["a", "a", "b", "b", "c"],
            "query": ["kalo sun", "kalo sun", "   ", "zo pe", None],
            "doc_id": ["1", "2", "3", "4", "5"],
            "passage": ["ra vel on", None, "mi ter", "", "text"],
        }
    )
    pq.write_table(table, path)
    (shard,) = STORAGE.list_shards(str(tmp_path / "in"))
    model = ModelConfig(name_or_path=tiny_bert)
    (block,) = TokenizeShard(model, InputConfig(uri="unused"), STORAGE)(
        {"shards": [[0]], "uris": [[shard.uri]]}
    )
    scored = ScorePairs(model, STORAGE, scoring_settings(512, device="cpu", dtype="float32"))(block)
    assembler = ShardAssembler({0: 5})
    assert assembler.add(scored).complete == [0]
    result = assembler.take(0)
    assert result.rejected == {1: "null passage", 2: "empty query", 3: "empty passage", 4: "null query"}
    out = str(tmp_path / "out")
    marker = publish_shard(
        shard, result, WriteSettings(STORAGE, out, InputConfig(uri="x"), RankingConfig(), "dg")
    )
    assert (marker["rows_in"], marker["rows_out"], marker["rows_rejected"]) == (5, 1, 4)
    assert STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath)).column(
        "doc_id"
    ).to_pylist() == ["1"]
    quarantine = STORAGE.read_table(checkpoint.rejected_uri(out, shard.relpath))
    assert quarantine.column("doc_id").to_pylist() == ["2", "3", "4", "5"]
    assert quarantine.column("reject_reason").to_pylist() == [
        "null passage",
        "empty query",
        "empty passage",
        "null query",
    ]


def test_publish_writes_ranked_shard_then_marker(shard, tmp_path):
    table = STORAGE.read_table(shard.uri)
    scored = ShardScores.empty(table.num_rows)
    scored.scores[:, 0] = np.linspace(-1, 1, table.num_rows)
    scored.tokens, scored.padded_tokens = 100, 120
    out = str(tmp_path / "out")
    stats = publish_shard(
        shard, scored, WriteSettings(STORAGE, out, InputConfig(uri="x"), RankingConfig(top_k=2), "dg")
    )
    published = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    assert published.num_rows == 3 * 2  # top-2 of each of 3 queries
    assert STORAGE.read_json(checkpoint.marker_uri(out, shard.relpath)) is None  # publish_shards writes it
    assert (stats["rows_in"], stats["rows_out"], stats["rows_dropped_top_k"]) == (12, 6, 6)
    assert stats["rows_rejected"] == 0
    assert not STORAGE.list_files(str(tmp_path / "out" / "_rejected"))
    with pytest.raises(RuntimeError, match="12 rows but 3 were scored"):
        publish_shard(
            shard,
            ShardScores.empty(3),
            WriteSettings(STORAGE, out, InputConfig(uri="x"), RankingConfig(), "dg"),
        )


def _scores(shard, rows, error=None, reject=None):
    n = len(rows)
    return pa.table(
        {
            "shard": pa.array([shard] * n, pa.int32()),
            "row": pa.array(rows, pa.int64()),
            "score": pa.array(np.asarray(rows, np.float32)),
            "tokens": pa.array([3] * n, pa.int32()),
            "padded_tokens": pa.array([4] * n, pa.int32()),
            "error": pa.array([error] * n, pa.string()),
            "reject": pa.array([reject] * n, pa.string()),
        }
    )


def test_assembler_counts_each_row_once_and_isolates_failures():
    a = ShardAssembler({0: 3, 1: 2, 2: 1})
    assert a.add(_scores(0, [0, 1])).complete == []
    added = a.add(_scores(0, [1, 2]))  # row 1 delivered twice
    assert added.complete == [0] and added.pairs == 1 and added.tokens == 3 and added.padded_tokens == 4
    result = a.take(0)
    assert (
        result.scores[:, 0].tolist() == [0.0, 1.0, 2.0] and result.tokens == 9 and result.padded_tokens == 12
    )
    a.add(_scores(1, [0]))
    a.add(_scores(1, [-1], error="OSError: boom"))
    assert a.failed == {1: "OSError: boom"}
    added = a.add(_scores(2, [0], reject="empty passage"))
    assert added.complete == [2] and added.pairs == 0  # a quarantined row arrives, unscored
    assert a.take(2).rejected == {0: "empty passage"}
    assert a.incomplete() == {}


def test_small_shards_share_a_tokenize_call_and_blocks_of_block_rows(write_shards, tiny_bert):
    root = write_shards(n_shards=3, n_queries=2, candidates=3, row_group_size=4)  # 6 rows each
    shards = STORAGE.list_shards(str(root))
    tokenize = TokenizeShard(
        ModelConfig(name_or_path=tiny_bert, max_length=64), InputConfig(uri="u"), STORAGE, 4
    )
    blocks = list(tokenize({"shards": [[0, 1, 2]], "uris": [[s.uri for s in shards]]}))
    assert [b.num_rows for b in blocks] == [4, 4, 4, 4, 2]
    rows = pa.concat_tables(blocks).select(["shard", "row"]).to_pylist()
    assert sorted((r["shard"], r["row"]) for r in rows) == [(s, r) for s in range(3) for r in range(6)]


def test_null_query_ids_are_quarantined_not_ranked_as_one_query(tmp_path, tiny_bert):
    path = tmp_path / "s.parquet"
    table = pa.table(
        {
            "query_id": ["a", None, None],
            "query": ["x y", "first query", "another query"],
            "doc_id": ["1", "2", "3"],
            "passage": ["p p", "q q", "r r"],
        }
    )
    pq.write_table(table, path)
    tokenize = TokenizeShard(
        ModelConfig(name_or_path=tiny_bert, max_length=64), InputConfig(uri="u"), STORAGE
    )
    (block,) = tokenize.tokenize(0, str(path))
    assert block.column("reject").to_pylist() == [None, "null query_id", "null query_id"]
