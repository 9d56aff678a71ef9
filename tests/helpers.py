"""Helpers shared by test modules (tests import these, never each other). Fixtures live in the
conftest.py files; the processes they run in pipeline/demo/s3_endpoint.py (moto S3, shared with the
benchmarks) and tests/ray_cluster.py (a two-node Ray), which only conftest.py files import. Waiting
and free ports: pipeline/demo/processes.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import ModelConfig, ResolvedDevice, ResolvedKind
from pipeline.demo.words import syllable_word
from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.config import InputConfig, JobConfig, RankingConfig, ScoringConfig, load_config
from pipeline.rerank.input.split_queries import encode_hashes
from pipeline.rerank.output import paths
from pipeline.rerank.settings import ScoringSettings, resolve_settings
from pipeline.rerank.stages.shard_scores import ShardScores

ASSETS = Path(__file__).parent / "assets"
MODELS = ASSETS / "models"
STORAGE = Storage()


def scoring_settings(
    max_batch_tokens: int | str | None = None,
    *,
    device: ResolvedDevice = "cpu",
    dtype: str = "float32",
    kind: ResolvedKind = "encoder",
    **scoring: object,
) -> ScoringSettings:
    """Resolved scoring settings as the runner makes them, for a stage run on its own."""
    return resolve_settings(
        ScoringConfig.model_validate({"max_batch_tokens": max_batch_tokens, **scoring}),
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        kind=kind,
        cpus_per_node=2,
    )


# --- inputs ----------------------------------------------------------------------------------------


def publish_without_ray(
    input_dir, output, model: ModelConfig, columns: InputConfig, ranking: RankingConfig | None = None
) -> None:
    """Every shard through the stages in this process: what an uninterrupted run publishes."""
    from pipeline.models.kinds import with_family
    from pipeline.rerank.stages.score import ScorePairs
    from pipeline.rerank.stages.tokenize import TokenizeShard
    from pipeline.rerank.stages.write import WriteSettings, publish_shard
    from pipeline.rerank.stream.assembly import ShardAssembler

    model = with_family(model.name_or_path, model)
    tokenize = TokenizeShard(model, columns, STORAGE, block_rows=16)
    score = ScorePairs(model, STORAGE, scoring_settings(kind=model.kind))  # type: ignore[arg-type]
    settings = WriteSettings(STORAGE, str(output), columns, ranking or RankingConfig(), "reference")
    for shard in STORAGE.list_shards(str(input_dir)):
        rows = pq.read_metadata(shard.uri).num_rows
        chunked = columns.long_passages == "chunk"
        assembler = ShardAssembler({0: rows}, ["score"], columns.chunk_aggregate if chunked else None)
        for block in tokenize({"shards": [[0]], "uris": [[shard.uri]]}):
            assembler.add(score(block))
        publish_shard(shard, assembler.take(0), settings)


def pairs_table(n_queries: int, candidates: int, seed: int = 0, prefix: str = "q") -> pa.Table:
    """A long-format pairs table with an extra pass-through column; passages of varied length."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ter", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre"]

    def words(n: int) -> str:
        return " ".join(syllable_word(rng, syll, max_syllables=3) for _ in range(n))

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


def job(input_dir: Path | str, output_dir: Path | str, model_path: str, **sections: dict) -> JobConfig:
    """A job config for tests: INPUT, OUTPUT and model (max_length 128), plus any other sections."""
    return load_config(
        None,
        {
            "input": {"uri": str(input_dir)},
            "output": {"uri": str(output_dir)},
            "model": {"name_or_path": model_path, "max_length": 128, **sections.pop("model", {})},
            **sections,
        },
    )


# --- fine-tuning data: relevance is learnable ------------------------------------------------------


def vocabulary() -> list[str]:
    """Whole-word tokens of tiny-bert's vocabulary (also plain text for tiny-gemma)."""
    words = (MODELS / "tiny-bert" / "vocab.txt").read_text().split()
    return sorted({w for w in words if w.isalpha() and w.islower() and 3 <= len(w) <= 8})


def synthetic_records(n_queries: int, negatives: int, seed: int, vocab_size: int = 40) -> list[dict]:
    """FlagEmbedding JSONL records: {"query", "pos": [1], "neg": [negatives]}. Query words come from
    one part of the vocabulary, filler words from another: the positive holds the query's words
    among fillers, the negatives only fillers. Held-out queries are new combinations. Words are
    single tokens of the tiny test models' vocabularies."""
    rng = random.Random(seed)
    words = vocabulary()
    query_words, others = words[:vocab_size], words[vocab_size : 2 * vocab_size]
    records = []
    for _ in range(n_queries):
        query = rng.sample(query_words, 2)

        def filler(k: int, others: list[str] = others) -> list[str]:
            return rng.sample(others, k)

        pos = query + filler(3)
        rng.shuffle(pos)
        negs = [" ".join(filler(5)) for _ in range(negatives)]
        records.append({"query": " ".join(query), "pos": [" ".join(pos)], "neg": negs})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def records_to_shard(path: Path, records: list[dict], prefix: str = "q") -> Path:
    """The records as one long-format input shard (query_id, query, doc_id, passage, is_pos)."""
    rows: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "passage": [], "is_pos": []}
    for qi, r in enumerate(records):
        for di, (passage, is_pos) in enumerate(
            [(p, True) for p in r["pos"]] + [(n, False) for n in r["neg"]]
        ):
            rows["query_id"].append(f"{prefix}{qi}")
            rows["query"].append(r["query"])
            rows["doc_id"].append(f"{prefix}{qi}-d{di}")
            rows["passage"].append(passage)
            rows["is_pos"].append(is_pos)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)
    return path


def nest_pairs(
    table: pa.Table, query_columns: tuple[str, ...] = ("query_id", "query"), candidates: str = "candidates"
) -> pa.Table:
    """A long-format pairs table as the nested layout: one row per query id (in order of first
    appearance), its `query_columns` once, every other column a field of its candidates' structs."""
    fields = [c for c in table.column_names if c not in query_columns]
    rows = table.to_pylist()
    queries: dict[object, dict] = {}
    for row in rows:
        q = queries.setdefault(row[query_columns[0]], {c: row[c] for c in query_columns} | {candidates: []})
        q[candidates].append({f: row[f] for f in fields})
    struct = pa.struct([table.schema.field(f) for f in fields])
    out = {c: pa.array([q[c] for q in queries.values()], table.schema.field(c).type) for c in query_columns}
    out[candidates] = pa.array([q[candidates] for q in queries.values()], pa.list_(struct))
    return pa.table(out)


def unnest_output(table: pa.Table, candidates: str = "candidates") -> pa.Table:
    """A nested output as long rows (query-level columns, then the structs' fields), in list order."""
    query_columns = [c for c in table.column_names if c != candidates]
    lists = table.column(candidates).combine_chunks()
    values = lists.flatten()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    flat = table.select(query_columns).take(pa.array(np.repeat(np.arange(table.num_rows), lengths)))
    for i in range(values.type.num_fields):
        flat = flat.append_column(values.type.field(i).name, pc.struct_field(values, [i]))
    return flat


# --- outputs ---------------------------------------------------------------------------------------


def done_markers(markers_dir: Path) -> list[Path]:
    """Published done-markers under OUTPUT/_rerank/done: not the `.tmp-*.json` files of a marker
    being written (an atomic write's temp file also ends in .json)."""
    if not markers_dir.exists():
        return []
    return [p for p in markers_dir.rglob("*.json") if not p.name.startswith(".tmp-")]


def read_output(output: Path | str, storage: Storage = STORAGE) -> dict[str, pa.Table]:
    return {s.relpath: storage.read_table(s.uri) for s in storage.list_shards(str(output))}


def assert_output_invariants(
    input_dir: Path | str, output_dir: Path | str, top_k: int | None = None, storage: Storage = STORAGE
) -> None:
    """Every input row once per shard (or its top-k), grouped by query, best first, ranked 1..n."""
    inputs = read_output(input_dir, storage)
    outputs = read_output(output_dir, storage)
    assert set(outputs) == set(inputs)
    for rel, table in inputs.items():
        out = outputs[rel]
        assert out.column_names == table.column_names + ["score", "rank"]
        assert out.schema.field("score").type == pa.float32()
        assert out.schema.field("rank").type == pa.int32()
        key = lambda t: sorted(zip(t.column("doc_id").to_pylist(), t.column("extra").to_pylist()))
        if top_k is None:
            assert key(out.select(table.column_names)) == key(table)
        qids = out.column("query_id").to_pylist()
        first_seen = list(dict.fromkeys(table.column("query_id").to_pylist()))
        assert list(dict.fromkeys(qids)) == first_seen  # grouped, in order of first appearance
        scores, ranks = out.column("score").to_numpy(), out.column("rank").to_pylist()
        for q in first_seen:
            idx = [i for i, x in enumerate(qids) if x == q]
            assert idx == list(range(idx[0], idx[-1] + 1))  # contiguous group
            assert ranks[idx[0] : idx[-1] + 1] == list(range(1, len(idx) + 1))
            assert np.all(np.diff(scores[idx]) <= 0)
            if top_k is not None:
                assert len(idx) == min(top_k, table.column("query_id").to_pylist().count(q))


def tables_equal(a: dict[str, pa.Table], b: dict[str, pa.Table]) -> None:
    assert set(a) == set(b)
    for rel in a:
        x, y = a[rel], b[rel]
        assert x.column_names == y.column_names
        for name in x.column_names:
            if name.startswith("score"):  # score, score_norm, score_l<k>
                # identical up to fp32 rounding of different micro-batch compositions
                np.testing.assert_allclose(x.column(name).to_numpy(), y.column(name).to_numpy(), atol=1e-5)
            else:
                assert x.column(name).to_pylist() == y.column(name).to_pylist(), (rel, name)


def assert_reconciled(input_dir: Path, output: Path) -> dict:
    """_SUCCESS matches the files: per shard rows_in = rows_out + rows_rejected + dropped by top-k."""
    manifest = STORAGE.read_json(join(str(output), paths.SUCCESS))
    assert manifest["totals"]["reconciled"] is True
    for entry in manifest["shards"]:
        rel = entry["path"]
        rows_in = pq.read_metadata(input_dir / rel).num_rows
        rows_out = pq.read_metadata(output / rel).num_rows
        rejected = output / "_rejected" / rel
        rows_rejected = pq.read_metadata(rejected).num_rows if rejected.exists() else 0
        assert (entry["rows_in"], entry["rows_out"], entry["rows_rejected"]) == (
            rows_in,
            rows_out,
            rows_rejected,
        )
        assert rows_in == rows_out + rows_rejected + entry["rows_dropped_top_k"]
    t = manifest["totals"]
    assert t["rows_in"] == t["rows_out"] + t["rows_rejected"] + t["rows_dropped_top_k"]
    return manifest


def write_inputs(tmp_path: Path, n: int) -> list[ShardFile]:
    """`n` input shards of 2 queries x 3 candidates under tmp_path/in (the publish tests' input)."""
    (tmp_path / "in").mkdir()
    for i in range(n):
        pq.write_table(pairs_table(2, 3, seed=i, prefix=f"s{i}q"), tmp_path / "in" / f"part-{i}.parquet")
    return Storage().list_shards(str(tmp_path / "in"))


def batch_of(shards: list[ShardFile]) -> list[tuple[ShardFile, ShardScores, str]]:
    """A writer's batch: each shard of `write_inputs` scored 0..5 in row order."""
    out = []
    for s in shards:
        scored = ShardScores.empty(6)
        scored.scores[:, 0] = np.arange(6, dtype=np.float32)
        out.append((s, scored, encode_hashes(np.zeros(2, np.uint64))))
    return out
