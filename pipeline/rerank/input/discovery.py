"""Before any scoring: find the shards, check each pending one against the input contract."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pipeline.errors import InputContractError
from pipeline.io import ShardFile, Storage, storage_error
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.cascade import name_problems, prefilter_problems
from pipeline.rerank.input.layout import candidate_count, flat_schema, looks_nested_problem
from pipeline.rerank.input.split_queries import decode_hashes, names_of, query_id_hashes, split_queries

log = logging.getLogger(__name__)

_FOOTER_READERS = 16


# Above this many pending shards on object storage, footers and query ids are read by Ray tasks
# spread over the cluster (each with its own reader threads), not by the driver alone: 10^5 shards
# at a request's latency would otherwise keep the cluster idle for minutes before the first batch.
# Local (or mounted) files are read on the driver: under a millisecond a shard, less than a task's
# new worker process costs (1,000 shards on 2 cores: 5 s in 8 tasks, 0.6 s on the driver).
PARALLEL_PLANNING_MIN_SHARDS = 1024
SHARDS_PER_PLANNING_TASK = 512


@dataclass(frozen=True)
class PendingShard:
    """What planning keeps of a shard still to score: its row count and the hashes of its query
    ids (8 bytes a query), never the ids or the schema."""

    shard: ShardFile
    num_rows: int  # -1: the shard could not be read (see `error`)
    query_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    error: str | None = None  # why the shard could not be read: its failure reason


@dataclass(frozen=True)
class ShardFacts:
    """One shard's footer read: rows, query-id hashes, contract problems, or the read error."""

    num_rows: int
    query_hashes: np.ndarray
    problems: list[str]
    error: str | None = None


def find_shards(storage: Storage, uri: str) -> list[ShardFile]:
    try:
        shards = storage.list_shards(uri)
    except Exception as e:
        raise storage_error(uri, "INPUT", e) from e
    if not shards:
        raise InputContractError(
            f"no Parquet shards (*.parquet) found under INPUT {uri!r}; check the path "
            "(names starting with '_' or '.' are skipped)"
        )
    return shards


def _is_text(t: pa.DataType) -> bool:
    """Text the job reads as Python strings: string, large_string, or a dictionary of either; or
    `null`, the type a writer gives a column it saw only nulls in: each of its rows is a null text,
    quarantined like any other (pipeline/rerank/input/quarantine.py), not a reason to stop the run."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_id(t: pa.DataType) -> bool:
    """A scalar, hashable id: what grouping by query and counting (query, doc) pairs can key on."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(
        check(t)
        for check in (
            pa.types.is_integer,
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_fixed_size_binary,
            pa.types.is_boolean,
            pa.types.is_floating,
            pa.types.is_decimal,
            pa.types.is_date,
            pa.types.is_timestamp,
        )
    )


def _is_reorderable(t: pa.DataType) -> bool:
    """Whether Arrow can reorder (take) a column of this type, as ranking every column needs.
    Not so for string_view / binary_view (and anything holding them) in this pyarrow."""
    try:
        pa.table({"c": pa.nulls(0, t)}).take(pa.array([], pa.int64()))
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _type_problems(uri: str, schema: pa.Schema, columns: InputConfig, flags: dict[str, str]) -> list[str]:
    """Columns of a type the job cannot handle, found before any scoring."""
    problems = []
    text = (columns.query_column, columns.passage_column)
    ids = (columns.query_id_column, columns.doc_id_column)
    for f in schema:
        if f.name in text and not _is_text(f.type):
            fix = (
                "cast it to string when writing the shard"
                if pa.types.is_string_view(f.type)
                else f"point {flags[f.name]} at a string column"
            )
            problems.append(f"shard {uri!r} column {f.name!r} is {f.type}, not text (string); {fix}")
        elif f.name in ids and not _is_id(f.type):
            problems.append(
                f"shard {uri!r} column {f.name!r} is {f.type}, not a scalar id (string or integer); "
                f"point {flags[f.name]} at a scalar column, or cast it to string when writing the shard"
            )
        elif not _is_reorderable(f.type):
            problems.append(
                f"shard {uri!r} column {f.name!r} is {f.type}, which the job cannot carry into the "
                "output; cast it (string_view -> string, binary_view -> binary) when writing the shard"
            )
    return problems


def contract_problems(
    shard: ShardFile, schema: pa.Schema, columns: InputConfig, score_columns: list[str]
) -> list[str]:
    """What is wrong with a shard's schema for this job, as messages naming the fix.
    `score_columns` are the model's (`ModelConfig.score_columns`): the output adds them. A nested
    shard is checked as the long rows it is read as (`layout.flat_schema`)."""
    if columns.layout == "nested":
        schema, nested = flat_schema(shard.uri, schema, columns)
        if nested:
            return nested
    flags = {
        columns.query_id_column: "--query-id-column",
        columns.query_column: "--query-column",
        columns.doc_id_column: "--doc-id-column",
        columns.passage_column: "--passage-column",
    }
    missing = [name for name in flags if name not in schema.names]
    candidate_level = [n for n in missing if n in (columns.doc_id_column, columns.passage_column)]
    hint = looks_nested_problem(shard.uri, schema, columns, candidate_level)
    problems = [hint] if hint else []
    for name in missing:
        if not (hint and name in candidate_level):
            problems.append(
                f"shard {shard.uri!r} has no column {name!r} (found: {', '.join(schema.names)}); "
                f"set {flags[name]}"
            )
    problems += _type_problems(shard.uri, schema, columns, flags)
    problems += name_problems(shard.uri, schema.names, score_columns, columns.previous_prefix)
    problems += prefilter_problems(shard.uri, schema, columns)
    return problems


def read_facts(
    storage: Storage, shard: ShardFile, columns: InputConfig, score_columns: list[str]
) -> ShardFacts:
    """Reads a shard's footer (and its query-id column) and checks its contract."""
    qid = columns.query_id_column

    def query_ids(schema: pa.Schema) -> list[str]:  # read with the footer, when they are ids
        return [qid] if qid in schema.names and _is_id(schema.field(qid).type) else []

    try:
        schema, rows, table = storage.read_footer_and_columns(shard.uri, query_ids)
        if columns.layout == "nested":  # a row is a query; the job's rows are its candidates
            rows = candidate_count(storage, shard.uri, schema, columns)
        hashes = query_id_hashes(table.column(qid)) if table.num_columns else np.zeros(0, np.uint64)
    except Exception as e:  # unreadable shard: it fails on its own later, others go on
        return ShardFacts(-1, np.zeros(0, np.uint64), [], f"{type(e).__name__}: {e}")
    return ShardFacts(rows, hashes, contract_problems(shard, schema, columns, score_columns))


def read_facts_threaded(
    storage: Storage, shards: list[ShardFile], columns: InputConfig, score_columns: list[str]
) -> list[ShardFacts]:
    """`read_facts` of each shard, in order, with parallel reader threads (storage latency)."""
    with ThreadPoolExecutor(_FOOTER_READERS) as pool:
        return list(pool.map(lambda s: read_facts(storage, s, columns, score_columns), shards))


def read_all_facts(
    storage: Storage, shards: list[ShardFile], columns: InputConfig, score_columns: list[str]
) -> list[ShardFacts]:
    """Facts of every shard: on the driver for a few, in Ray tasks across the cluster for many."""
    local = not shards or storage.is_local(shards[0].uri)
    if local or len(shards) < PARALLEL_PLANNING_MIN_SHARDS or not ray.is_initialized():
        return read_facts_threaded(storage, shards, columns, score_columns)
    task = ray.remote(read_facts_threaded).options(num_cpus=0.25)
    chunks = [
        shards[i : i + SHARDS_PER_PLANNING_TASK] for i in range(0, len(shards), SHARDS_PER_PLANNING_TASK)
    ]
    refs = [task.remote(storage, chunk, columns, score_columns) for chunk in chunks]
    return [facts for chunk in ray.get(refs) for facts in chunk]


def check_pending(
    storage: Storage, shards: list[ShardFile], columns: InputConfig, score_columns: list[str]
) -> list[PendingShard]:
    """Reads each pending shard's footer and query ids (in parallel); raises one error listing
    every problem. A shard that cannot be read is pending with `num_rows == -1` and its `error`."""
    problems: list[str] = []
    pending = []
    for shard, facts in zip(shards, read_all_facts(storage, shards, columns, score_columns), strict=True):
        if facts.error is not None:
            log.warning("cannot read %s (%s); it will be reported as failed", shard.uri, facts.error)
            pending.append(PendingShard(shard, -1, error=facts.error))
            continue
        problems += facts.problems
        pending.append(PendingShard(shard, facts.num_rows, facts.query_hashes))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputContractError("input does not match the job's contract:\n  - " + "\n  - ".join(shown))
    return pending


def split_query_names(
    storage: Storage, pending: list[PendingShard], split: dict[int, list[str]], columns: InputConfig
) -> dict[int, Any]:
    """The ids behind (the first few) split hashes, read back from the pending shards holding them."""
    wanted = set(split)
    names: dict[int, Any] = {}
    for p in pending:
        if wanted - set(names) and p.shard.relpath in {s for h in wanted for s in split[h]}:
            table = storage.read_table(p.shard.uri, columns=[columns.query_id_column])
            names |= names_of(table.column(columns.query_id_column), wanted - set(names))
    return names


def query_hashes_by_shard(
    pending: list[PendingShard], done: dict[str, dict[str, Any]]
) -> dict[str, np.ndarray]:
    """relpath -> the sorted query-id hashes of every shard of the run: the pending shards' as
    planning read them, the done ones' from their markers (a marker of an older version may have
    none: left out)."""
    hashes = {p.shard.relpath: p.query_hashes for p in pending}
    hashes |= {rel: decode_hashes(m["query_id_hashes"]) for rel, m in done.items() if "query_id_hashes" in m}
    return hashes


def check_split_queries(
    storage: Storage, pending: list[PendingShard], done: dict[str, dict[str, Any]], columns: InputConfig
) -> int:
    """Query ids found in more than one shard: an error unless allowed. Returns how many."""
    split = split_queries(query_hashes_by_shard(pending, done))
    if not split:
        return 0
    shown = dict(list(split.items())[:10])
    names = split_query_names(storage, pending, shown, columns)
    examples = [f"{names.get(h, '(id of a published shard)')!r} in {', '.join(s)}" for h, s in shown.items()]
    if columns.allow_split_queries:
        log.warning(
            "%d query id(s) appear in more than one shard; each shard ranks its part on its own: %s",
            len(split),
            "; ".join(examples),
        )
        return len(split)
    raise InputContractError(
        f"{len(split)} query id(s) appear in more than one shard, but a query's candidates must live in "
        f"one shard to be ranked together: {'; '.join(examples)}; fix the input, or pass "
        "--allow-split-queries to rank each shard's part separately"
    )
