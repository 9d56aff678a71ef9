"""`--long-passages chunk` through the stages, without Ray: tokenize a shard into windows, score
them, assemble and publish. A passage that fits scores exactly as in truncate mode (fp32, 1e-5),
for the encoder, LLM and layerwise kinds."""

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
from tests.helpers import MODELS, scoring_settings

STORAGE = Storage()
WORDS = ["ka", "lo", "mi", "ter", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre"]
MAX_LENGTH = 64


@pytest.fixture
def shard(tmp_path):
    """Two queries; passages that fit in 64 tokens beside them, long ones, and an empty one."""
    lengths = [3, 120, 8, 0, 12, 5, 300, 2]
    passages = [" ".join(WORDS[(i + k) % 12] for k in range(n)) or " " for i, n in enumerate(lengths)]
    table = pa.table(
        {
            "query_id": ["a"] * 4 + ["b"] * 4,
            "query": ["kalo sun"] * 4 + ["zo pe dre vel"] * 4,
            "doc_id": [f"d{i}" for i in range(8)],
            "passage": passages,
        }
    )
    path = tmp_path / "in" / "s.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return STORAGE.list_shards(str(path.parent))[0]


def score_shard(shard, model, score, columns):
    """(scores, tokenized rows) of the shard through TokenizeShard, `score` and the assembler."""
    blocks = list(
        TokenizeShard(model, columns, STORAGE, block_rows=7)({"shards": [[0]], "uris": [[shard.uri]]})
    )
    aggregate = columns.chunk_aggregate if columns.long_passages == "chunk" else None
    assembler = ShardAssembler({0: 8}, model.score_columns, aggregate)
    done = [s for block in blocks for s in assembler.add(score(block)).complete]
    assert done == [0]
    return assembler.take(0), pa.concat_tables(blocks)


KINDS = [
    ("tiny-bert", "encoder", None),
    ("tiny-gemma", "llm", None),
    ("tiny-minicpm-layerwise", "layerwise", [2, 4]),
]


@pytest.mark.parametrize(("name", "kind", "layers"), KINDS, ids=[k[1] for k in KINDS])
def test_fitting_passages_score_exactly_as_truncated(shard, name, kind, layers):
    model = ModelConfig(
        name_or_path=str(MODELS / name), kind=kind, max_length=MAX_LENGTH, cutoff_layers=layers
    )
    score = ScorePairs(model, STORAGE, scoring_settings(512, kind=kind))
    truncated, _ = score_shard(shard, model, score, InputConfig(uri="u"))
    chunk = InputConfig(uri="u", long_passages="chunk", chunk_overlap=8, max_chunks=3)
    chunked, windows = score_shard(shard, model, score, chunk)
    fits = chunked.chunks == 1
    assert chunked.chunks[3] == 0  # the rejected row: no window scored
    assert fits.tolist() == [True, False, True, False, True, True, False, True]
    np.testing.assert_allclose(chunked.scores[fits], truncated.scores[fits], rtol=0, atol=1e-5)
    assert chunked.rejected == truncated.rejected == {3: "empty passage"}
    assert chunked.chunks.tolist()[6] == 3 and chunked.windows_not_scored > 0  # --max-chunks 3
    assert chunked.windows_scored == len(windows) - 1  # every window but the rejected row's
    # the first window is the truncated pair, so `first` equals truncate mode for every passage
    first, _ = score_shard(shard, model, score, chunk.model_copy(update={"chunk_aggregate": "first"}))
    scored = ~np.isnan(truncated.scores[:, 0])
    np.testing.assert_allclose(first.scores[scored], truncated.scores[scored], rtol=0, atol=1e-5)
    assert (chunked.scores[[1, 6]] >= first.scores[[1, 6]] - 1e-6).all()  # max over windows


def test_chunk_output_columns_follow_the_scores(shard, tmp_path, tiny_bert):
    model = ModelConfig(name_or_path=tiny_bert, max_length=MAX_LENGTH)
    chunk = InputConfig(uri="u", long_passages="chunk", chunk_overlap=8, max_chunks=3)
    score = ScorePairs(model, STORAGE, scoring_settings(512))
    scored, _ = score_shard(shard, model, score, chunk)
    out = str(tmp_path / "out")
    stats = publish_shard(
        shard, scored, WriteSettings(STORAGE, out, chunk, RankingConfig(normalize=True, top_k=3), "dg")
    )
    table = STORAGE.read_table(checkpoint.shard_output_uri(out, shard.relpath))
    assert table.column_names == [
        "query_id",
        "query",
        "doc_id",
        "passage",
        "score",
        "rank",
        "score_norm",
        "chunks",
        "best_chunk_char",
    ]
    assert table.schema.field("chunks").type == pa.int16()
    assert table.schema.field("best_chunk_char").type == pa.int32()
    by_doc = {r["doc_id"]: r for r in table.to_pylist()}
    for doc, row in by_doc.items():
        i = int(doc[1:])
        assert row["chunks"] == scored.chunks[i] and row["best_chunk_char"] == scored.best_chunk_char[i]
        assert row["score"] == pytest.approx(float(scored.scores[i, 0]))
        if row["best_chunk_char"]:  # the best window starts at a word of the passage
            assert row["passage"][row["best_chunk_char"] - 1] == " "
    assert stats["windows_scored"] == scored.windows_scored and stats["windows_not_scored"] > 0
    assert (stats["rows_in"], stats["rows_rejected"], stats["rows_out"]) == (8, 1, 6)
    # an empty shard gets the same columns
    empty_path = tmp_path / "empty" / "e.parquet"
    empty_path.parent.mkdir()
    pq.write_table(STORAGE.read_table(shard.uri).slice(0, 0), empty_path)
    (empty,) = STORAGE.list_shards(str(empty_path.parent))
    publish_shard(empty, ShardScores.empty(0), WriteSettings(STORAGE, out, chunk, RankingConfig(), "dg"))
    published = STORAGE.read_table(checkpoint.shard_output_uri(out, empty.relpath))
    assert published.column_names[-2:] == ["chunks", "best_chunk_char"] and published.num_rows == 0
