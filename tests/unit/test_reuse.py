"""Score reuse across runs (`--reuse PREV_OUTPUT`), piece by piece and without Ray: the pair key,
the scoring identity, the score store and its reader, which sources a run takes, the lookup's
stages (keys of a shard, stores read, one stored score per row), the tokenize, score and assembly
stages with reused rows, `{previous_date}` and the repeatable flag. The whole run with Ray is
tests/integration/test_reuse.py."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import rerank_nightly
from jobs.cli import build_parser
from jobs.flags import flag_overrides
from jobs.rerank import overrides_from_args
from jobs.rerank_nightly import dated_config, with_date
from pipeline.config import ModelConfig, deep_merge
from pipeline.io import Storage, join
from pipeline.models.windows import WINDOW_FIELDS
from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS, InputConfig, load_config
from pipeline.rerank.input.cascade import NOT_SCORED
from pipeline.rerank.output.paths import SCORES, SUCCESS
from pipeline.rerank.reuse.identity import STORE_FORMAT, identity_change, identity_digest, store_identity
from pipeline.rerank.reuse.keys import KEY_HI, KEY_LO, pair_key, pair_keys
from pipeline.rerank.reuse.lookup import (
    REUSED,
    SOURCE,
    ReadStores,
    ShardKeys,
    lookup_notes,
    read_reused,
    reused_schema,
    reused_uri,
    store_items,
    write_reused,
)
from pipeline.rerank.reuse.sources import read_success, source_problem, usable_sources
from pipeline.rerank.reuse.store import (
    FORMAT_KEY,
    StoreIdentity,
    UnusableStore,
    first_per_key,
    read_store,
    store_schema,
    store_table,
    store_uri,
    with_identity,
    write_store,
)
from pipeline.rerank.stages.score import ScorePairs, scored_schema
from pipeline.rerank.stages.tokenize import TokenizeShard
from pipeline.rerank.stream.assembly import ShardAssembler
from tests.helpers import pairs_table, scoring_settings

ROOT = Path(__file__).resolve().parents[2]
STORAGE = Storage()
MODEL_ID = {"config": "c0", "weights": "w0"}  # a local model's identity (pipeline/models/identity.py)


def bits(values) -> list[int]:
    """float32 values as their bit patterns: equal only if bit-identical (-0.0 and NaNs included)."""
    return np.asarray(values, np.float32).view(np.uint32).tolist()


# --- the key -----------------------------------------------------------------------------------------

QUERIES = ["what is kalo", "Café NAÏVE", "mi", "zo pe dre " * 30, "emoji 🙂", "a\tb\nc"]
PASSAGES = ["kalo is a sunra of the velon.", "Ünïcödé — 🙂", "a short one", "ra vel " * 200, "x", "y"]

KEY_SCRIPT = """
import json, sys
from pipeline.rerank.reuse.keys import pair_keys
queries, passages = json.loads(sys.argv[1]), json.loads(sys.argv[2])
hi, lo = pair_keys(queries, passages)
print(json.dumps([hi.tolist(), lo.tolist()]))
"""


def test_the_same_text_gives_the_same_key_in_another_process():
    hi, lo = pair_keys(QUERIES, PASSAGES)
    for seed in ("0", "12345"):  # no salted hash(): the key does not depend on the process
        run = subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT, json.dumps(QUERIES), json.dumps(PASSAGES)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.splitlines()[-1]) == [hi.tolist(), lo.tolist()]


def test_the_key_is_pinned_and_pair_keys_agrees_with_pair_key():
    # a store written by an earlier version must keep matching: the key's recipe is fixed
    hi, lo = pair_keys(["what is kalo"], ["kalo is a sunra of the velon."])
    assert (int(hi[0]), int(lo[0])) == (0x377E03DF2906BF48, 0x613B15A2C43104EA)
    assert hi.dtype == lo.dtype == np.uint64
    hi, lo = pair_keys(QUERIES, PASSAGES)
    for q, p, h, low in zip(QUERIES, PASSAGES, hi.tolist(), lo.tolist()):
        key = pair_key(q, p)
        assert len(key) == 16
        assert (int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big")) == (h, low)
    empty_hi, empty_lo = pair_keys([], [])
    assert empty_hi.dtype == np.uint64 and len(empty_hi) == len(empty_lo) == 0


@pytest.mark.parametrize(
    ("query", "passage"),
    [
        ("what is kalo?", "kalo is a sunra of the velon."),  # one character added to the query
        ("what is kalo", "kalo is a sunra of the velon!"),  # one character changed in the passage
        ("what is kalo", "kalo is a sunra of the velon"),  # one character removed
        ("What is kalo", "kalo is a sunra of the velon."),  # case
        ("what is kalo ", "kalo is a sunra of the velon."),  # a trailing space
        (" what is kalo", "kalo is a sunra of the velon."),  # a leading space
        ("what is  kalo", "kalo is a sunra of the velon."),  # a double space
        ("what\tis kalo", "kalo is a sunra of the velon."),  # another whitespace
        ("what is kalo", "kalo is a sunra of the velon. "),
        ("what is kal", "okalo is a sunra of the velon."),  # a character moved to the passage
        ("what is kalok", "alo is a sunra of the velon."),  # a character moved to the query
        ("kalo is a sunra of the velon.", "what is kalo"),  # query and passage swapped
        ("what is kalo", ""),
        ("", "what is kalokalo is a sunra of the velon."),
        ("what is kalo", "kalo is a sunra of the ve\u0301lon."),  # another Unicode form
    ],
)
def test_any_change_of_the_text_gives_another_key(query, passage):
    base = pair_key("what is kalo", "kalo is a sunra of the velon.")
    assert pair_key(query, passage) != base


def test_moving_the_boundary_between_query_and_passage_gives_another_key():
    splits = [("abc"[:i], "abc"[i:]) for i in range(4)]
    assert len({pair_key(q, p) for q, p in splits}) == 4


def test_ids_and_other_columns_do_not_change_the_keys(tmp_path):
    texts = pairs_table(3, 4, seed=1)
    renamed = texts.set_column(0, "query_id", pa.array([f"other-{q}" for q in texts["query_id"].to_pylist()]))
    renamed = renamed.set_column(2, "doc_id", pa.array([f"d{i}" for i in range(renamed.num_rows)]))
    renamed = renamed.set_column(4, "extra", pa.array(range(renamed.num_rows)))
    pq.write_table(texts, tmp_path / "a.parquet")
    pq.write_table(renamed, tmp_path / "b.parquet")
    keys = ShardKeys(InputConfig(uri="u"), STORAGE)
    a = pa.concat_tables(keys.keys(0, str(tmp_path / "a.parquet")))
    b = pa.concat_tables(keys.keys(0, str(tmp_path / "b.parquet")))
    assert a.select([KEY_HI, KEY_LO]).equals(b.select([KEY_HI, KEY_LO]))


# --- the scoring identity ------------------------------------------------------------------------------


def identity_of(
    name: str = "/models/m",
    model_identity: dict | None = MODEL_ID,
    dtype: str = "float32",
    **sections: dict,
) -> dict:
    """The scoring identity of an encoder run with max_length 512, with `sections` merged in."""
    base = {
        "input": {"uri": "in"},
        "output": {"uri": "out"},
        "model": {"name_or_path": name, "kind": "encoder", "max_length": 512},
    }
    return store_identity(load_config(None, deep_merge(base, sections)), dtype, model_identity)


CHUNK = {"input": {"long_passages": "chunk"}}
LLM = {"model": {"kind": "llm"}}
LAYERWISE = {"model": {"kind": "layerwise", "cutoff_layers": [2]}}
REVISION = {"name": "org/reranker", "model_identity": {"revision": "r1"}}

CHANGES = [  # (what, the earlier run, this run, the field named)
    ("weights", {}, {"model_identity": {"config": "c0", "weights": "w1"}}, "model"),
    ("config or tokenizer", {}, {"model_identity": {"config": "c1", "weights": "w0"}}, "model"),
    ("hub id", REVISION, {**REVISION, "name": "org/other"}, "model"),
    ("hub revision", REVISION, {**REVISION, "model_identity": {"revision": "r2"}}, "model"),
    ("kind", {}, LLM, "kind"),
    ("max_length", {}, {"model": {"max_length": 256}}, "max_length"),
    ("query_max_length", {}, {"model": {"query_max_length": 100}}, "query_max_length"),
    ("dtype float16", {}, {"dtype": "float16"}, "dtype"),
    ("dtype bfloat16", {"dtype": "float16"}, {"dtype": "bfloat16"}, "dtype"),
    ("long passages", {}, CHUNK, "long_passages"),
    ("chunk overlap", CHUNK, {"input": {"long_passages": "chunk", "chunk_overlap": 16}}, "chunks"),
    ("max chunks", CHUNK, {"input": {"long_passages": "chunk", "max_chunks": 3}}, "chunks"),
    ("chunk aggregate", CHUNK, {"input": {"long_passages": "chunk", "chunk_aggregate": "mean"}}, "chunks"),
    ("llm prompt", LLM, {"model": {"kind": "llm", "prompt": "Is B relevant to A?"}}, "prompt"),
    ("layerwise prompt", LAYERWISE, deep_merge(LAYERWISE, {"model": {"prompt": "P"}}), "prompt"),
    ("cutoff layer", LAYERWISE, {"model": {"kind": "layerwise", "cutoff_layers": [4]}}, "cutoff_layers"),
    ("more layers", LAYERWISE, {"model": {"kind": "layerwise", "cutoff_layers": [2, 4]}}, "score_columns"),
]


@pytest.mark.parametrize(("before", "now", "field"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_any_change_of_what_scores_gives_another_digest_and_is_named(before, now, field):
    theirs, ours = identity_of(**before), identity_of(**now)
    assert identity_digest(theirs) != identity_digest(ours)
    change = identity_change(theirs, ours)
    assert re.search(rf"(^|, ){field} .+ \(this run: .+\)", change), change
    assert identity_change(ours, ours) == ""


UNCHANGED = [  # what does not change a score: its stores stay usable
    ("the model at another path", {"name": "/elsewhere/m"}),
    ("query_max_length given as its default", {"model": {"query_max_length": 384}}),
    ("top-k and normalize", {"ranking": {"top_k": 3, "normalize": True}}),
    ("attention and compile", {"model": {"attention": "unpadded", "compile": "off"}}),
    ("device", {"model": {"device": "cpu"}}),
    ("column names", {"input": {"query_id_column": "qid", "doc_id_column": "did"}}),
    ("the scoring pool", {"scoring": {"max_batch_tokens": 8192, "rows_per_call": 64}}),
]


@pytest.mark.parametrize("change", [c[1] for c in UNCHANGED], ids=[c[0] for c in UNCHANGED])
def test_what_does_not_change_a_score_keeps_the_digest(change):
    assert identity_digest(identity_of(**change)) == identity_digest(identity_of())


def test_identity_change_names_the_field_and_both_values():
    theirs = identity_of(model={"max_length": 512, "query_max_length": 64})
    ours = identity_of(model={"max_length": 256, "query_max_length": 64})
    assert identity_change(theirs, ours) == "max_length 512 (this run: 256)"
    both = identity_change(identity_of(), identity_of(model={"max_length": 256}))
    assert both == "max_length 512 (this run: 256), query_max_length 384 (this run: 192)"
    assert (
        identity_change(identity_of(dtype="float16"), identity_of())
        == 'dtype "float16" (this run: "float32")'
    )
    llm = identity_change(identity_of(**LLM), identity_of())
    assert 'kind "llm" (this run: "encoder")' in llm
    assert "prompt" in llm and "(this run: unset)" in llm  # a field only the earlier run has
    assert identity_of()["format"] == STORE_FORMAT
    assert identity_digest(identity_of()) == identity_digest(dict(reversed(identity_of().items())))


# --- the store -----------------------------------------------------------------------------------------

STORE_ID = StoreIdentity(identity_of(), identity_digest(identity_of()))
ODD_SCORES = [1 / 3, -0.0, 1e-45, 3.4e38, -7.25, 0.1]  # a subnormal, -0, the largest float32, ...


def stored(tmp_path: Path, table: pa.Table, identity: StoreIdentity = STORE_ID, name: str = "part-0") -> str:
    uri = store_uri(str(tmp_path / "out"), f"{name}.parquet")
    assert write_store(STORAGE, uri, table, identity) > 0
    return uri


def test_a_store_round_trip_keeps_the_keys_and_the_score_bits(tmp_path):
    scores = np.array(ODD_SCORES, np.float32)[:, None]
    table = store_table(QUERIES, PASSAGES, scores, ["score"])
    uri = stored(tmp_path, table)
    assert uri == str(tmp_path / "out" / SCORES / "part-0.parquet")
    back = read_store(STORAGE, uri, STORE_ID.digest, ["score"], chunked=False)
    assert back.schema == store_schema(["score"], False) and back.schema.metadata is None
    hi, lo = pair_keys(QUERIES, PASSAGES)
    assert back.column(KEY_HI).to_pylist() == hi.tolist() and back.column(KEY_LO).to_pylist() == lo.tolist()
    assert bits(back.column("score").to_numpy()) == bits(ODD_SCORES)


def test_a_layerwise_store_keeps_every_score_column(tmp_path):
    columns = ["score_l2", "score_l4", "score_l8"]
    scores = np.arange(18, dtype=np.float32).reshape(6, 3) / 7
    uri = stored(tmp_path, store_table(QUERIES, PASSAGES, scores, columns))
    back = read_store(STORAGE, uri, STORE_ID.digest, columns, chunked=False)
    assert back.column_names == [KEY_HI, KEY_LO, *columns]
    for i, c in enumerate(columns):
        assert bits(back.column(c).to_numpy()) == bits(scores[:, i])
    with pytest.raises(UnusableStore, match=r"lacks column\(s\) \['score'\]"):
        read_store(STORAGE, uri, STORE_ID.digest, ["score"], chunked=False)


def test_a_chunk_mode_store_keeps_chunks_and_best_chunk_char(tmp_path):
    chunks = {
        CHUNKS: pa.array([1, 4, 2, 1, 3, 1], pa.int16()),
        BEST_CHUNK_CHAR: pa.array([0, 40, 0, 0, 66, 0], pa.int32()),
    }
    scores = np.array(ODD_SCORES, np.float32)[:, None]
    uri = stored(tmp_path, store_table(QUERIES, PASSAGES, scores, ["score"], chunks))
    back = read_store(STORAGE, uri, STORE_ID.digest, ["score"], chunked=True)
    assert back.column_names == [KEY_HI, KEY_LO, "score", CHUNKS, BEST_CHUNK_CHAR]
    assert back.column(CHUNKS).to_pylist() == [1, 4, 2, 1, 3, 1]
    assert back.column(BEST_CHUNK_CHAR).to_pylist() == [0, 40, 0, 0, 66, 0]
    assert bits(back.column("score").to_numpy()) == bits(ODD_SCORES)
    truncated = stored(tmp_path, store_table(QUERIES, PASSAGES, scores, ["score"]), name="t")
    with pytest.raises(UnusableStore, match="lacks column"):  # a truncate-mode store for a chunk run
        read_store(STORAGE, truncated, STORE_ID.digest, ["score"], chunked=True)


def test_a_pair_given_twice_is_stored_once_with_its_first_score():
    queries = ["q0", "q1", "q0", "q2", "q1", "q0"]
    passages = ["p0", "p1", "p0", "p2", "p1", "px"]
    scores = np.arange(6, dtype=np.float32)[:, None]
    table = store_table(queries, passages, scores, ["score"])
    assert table.column("score").to_pylist() == [0.0, 1.0, 3.0, 5.0]  # the first of each, in order
    hi, lo = pair_keys(["q0", "q1", "q2", "q0"], ["p0", "p1", "p2", "px"])
    assert table.column(KEY_HI).to_pylist() == hi.tolist() and table.column(KEY_LO).to_pylist() == lo.tolist()
    assert first_per_key(table).equals(table)
    assert first_per_key(table.slice(0, 1)).equals(table.slice(0, 1))
    assert store_table([], [], np.zeros((0, 1), np.float32), ["score"]).num_rows == 0


def rewritten(uri: str, table: pa.Table) -> None:
    pq.write_table(table, uri)


def damage_truncate(uri: str) -> None:
    data = Path(uri).read_bytes()
    Path(uri).write_bytes(data[: len(data) // 2])


def damage_footer(uri: str) -> None:
    data = Path(uri).read_bytes()
    Path(uri).write_bytes(data[:-1])


def damage_empty(uri: str) -> None:
    Path(uri).write_bytes(b"")


def damage_not_parquet(uri: str) -> None:
    Path(uri).write_text('{"score": 1.0}\n')


def damage_format(uri: str) -> None:
    table = pq.read_table(uri)
    rewritten(uri, table.replace_schema_metadata({**table.schema.metadata, FORMAT_KEY: b"2"}))


def damage_no_metadata(uri: str) -> None:
    rewritten(uri, pq.read_table(uri).replace_schema_metadata(None))


def damage_digest(uri: str) -> None:
    table = pq.read_table(uri)
    rewritten(uri, with_identity(table, identity_of(model={"max_length": 256}), "another-digest"))


def damage_column(uri: str) -> None:
    table = pq.read_table(uri)
    rewritten(uri, table.drop_columns(["score"]).replace_schema_metadata(table.schema.metadata))


def damage_type(uri: str) -> None:
    table = pq.read_table(uri)
    text = table.set_column(2, "score", pa.array(["high"] * table.num_rows))
    rewritten(uri, text.replace_schema_metadata(table.schema.metadata))


def damage_null_key(uri: str) -> None:
    table = pq.read_table(uri)
    hi = pa.array([None, *table.column(KEY_HI).to_pylist()[1:]], pa.uint64())
    rewritten(uri, table.set_column(0, KEY_HI, hi).replace_schema_metadata(table.schema.metadata))


def damage_remove(uri: str) -> None:
    os.remove(uri)


DAMAGES = [
    ("cut in half", damage_truncate, "cannot be read"),
    ("last byte missing", damage_footer, "cannot be read"),
    ("empty", damage_empty, "cannot be read"),
    ("not Parquet", damage_not_parquet, "cannot be read"),
    ("another format version", damage_format, "store format 2, this version reads 1"),
    ("no store metadata", damage_no_metadata, "store format none"),
    ("another identity", damage_digest, "another scoring identity"),
    ("a column missing", damage_column, r"lacks column\(s\) \['score'\]"),
    ("a column of another type", damage_type, "columns of other types"),
    ("a row without a key", damage_null_key, "rows without a key"),
    ("gone", damage_remove, "is gone"),
]


@pytest.mark.parametrize(("damage", "why"), [d[1:] for d in DAMAGES], ids=[d[0] for d in DAMAGES])
def test_an_unusable_store_file_gives_no_rows_and_says_why(tmp_path, damage, why):
    scores = np.array(ODD_SCORES, np.float32)[:, None]
    uri = stored(tmp_path, store_table(QUERIES, PASSAGES, scores, ["score"]))
    damage(uri)
    with pytest.raises(UnusableStore, match=why) as raised:
        read_store(STORAGE, uri, STORE_ID.digest, ["score"], chunked=False)
    assert uri in str(raised.value)


# --- which sources a run takes -------------------------------------------------------------------------

TEMP = ".tmp-0123456789abcdef0123456789abcdef-part-2.parquet"  # an atomic write cut short


def write_source(
    root: Path,
    success: str | dict | None = "complete",
    store: StoreIdentity = STORE_ID,
    files: tuple[str, ...] = ("day=0/part-0.parquet", "part-1.parquet", TEMP, "notes.txt"),
) -> str:
    """An earlier run's OUTPUT: its store files and its `_SUCCESS` ("complete": naming `store`, a
    dict: that manifest, a str: those bytes, None: none)."""
    for rel in files:
        path = root / SCORES / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
    root.mkdir(parents=True, exist_ok=True)
    if success == "complete":
        success = {"digest": "d", "shards": [{"path": "part-0.parquet"}], "score_store": store.manifest()}
    if isinstance(success, dict):
        (root / SUCCESS).write_text(json.dumps(success))
    elif success is not None:
        (root / SUCCESS).write_text(success)
    return str(root)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_only_a_completed_source_with_this_runs_identity_is_used(tmp_path, caplog):
    ours = identity_of(model={"max_length": 512, "query_max_length": 64})
    store = StoreIdentity(ours, identity_digest(ours))
    other = identity_of(model={"max_length": 256, "query_max_length": 64})
    sources = {
        "missing": str(tmp_path / "missing"),
        "unfinished": write_source(tmp_path / "unfinished", success=None),
        "damaged": write_source(tmp_path / "damaged", success='{"digest": "d", "sha', store=store),
        "damaged store": write_source(
            tmp_path / "damaged_store", success={"digest": "d", "shards": [], "score_store": {"format": 1}}
        ),
        "old": write_source(tmp_path / "old", success={"digest": "d", "shards": []}),
        "other": write_source(tmp_path / "other", store=StoreIdentity(other, identity_digest(other))),
        "empty": write_source(tmp_path / "empty", files=(), store=store),
        "good": write_source(tmp_path / "good", store=store),
    }
    with caplog.at_level(logging.WARNING):
        used = usable_sources(STORAGE, list(sources.values()), ours, store.digest, str(tmp_path / "out"))
    assert [s.uri for s in used] == [sources["good"]]
    root = join(sources["good"], SCORES)
    assert used[0].files == [join(root, "day=0/part-0.parquet"), join(root, "part-1.parquet")]
    lines = warnings_of(caplog)
    assert len(lines) == len(sources) - 1
    why = {
        "missing": "no _SUCCESS (that run does not exist or never completed)",
        "unfinished": "no _SUCCESS",
        "damaged": "is damaged (not valid JSON",
        "damaged store": "score_store.digest is missing",
        "old": "names no score store (a run of a version before score reuse)",
        "other": "it scored with max_length 256 (this run: 512)",
        "empty": "it holds no stored scores",
    }
    for name, reason in why.items():
        (line,) = [x for x in lines if f"--reuse {sources[name]} skipped" in x]
        assert reason in line and "not used" in line, (name, line)


def test_sources_keep_their_order_once_each_and_never_this_runs_output(tmp_path, caplog):
    newer, older = write_source(tmp_path / "night2"), write_source(tmp_path / "night1")
    out = str(tmp_path / "night3")
    write_source(tmp_path / "night3")
    with caplog.at_level(logging.WARNING):
        used = usable_sources(
            STORAGE, [newer, older, newer, out + "/"], STORE_ID.identity, STORE_ID.digest, out
        )
    assert [s.uri for s in used] == [newer, older]
    (own,) = [x for x in warnings_of(caplog) if "own OUTPUT" in x]
    assert own.startswith(f"--reuse {out}/ skipped: it is this run's own OUTPUT")
    assert source_problem(read_success(STORAGE, newer), STORE_ID.identity, STORE_ID.digest) is None


# --- the lookup: keys, stores, one stored score per row --------------------------------------------------


def write_pairs(path: Path, queries: list, passages: list, row_group_size: int = 2, **extra: list) -> str:
    n = len(queries)
    table = pa.table(
        {
            "query_id": extra.pop("query_id", [f"q{i // 3}" for i in range(n)]),
            "query": pa.array(queries, pa.string()),
            "doc_id": [f"d{i}" for i in range(n)],
            "passage": pa.array(passages, pa.string()),
            **extra,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


# row 2: an empty passage, row 4: a null query (quarantined: no key, never scored)
SHARD_QUERIES = ["kalo sun", "kalo sun", "kalo sun", "zo pe", None, "zo pe", "mi ter"]
SHARD_PASSAGES = ["ra vel on", "is zo", "  ", "dre ka lo", "mi", "vel vel", "sun on ra"]
SCORABLE = [0, 1, 3, 5, 6]


def test_shard_keys_key_only_the_scorable_rows_with_their_row_numbers(tmp_path):
    uri = write_pairs(tmp_path / "s.parquet", SHARD_QUERIES, SHARD_PASSAGES)
    keys = pa.concat_tables(ShardKeys(InputConfig(uri="u"), STORAGE).keys(5, uri))
    assert keys.column("row").to_pylist() == SCORABLE  # across row groups of 2
    assert set(keys.column("shard").to_pylist()) == {5}
    hi, lo = pair_keys([SHARD_QUERIES[i] for i in SCORABLE], [SHARD_PASSAGES[i] for i in SCORABLE])
    assert keys.column(KEY_HI).to_pylist() == hi.tolist() and keys.column(KEY_LO).to_pylist() == lo.tolist()


def test_shard_keys_leave_out_what_the_prefilter_does_not_score(tmp_path):
    uri = write_pairs(
        tmp_path / "s.parquet",
        ["x"] * 6,
        [f"p{i}" for i in range(6)],
        query_id=["a", "a", "a", "b", "b", "b"],
        bm25=[1.0, 3.0, 2.0, 0.5, None, 4.0],
    )
    cfg = InputConfig(uri="u", prefilter_column="bm25", prefilter_top_k=1)
    keys = pa.concat_tables(ShardKeys(cfg, STORAGE).keys(0, uri))
    assert keys.column("row").to_pylist() == [1, 5]  # each query's best by bm25
    assert keys.column(KEY_HI).to_pylist() == pair_keys(["x", "x"], ["p1", "p5"])[0].tolist()


def test_shard_keys_skip_a_shard_that_cannot_be_read(tmp_path, caplog):
    good = write_pairs(tmp_path / "good.parquet", ["a", "b"], ["c", "d"])
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    stage = ShardKeys(InputConfig(uri="u"), STORAGE)
    with caplog.at_level(logging.WARNING):
        tables = list(stage({"shards": [[0, 1]], "uris": [[str(tmp_path / "bad.parquet"), good]]}))
    assert [t.column("shard").to_pylist() for t in tables] == [[1, 1]]
    assert any("no reuse lookup for" in x and "bad.parquet" in x for x in warnings_of(caplog))


def test_read_stores_tags_each_row_with_its_source_and_notes_a_damaged_file(tmp_path, caplog):
    scores = np.array(ODD_SCORES, np.float32)[:, None]
    good = stored(tmp_path / "night1", store_table(QUERIES, PASSAGES, scores, ["score"]))
    bad = stored(tmp_path / "night1", store_table(QUERIES[:2], PASSAGES[:2], scores[:2], ["score"]), name="b")
    damage_truncate(bad)
    out = str(tmp_path / "out")
    items = store_items([[good], [bad]])
    assert items == [{"uri": good, SOURCE: 0}, {"uri": bad, SOURCE: 1}]
    stage = ReadStores(STORAGE, out, STORE_ID.digest, ["score"], chunked=False)
    with caplog.at_level(logging.WARNING):
        (table,) = stage({"uri": np.array([good, bad]), SOURCE: np.array([0, 1])})
    assert table.column(SOURCE).to_pylist() == [0] * 6
    assert bits(table.column("score").to_numpy()) == bits(ODD_SCORES)
    (note,) = lookup_notes(STORAGE, out)
    assert bad in note and "cannot be read" in note and note.endswith("its pairs are scored")
    assert any(bad in x for x in warnings_of(caplog))


def matched_rows(rows: list[int], sources: list[int], scores: list[float], shard: int = 3) -> pa.Table:
    """What the join gives `write_reused`: a shard's rows matched with stored rows."""
    n = len(rows)
    return pa.table(
        {
            "shard": pa.array([shard] * n, pa.int32()),
            "row": pa.array(rows, pa.int64()),
            KEY_HI: pa.array([7] * n, pa.uint64()),
            KEY_LO: pa.array(rows, pa.uint64()),
            "score": pa.array(scores, pa.float32()),
            SOURCE: pa.array(sources, pa.int16()),
        }
    )


def test_write_reused_keeps_one_score_per_row_the_newest_sources(tmp_path):
    out = str(tmp_path / "out")
    # row 4: sources 2, 0 and 1 (source 0 is the newest); row 0: source 1 only; row 9: two files of
    # source 0 (a pair that moved between shards) give the first
    matched = matched_rows([4, 0, 4, 9, 4, 9], [2, 1, 0, 0, 1, 0], [4.2, 0.1, 4.0, 9.0, 4.1, 9.5])
    result = write_reused(matched, storage=STORAGE, output=out, score_columns=["score"], chunked=False)
    assert result.to_pylist() == [{"shard": 3, "pairs": 3}]
    table = read_reused(STORAGE, reused_uri(out, 3), ["score"], chunked=False)
    assert table.schema == reused_schema(["score"], False)
    assert table.column("row").to_pylist() == [0, 4, 9]
    assert table.column("score").to_pylist() == pytest.approx([0.1, 4.0, 9.0])


def test_write_reused_keeps_chunk_columns(tmp_path):
    out = str(tmp_path / "out")
    matched = (
        matched_rows([1, 1], [1, 0], [1.0, 2.0])
        .append_column(CHUNKS, pa.array([5, 3], pa.int16()))
        .append_column(BEST_CHUNK_CHAR, pa.array([99, 42], pa.int32()))
    )
    write_reused(matched, storage=STORAGE, output=out, score_columns=["score"], chunked=True)
    table = read_reused(STORAGE, reused_uri(out, 3), ["score"], chunked=True)
    assert table.to_pylist() == [{"row": 1, "score": 2.0, CHUNKS: 3, BEST_CHUNK_CHAR: 42}]


# --- the tokenize stage with reused rows -----------------------------------------------------------------


def write_reused_file(path: Path, rows: list[int], scores: list[float], chunked: bool = False) -> str:
    columns = {"row": rows, "score": scores}
    if chunked:
        columns |= {CHUNKS: [r + 1 for r in rows], BEST_CHUNK_CHAR: [10 * r for r in rows]}
    pq.write_table(pa.table(columns, schema=reused_schema(["score"], chunked)), path)
    return str(path)


def tokenizer(tiny_bert: str, reused: bool = True, **input_options) -> TokenizeShard:
    return TokenizeShard(
        ModelConfig(name_or_path=tiny_bert, max_length=64),
        InputConfig(uri="u", **input_options),
        STORAGE,
        block_rows=3,
        reused_columns=["score"] if reused else None,
    )


def test_reused_rows_are_not_tokenized_and_come_once_with_their_stored_scores(tmp_path, tiny_bert):
    uri = write_pairs(tmp_path / "s.parquet", SHARD_QUERIES, SHARD_PASSAGES)
    stored_scores = [0.5, np.float32(1 / 3), -0.0, 7.0]
    # rows 0, 3, 6 are scorable; row 2 (an empty passage) is listed too, and is not taken
    reused = write_reused_file(tmp_path / "r.parquet", [0, 2, 3, 6], stored_scores)
    blocks = list(tokenizer(tiny_bert)({"shards": [[4]], "uris": [[uri]], "reused": [[reused]]}))
    assert {b.num_rows for b in blocks[:-1]} == {3}
    table = pa.concat_tables(blocks).sort_by("row")
    assert table.column("row").to_pylist() == list(range(7))  # each row once
    assert set(table.column("shard").to_pylist()) == {4}
    rows = {r["row"]: r for r in table.to_pylist()}
    assert [r for r in rows if rows[r][REUSED]] == [0, 3, 6]
    for r, score in zip([0, 3, 6], [0.5, -0.0, 7.0]):
        assert rows[r]["input_ids"] == [] and rows[r]["token_type_ids"] == []
        assert rows[r]["reject"] is None and rows[r]["error"] is None
        assert bits([rows[r]["score"]]) == bits([score])
    assert rows[2]["reject"] == "empty passage" and rows[2]["score"] is None  # not taken as reused
    assert rows[4]["reject"] == "null query" and not rows[4][REUSED]
    plain = pa.concat_tables(tokenizer(tiny_bert, reused=False).tokenize(4, uri)).sort_by("row")
    for r in (1, 2, 4, 5):  # the other rows: tokenized as without --reuse
        assert not rows[r][REUSED] and rows[r]["score"] is None
        assert rows[r]["input_ids"] == plain.column("input_ids")[r].as_py()
        assert rows[r]["token_type_ids"] == plain.column("token_type_ids")[r].as_py()
    assert rows[1]["input_ids"]  # a scorable row not in the file has its tokens


def test_without_a_reused_file_every_row_is_tokenized(tmp_path, tiny_bert):
    uri = write_pairs(tmp_path / "s.parquet", SHARD_QUERIES, SHARD_PASSAGES)
    reused = write_reused_file(tmp_path / "r.parquet", [0, 1], [1.0, 2.0])
    for stage, batch in [
        (tokenizer(tiny_bert), {"shards": [[0]], "uris": [[uri]], "reused": [[""]]}),
        (tokenizer(tiny_bert), {"shards": [[0]], "uris": [[uri]]}),
        (tokenizer(tiny_bert, reused=False), {"shards": [[0]], "uris": [[uri]], "reused": [[reused]]}),
    ]:
        table = pa.concat_tables(stage(batch))
        assert sorted(table.column("row").to_pylist()) == list(range(7))
        if REUSED in table.column_names:
            assert not any(table.column(REUSED).to_pylist())
        kept = zip(table["input_ids"].to_pylist(), table["reject"].to_pylist())
        assert all(ids for ids, reject in kept if reject is None)


def test_a_row_group_reused_whole_gives_no_tokenized_rows(tmp_path, tiny_bert):
    uri = write_pairs(tmp_path / "s.parquet", ["a b", "c d", "e f"], ["x y", "z w", "v u"])
    reused = write_reused_file(tmp_path / "r.parquet", [0, 1], [1.0, 2.0])  # row group 0 whole
    table = pa.concat_tables(tokenizer(tiny_bert).tokenize(0, uri, reused)).sort_by("row")
    assert table.column("row").to_pylist() == [0, 1, 2]
    assert table.column(REUSED).to_pylist() == [True, True, False]


def test_a_row_the_prefilter_leaves_unscored_is_not_taken_as_reused(tmp_path, tiny_bert):
    uri = write_pairs(
        tmp_path / "s.parquet",
        ["x y"] * 4,
        ["p q", "r s", "t u", "v w"],
        query_id=["a"] * 4,
        bm25=[1, 4, 3, 2],
    )
    reused = write_reused_file(tmp_path / "r.parquet", [0, 1], [1.0, 2.0])  # row 0: outside the top 2
    stage = tokenizer(tiny_bert, prefilter_column="bm25", prefilter_top_k=2)
    rows = {r["row"]: r for r in pa.concat_tables(stage.tokenize(0, uri, reused)).to_pylist()}
    assert sorted(rows) == [0, 1, 2, 3]
    assert [r for r in rows if rows[r][REUSED]] == [1]
    assert rows[0]["reject"] == NOT_SCORED and rows[0]["score"] is None
    assert rows[3]["reject"] == NOT_SCORED and rows[2]["reject"] is None and rows[2]["input_ids"]


def test_chunk_mode_reused_rows_carry_their_stored_chunks(tmp_path, tiny_bert):
    passages = ["ra vel on " * 40, "is zo", "  ", "dre ka lo " * 40, "mi", "vel vel", "sun on ra"]
    uri = write_pairs(tmp_path / "s.parquet", SHARD_QUERIES, passages)
    reused = write_reused_file(tmp_path / "r.parquet", [0, 2, 3], [0.5, 9.0, 3.0], chunked=True)
    stage = tokenizer(tiny_bert, long_passages="chunk", chunk_overlap=8, max_chunks=3)
    table = pa.concat_tables(stage.tokenize(0, uri, reused))
    again = [r for r in table.to_pylist() if r[REUSED]]
    assert [(r["row"], r["score"], r[CHUNKS], r[BEST_CHUNK_CHAR]) for r in again] == [
        (0, 0.5, 1, 0),
        (3, 3.0, 4, 30),
    ]
    assert all((r["window"], r["windows"], r["input_ids"]) == (0, 1, []) for r in again)
    others = [r for r in table.to_pylist() if not r[REUSED]]
    assert {r["row"] for r in others} == {1, 2, 4, 5, 6}  # row 2 is quarantined: not reused
    assert all(r[CHUNKS] is None for r in others)


# --- scoring and assembly with reused rows ----------------------------------------------------------


def scored_block(
    rows: list[int], scores: list[float], reused: list[bool], shard: int = 0, reject: list | None = None
) -> pa.Table:
    """A block as the scoring stage emits it with --reuse."""
    n = len(rows)
    data = {
        "shard": [shard] * n,
        "row": rows,
        "score": scores,
        "tokens": [0 if r else 5 for r in reused],
        "padded_tokens": [0 if r else 6 for r in reused],
        "error": [None] * n,
        "reject": reject or [None] * n,
        "node": ["n"] * n,
        "actor": [1] * n,
        "call_start": [0.0] * n,
        "call_end": [1.0] * n,
    }
    table = pa.Table.from_pydict(data, schema=scored_schema(["score"]))
    return table.append_column(pa.field(REUSED, pa.bool_()), pa.array(reused))


def test_a_block_mixing_reused_and_scored_rows_completes_the_shard_once():
    assembler = ShardAssembler({0: 5, 1: 2})
    reused = [True, False, True, False, False]
    reject = [None, None, None, None, "empty passage"]
    block = scored_block([0, 1, 2, 3, 4], [0.25, 1.0, -0.0, 3.0, np.nan], reused, reject=reject)
    added = assembler.add(block)
    assert added.complete == [0]
    assert added.reused.tolist() == [True, False, True, False, False]
    assert added.scored.tolist() == [False, True, False, True, False]  # reused and rejected: not scored
    assert added.fresh.tolist() == [True] * 5
    assert (added.pairs, added.pairs_reused, added.tokens, added.padded_tokens) == (2, 2, 15, 18)
    result = assembler.take(0)
    assert bits(result.scores[:4, 0]) == bits([0.25, 1.0, -0.0, 3.0])
    assert result.reused == 2 and result.filled == 5 and result.rejected == {4: "empty passage"}
    assert result.tokens == 15


def test_reused_rows_count_once_whichever_block_completes_the_shard():
    assembler = ShardAssembler({0: 3})
    first = assembler.add(scored_block([0, 2], [0.5, 2.5], [True, True]))
    assert first.complete == [] and first.pairs_reused == 2 and first.pairs == 0
    again = assembler.add(scored_block([2, 1], [2.5, 1.5], [True, False]))  # a retried task's rows
    assert again.complete == [0] and again.reused.tolist() == [False, False]
    assert again.fresh.tolist() == [False, True] and again.scored.tolist() == [False, True]
    result = assembler.take(0)
    assert result.reused == 2 and result.filled == 3
    assert result.scores[:, 0].tolist() == [0.5, 1.5, 2.5]
    assert assembler.add(scored_block([1], [1.5], [True])).complete == []  # taken: nothing counts again
    other = ShardAssembler({0: 2})
    assert other.add(scored_block([0, 1], [0.0, 1.0], [True, True])).complete == [0]  # reused only
    assert other.take(0).reused == 2


def test_chunk_mode_reused_rows_keep_their_stored_chunks():
    # row 0: reused (4 windows when it was scored, the best at char 120); row 1: two windows now;
    # row 2: one window now
    rows, scores, reused = [0, 1, 1, 2], [0.25, 0.1, 0.9, 0.5], [True, False, False, False]
    block = scored_block(rows, scores, reused)
    windows = {"window": [0, 0, 1, 0], "windows": [1, 2, 2, 1], "window_char": [0, 0, 40, 0]}
    windows["windows_not_scored"] = [0, 0, 0, 0]
    for f in WINDOW_FIELDS:
        block = block.append_column(f, pa.array(windows[f.name], f.type))
    block = block.append_column(pa.field(CHUNKS, pa.int16()), pa.array([4, None, None, None], pa.int16()))
    block = block.append_column(
        pa.field(BEST_CHUNK_CHAR, pa.int32()), pa.array([120, None, None, None], pa.int32())
    )
    assembler = ShardAssembler({0: 3}, ["score"], "max")
    added = assembler.add(block)
    assert added.complete == [0]
    assert added.reused.tolist() == [True, False, False, False]
    assert added.scored.tolist() == [False, False, True, True]  # row 1 at its last window
    result = assembler.take(0)
    assert result.scores[:, 0].tolist() == pytest.approx([0.25, 0.9, 0.5])
    assert result.chunks.tolist() == [4, 2, 1] and result.best_chunk_char.tolist() == [120, 40, 0]
    assert result.reused == 1 and result.windows_scored == 3


def test_a_night_without_ray_scores_only_the_changed_pairs(tmp_path, tiny_bert):
    """Night 1 scored and stored; night 2 edits a passage, adds a pair, drops one and renames a
    query's ids: the lookup finds the rest, which keep their stored scores bit for bit."""
    model = ModelConfig(name_or_path=tiny_bert, max_length=64)
    score = ScorePairs(model, STORAGE, scoring_settings(512))
    night1 = pairs_table(3, 4, seed=3)

    def scored(uri: str, reused: str = "") -> tuple:
        stage = TokenizeShard(model, InputConfig(uri="u"), STORAGE, 5, reused_columns=["score"])
        blocks = [score(b) for b in stage({"shards": [[0]], "uris": [[uri]], "reused": [[reused]]})]
        assembler = ShardAssembler({0: pq.read_metadata(uri).num_rows})
        added = [assembler.add(b) for b in blocks]
        assert [s for a in added for s in a.complete] == [0]
        return assembler.take(0), sum(a.pairs for a in added), pa.concat_tables(blocks)

    queries, passages = night1["query"].to_pylist(), night1["passage"].to_pylist()
    in1 = write_pairs(tmp_path / "in1" / "part-0.parquet", queries, passages, 5, query_id=night1["query_id"])
    first, pairs1, _ = scored(in1)
    assert pairs1 == 12
    out1 = tmp_path / "out1"
    store = store_table(queries, passages, first.scores, ["score"])
    write_store(STORAGE, store_uri(str(out1), "part-0.parquet"), store, STORE_ID)
    write_source(out1, files=())

    rows = night1.to_pylist()
    rows[3]["passage"] += " edited"
    del rows[7]
    rows.append(dict(rows[0], doc_id="new", passage="a new candidate"))
    ids = [f"renamed-{r['query_id']}" for r in rows]
    texts2 = [r["query"] for r in rows], [r["passage"] for r in rows]
    in2 = write_pairs(tmp_path / "in2" / "part-0.parquet", *texts2, 5, query_id=ids)

    out2 = str(tmp_path / "out2")
    (source,) = usable_sources(STORAGE, [str(out1)], STORE_ID.identity, STORE_ID.digest, out2)
    keys = pa.concat_tables(ShardKeys(InputConfig(uri="u"), STORAGE).keys(0, in2))
    stores = pa.concat_tables(
        ReadStores(STORAGE, out2, STORE_ID.digest, ["score"], False)(
            {"uri": np.array(source.files), SOURCE: np.zeros(len(source.files), int)}
        )
    )
    matched = keys.join(stores, keys=[KEY_HI, KEY_LO], join_type="inner")
    assert write_reused(matched, storage=STORAGE, output=out2, score_columns=["score"], chunked=False)[
        "pairs"
    ].to_pylist() == [10]  # 12 - the edited - the dropped
    second, pairs2, blocks = scored(in2, reused_uri(out2, 0))
    assert (pairs2, second.reused) == (2, 10)  # the edited passage and the new pair
    assert blocks.filter(blocks[REUSED])["tokens"].to_pylist() == [0] * 10
    old = {(r["query"], r["passage"]): s for r, s in zip(night1.to_pylist(), first.scores[:, 0].tolist())}
    for i, r in enumerate(rows):
        if (r["query"], r["passage"]) in old:
            assert bits([second.scores[i, 0]]) == bits([old[(r["query"], r["passage"])]])
    full, _, _ = scored(in2)
    np.testing.assert_allclose(second.scores[:, 0], full.scores[:, 0], rtol=0, atol=1e-5)


# --- {previous_date} and the flag ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "previous"),
    [
        ("2026-11-27", "2026-11-26"),
        ("2026-03-01", "2026-02-28"),  # a month boundary
        ("2024-03-01", "2024-02-29"),  # a leap year
        ("2026-01-01", "2025-12-31"),  # a year boundary
    ],
)
def test_previous_date_is_the_day_before(date, previous):
    config = {
        "input": {"uri": "s3://b/pairs/{date}/"},
        "output": {"uri": "s3://b/reranked/{date}/", "reuse": ["s3://b/reranked/{previous_date}/", "/x"]},
        "ranking": {"top_k": 3},
    }
    assert with_date(config, date) == {
        "input": {"uri": f"s3://b/pairs/{date}/"},
        "output": {"uri": f"s3://b/reranked/{date}/", "reuse": [f"s3://b/reranked/{previous}/", "/x"]},
        "ranking": {"top_k": 3},
    }


def test_a_nightly_config_takes_last_nights_scores(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text(
        'input: {uri: "/in/{date}"}\noutput: {uri: "/out/{date}", reuse: ["/out/{previous_date}"]}\n'
        "model: {name_or_path: m}\n"
    )
    assert dated_config(str(path), "2026-01-01")["output"]["reuse"] == ["/out/2025-12-31"]
    args = build_parser().parse_args(["nightly", "--config", str(path), "--reuse", "/a", "--reuse", "/b"])
    assert flag_overrides(vars(args), rerank_nightly.FLAG_FIELDS)["output"]["reuse"] == ["/a", "/b"]


def test_reuse_is_a_repeatable_flag():
    args = build_parser().parse_args(["run", "IN", "OUT", "--model", "M", "--reuse", "a", "--reuse", "b"])
    assert args.reuse == ["a", "b"]
    cfg = load_config(None, overrides_from_args(args))
    assert cfg.output.reuse == ["a", "b"] and cfg.output.uri == "OUT" and cfg.model.name_or_path == "M"
    none = build_parser().parse_args(["run", "IN", "OUT", "--model", "M"])
    assert load_config(None, overrides_from_args(none)).output.reuse == []
