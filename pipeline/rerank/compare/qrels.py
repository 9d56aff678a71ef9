"""Relevance judgments (qrels) for the quality gate: read, checked and normalised once.

A qrels file is TREC text (`qid iter docid rel` per line) or Parquet (`query_id, doc_id, relevance`).
Either way it becomes one table of string ids and int32 grades, one row per (query, doc), sorted, so
that its digest names exactly which judgments a figure was computed with. Ids are text: a corpus
whose query ids are integers is matched through their decimal form (see `judged_query_hashes`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import RerankError, storage_error
from pipeline.io import Storage
from pipeline.rerank.input.split_queries import query_id_hashes

COLUMNS = ("query_id", "doc_id", "relevance")
SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("relevance", pa.int32())])
FIX = "pass a TREC qrels file (qid 0 docid rel) or a Parquet file with query_id, doc_id, relevance"
PARQUET_MAGIC = "PAR1"
_INTEGER = re.compile(r"[+-]?[0-9]+")
# the decimal form pyarrow gives an int64 id cast to string: no sign on 0, no leading zeros
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Qrels:
    """Judgments read from `uri`: one row per (query, doc), sorted by query_id then doc_id."""

    uri: str
    table: pa.Table  # query_id (string), doc_id (string), relevance (int32); ids compared as text
    digest: str  # sha256 of the normalised table's content, hex[:16]: which qrels a figure used

    @property
    def queries(self) -> int:
        """The number of distinct judged queries."""
        return int(pc.count_distinct(self.table["query_id"]).as_py())


def load_qrels(storage: Storage, uri: str) -> Qrels:
    """Reads, checks and normalises the qrels at `uri` (local or any fsspec URI).

    Parquet when the name ends in `.parquet` or the file starts with the Parquet magic, else TREC
    text. Raises RerankError naming the file, the problem and the fix: missing file, wrong
    columns, bad lines, no judgments, one (query, doc) judged twice with different grades.
    """
    try:
        if uri.endswith(".parquet"):
            table = _read_parquet(storage, uri)
        else:
            text = storage.read_text(uri)
            table = _read_parquet(storage, uri) if text.startswith(PARQUET_MAGIC) else _parse_text(text, uri)
    except FileNotFoundError:
        raise RerankError(f"--qrels {uri}: no such file; {FIX}") from None
    except IsADirectoryError:
        raise RerankError(f"--qrels {uri}: is a directory, not a file; {FIX}") from None
    except OSError as e:
        raise storage_error(uri, "--qrels", e) from e
    if table.num_rows == 0:
        raise RerankError(f"--qrels {uri}: no judgments (no data rows); {FIX}")
    table = _one_judgment_per_pair(table, uri)
    return Qrels(uri=uri, table=table, digest=_digest(table))


def judged_query_hashes(qrels: Qrels) -> np.ndarray:
    """Sorted distinct uint64 hashes (as `query_id_hashes`) of the judged query ids, both as text
    and, for ids that are an integer's decimal form ("7", not "07"), as int64: the corpus's ids
    may be either type, and its hashes are typed. Intersect with the corpus's hashes."""
    ids = pc.unique(qrels.table["query_id"])
    ints = []
    for text in ids.to_pylist():
        if _CANONICAL_INT.fullmatch(text) and _INT64[0] <= (value := int(text)) <= _INT64[1]:
            ints.append(value)
    as_int = query_id_hashes(pa.array(ints, pa.int64()))
    return np.union1d(query_id_hashes(ids), as_int).astype(np.uint64)


def _read_parquet(storage: Storage, uri: str) -> pa.Table:
    """The three columns of a Parquet qrels file, typed as SCHEMA."""
    try:
        schema, _, table = storage.read_footer_and_columns(
            uri, lambda s: [c for c in COLUMNS if c in s.names]
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise RerankError(f"--qrels {uri}: not a readable Parquet file ({e}); {FIX}") from None
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise RerankError(
            f"--qrels {uri}: Parquet file has no column(s) {', '.join(missing)} "
            f"(found: {', '.join(schema.names) or 'none'}); it needs {', '.join(COLUMNS)}: "
            "rename its columns, or pass a TREC qrels file (qid 0 docid rel)"
        )
    return pa.table(
        {
            "query_id": _id_column(table["query_id"], "query_id", uri),
            "doc_id": _id_column(table["doc_id"], "doc_id", uri),
            "relevance": _relevance_column(table["relevance"], uri),
        },
        schema=SCHEMA,
    )


def _id_column(column: pa.ChunkedArray, name: str, uri: str) -> pa.ChunkedArray:
    """An id column of any scalar type as text; nulls are refused."""
    if column.null_count:
        raise RerankError(
            f"--qrels {uri}: column {name} has {column.null_count} null(s); give every row an id"
        )
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise RerankError(
            f"--qrels {uri}: column {name} has type {column.type}, which has no text form; "
            "store ids as strings or integers"
        ) from None


def _relevance_column(column: pa.ChunkedArray, uri: str) -> pa.ChunkedArray:
    """Relevance as int32: an integer column, or a float column whose values are all integral."""
    fix = "store relevance grades as integers"
    if column.null_count:
        raise RerankError(f"--qrels {uri}: column relevance has {column.null_count} null(s); {fix}")
    if pa.types.is_floating(column.type):
        fractional = pc.filter(column, pc.not_equal(pc.floor(column), column))
        if len(fractional):
            raise RerankError(
                f"--qrels {uri}: column relevance holds {len(fractional)} non-integer value(s), "
                f"e.g. {fractional[0].as_py()}; {fix}"
            )
    elif not pa.types.is_integer(column.type):
        raise RerankError(f"--qrels {uri}: column relevance has type {column.type}; {fix}")
    try:
        return pc.cast(column, pa.int32())
    except pa.ArrowInvalid:
        raise RerankError(f"--qrels {uri}: column relevance has values outside int32; {fix}") from None


def _parse_text(text: str, uri: str) -> pa.Table:
    """TREC qrels lines `qid iter docid rel` (iter ignored); blank lines and `#` comments skipped.
    Reports the first bad line and how many more there are."""
    qids: list[str] = []
    docs: list[str] = []
    grades: list[int] = []
    first_bad: tuple[int, str, str] | None = None
    more_bad = 0
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        problem = _line_problem(fields)
        if problem is None:
            qids.append(fields[0])
            docs.append(fields[2])
            grades.append(int(fields[3]))
        elif first_bad is None:
            first_bad = (number, problem, line)
        else:
            more_bad += 1
    if first_bad is not None:
        number, problem, line = first_bad
        shown = line if len(line) <= 200 else line[:200] + "..."
        more = f" (and {more_bad} more bad line(s))" if more_bad else ""
        raise RerankError(f"--qrels {uri}: line {number}: {problem}: {shown!r}{more}; {FIX}")
    return pa.table({"query_id": qids, "doc_id": docs, "relevance": grades}, schema=SCHEMA)


def _line_problem(fields: list[str]) -> str | None:
    """What is wrong with one qrels line's fields, or None."""
    if len(fields) != 4:
        return f"{len(fields)} field(s), expected 4 (qid iter docid rel)"
    if not _INTEGER.fullmatch(fields[3]):
        return f"relevance {fields[3]!r} is not an integer"
    if not _INT32[0] <= int(fields[3]) <= _INT32[1]:
        return f"relevance {fields[3]} is outside int32"
    return None


def _one_judgment_per_pair(table: pa.Table, uri: str) -> pa.Table:
    """Repeated (query, doc) rows with one grade collapse to one; different grades are refused.
    Sorted by query_id, doc_id (byte order), so equal judgments give an equal table."""
    grouped = table.group_by(["query_id", "doc_id"]).aggregate(
        [("relevance", "min"), ("relevance", "max"), ("relevance", "count")]
    )
    conflicts = grouped.filter(pc.not_equal(grouped["relevance_min"], grouped["relevance_max"]))
    if conflicts.num_rows:
        row = conflicts.sort_by([("query_id", "ascending"), ("doc_id", "ascending")]).slice(0, 1)
        qid, doc = row["query_id"][0].as_py(), row["doc_id"][0].as_py()
        lo, hi = row["relevance_min"][0].as_py(), row["relevance_max"][0].as_py()
        more = f" (and {conflicts.num_rows - 1} more such pair(s))" if conflicts.num_rows > 1 else ""
        raise RerankError(
            f"--qrels {uri}: query {qid!r} doc {doc!r} is judged more than once with different "
            f"relevance ({lo} and {hi}){more}; keep one judgment per (query, doc)"
        )
    out = pa.table(
        {"query_id": grouped["query_id"], "doc_id": grouped["doc_id"], "relevance": grouped["relevance_min"]},
        schema=SCHEMA,
    )
    return out.sort_by([("query_id", "ascending"), ("doc_id", "ascending")]).combine_chunks()


def _digest(table: pa.Table) -> str:
    """sha256 (hex[:16]) of the sorted table, one length-prefixed row a line, so that no id
    holding a tab or a newline can make two different tables hash alike."""
    q, d = table["query_id"], table["doc_id"]
    rows = pc.binary_join_element_wise(
        pc.cast(pc.utf8_length(q), pa.string()),
        q,
        pc.cast(pc.utf8_length(d), pa.string()),
        d,
        pc.cast(table["relevance"], pa.string()),
        "\t",
    )
    return hashlib.sha256("".join(f"{row}\n" for row in rows.to_pylist()).encode()).hexdigest()[:16]
