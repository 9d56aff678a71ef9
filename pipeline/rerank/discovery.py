"""Before any scoring: find the shards, check each pending one against the input contract."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.errors import InputContractError
from pipeline.io import ShardFile, Storage, storage_error
from pipeline.rerank.config import InputConfig
from pipeline.rerank.split_queries import decode_hashes, query_id_hashes, split_queries

log = logging.getLogger(__name__)

_FOOTER_READERS = 16


@dataclass(frozen=True)
class PendingShard:
    shard: ShardFile
    num_rows: int
    query_ids: dict[int, Any] = field(default_factory=dict)  # hash -> query id


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
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def contract_problems(shard: ShardFile, schema: pa.Schema, columns: InputConfig) -> list[str]:
    """What is wrong with a shard's schema for this job, as messages naming the fix."""
    flags = {
        columns.query_id_column: "--query-id-column",
        columns.query_column: "--query-column",
        columns.doc_id_column: "--doc-id-column",
        columns.passage_column: "--passage-column",
    }
    problems = []
    for name, flag in flags.items():
        if name not in schema.names:
            problems.append(
                f"shard {shard.uri!r} has no column {name!r} (found: {', '.join(schema.names)}); set {flag}"
            )
    for name in (columns.query_column, columns.passage_column):
        if name in schema.names and not _is_text(schema.field(name).type):
            problems.append(
                f"shard {shard.uri!r} column {name!r} is {schema.field(name).type}, not text; "
                f"point {flags[name]} at a string column"
            )
    for name in ("score", "rank", "score_norm"):
        if name in schema.names:
            problems.append(
                f"shard {shard.uri!r} already has a column {name!r}, which the output adds; rename or drop it"
            )
    return problems


def check_pending(storage: Storage, shards: list[ShardFile], columns: InputConfig) -> list[PendingShard]:
    """Reads each pending shard's footer and query ids (in parallel); raises one error listing
    every problem."""

    def footer(shard: ShardFile) -> tuple[ShardFile, pa.Schema | None, int, dict[int, Any], str | None]:
        try:
            schema, rows = storage.read_parquet_schema(shard.uri)
            ids: dict[int, Any] = {}
            if columns.query_id_column in schema.names:
                table = storage.read_table(shard.uri, columns=[columns.query_id_column])
                ids = query_id_hashes(table.column(columns.query_id_column))
            return shard, schema, rows, ids, None
        except Exception as e:  # unreadable shard: it fails on its own later, others go on
            return shard, None, 0, {}, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(_FOOTER_READERS) as pool:
        footers = list(pool.map(footer, shards))
    problems: list[str] = []
    pending = []
    for shard, schema, rows, ids, error in footers:
        if error is not None:
            log.warning("cannot read %s (%s); it will be reported as failed", shard.uri, error)
            pending.append(PendingShard(shard, -1))
            continue
        assert schema is not None
        problems += contract_problems(shard, schema, columns)
        pending.append(PendingShard(shard, rows, ids))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputContractError("input does not match the job's contract:\n  - " + "\n  - ".join(shown))
    return pending


def check_split_queries(
    pending: list[PendingShard], done: dict[str, dict[str, Any]], columns: InputConfig
) -> int:
    """Query ids found in more than one shard: an error unless allowed. Returns how many."""
    hashes = {p.shard.relpath: set(p.query_ids) for p in pending}
    hashes |= {rel: decode_hashes(m["query_id_hashes"]) for rel, m in done.items() if "query_id_hashes" in m}
    split = split_queries(hashes)
    if not split:
        return 0
    names = {h: q for p in pending for h, q in p.query_ids.items()}
    examples = [
        f"{names.get(h, '(id of a published shard)')!r} in {', '.join(s)}"
        for h, s in list(split.items())[:10]
    ]
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
