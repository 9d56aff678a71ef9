"""Before any scoring: find the shards, check each pending one against the input contract."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from pipeline.config import InputConfig
from pipeline.errors import InputContractError
from pipeline.io import ShardFile, Storage, storage_error

log = logging.getLogger(__name__)

_FOOTER_READERS = 16


@dataclass(frozen=True)
class PendingShard:
    shard: ShardFile
    num_rows: int


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
    """Reads each pending shard's footer (in parallel); raises one error listing every problem."""

    def footer(shard: ShardFile) -> tuple[ShardFile, pa.Schema | None, int, str | None]:
        try:
            schema, rows = storage.read_parquet_schema(shard.uri)
            return shard, schema, rows, None
        except Exception as e:  # unreadable shard: it fails on its own later, others go on
            return shard, None, 0, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(_FOOTER_READERS) as pool:
        footers = list(pool.map(footer, shards))
    problems: list[str] = []
    pending = []
    for shard, schema, rows, error in footers:
        if error is not None:
            log.warning("cannot read the footer of %s (%s); it will be reported as failed", shard.uri, error)
            pending.append(PendingShard(shard, -1))
            continue
        assert schema is not None
        problems += contract_problems(shard, schema, columns)
        pending.append(PendingShard(shard, rows))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputContractError("input does not match the job's contract:\n  - " + "\n  - ".join(shown))
    return pending
