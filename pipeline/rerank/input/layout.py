"""The nested layout (`--layout nested`): one row per query, its candidates a list of structs.

Candidates are flattened to long rows where they are read (`read_pairs` for the tokenize stage,
`flatten_shard` for the publish stage), so tokenizing, scoring and assembling stay as they are;
a row is a candidate, numbered in (query row, list position) order. When a shard is published its
ranked candidates are nested again (`FlatShard.nest`): one row per input row, in input order,
every query-level column unchanged, each list re-sorted best first with the output fields
(`score`, `rank`, ...) added to each struct. Quarantined candidates leave their list and go to
`_rejected/` as long rows (query-level columns, then the struct's fields, then `reject_reason`).

Pure pyarrow/numpy, no Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.cascade import (
    HELPER_PREFIX,
    input_prefilter_column,
    mark_not_scored,
    previous_renames,
    with_prefilter,
)
from pipeline.rerank.input.quarantine import reject_reasons

QUERY_ROW = HELPER_PREFIX + "query_row"  # a flattened candidate's query: its row in the shard
PREFILTER_SLICE_ROWS = 8192  # a prefiltered long shard is read whole, then handed on in slices


def _is_list_of_structs(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type)


def looks_nested_problem(uri: str, schema: pa.Schema, columns: InputConfig, missing: list[str]) -> str | None:
    """For the long layout missing `missing` columns (doc id, passage) in a shard holding a
    list<struct> column: the message that it is nested input, naming `--layout nested`."""
    lists = [f.name for f in schema if _is_list_of_structs(f.type)]
    if not missing or not lists:
        return None
    name = columns.candidates_column if columns.candidates_column in lists else lists[0]
    fix = "--layout nested" + ("" if name == columns.candidates_column else f" --candidates-column {name}")
    return (
        f"shard {uri!r} looks nested: column {name!r} is a list<struct> ({schema.field(name).type}), "
        f"one list of candidates per row, and the long layout's "
        f"{', '.join(repr(m) for m in missing)} column(s) are not there; to read each struct as a "
        f"candidate, pass {fix}"
    )


def flat_schema(uri: str, schema: pa.Schema, columns: InputConfig) -> tuple[pa.Schema, list[str]]:
    """A nested shard's schema as the long rows it is read as (query-level columns, then the
    candidate struct's fields), and what keeps it from being read so."""
    cand = columns.candidates_column
    if cand not in schema.names:
        return schema, [
            f"shard {uri!r} has no column {cand!r} (found: {', '.join(schema.names)}); set "
            "--candidates-column to the list of candidates, or --layout long for one row per pair"
        ]
    t = schema.field(cand).type
    if not _is_list_of_structs(t):
        return schema, [
            f"shard {uri!r} column {cand!r} is {t}, not a list of structs; --layout nested reads "
            f"list<struct<{columns.doc_id_column}, {columns.passage_column}, ...>> (one struct per "
            "candidate); point --candidates-column at such a column, or use --layout long"
        ]
    struct = t.value_type
    fields = [struct.field(i) for i in range(struct.num_fields)]
    names = [f.name for f in fields]
    problems = [
        f"shard {uri!r} column {cand!r}: its structs have no field {name!r} (fields: "
        f"{', '.join(names)}); set {flag}"
        for name, flag in (
            (columns.doc_id_column, "--doc-id-column"),
            (columns.passage_column, "--passage-column"),
        )
        if name not in names
    ]
    query_level = [f for f in schema if f.name != cand]
    clash = sorted(set(names) & {f.name for f in query_level})
    if clash:
        problems.append(
            f"shard {uri!r}: field(s) {clash} of the {cand!r} structs are also query-level columns; "
            "rename one of them (candidates are read as rows holding both)"
        )
    if len(set(names)) != len(names):
        problems.append(f"shard {uri!r} column {cand!r}: its structs repeat a field name ({names})")
    return pa.schema([*query_level, *fields]), problems


def flatten_candidates(table: pa.Table, columns: InputConfig) -> pa.Table:
    """One row per candidate: the query-level columns repeated, the struct's fields as columns
    (a null struct: all null), and `QUERY_ROW`. Null and empty lists give no rows."""
    cand = columns.candidates_column
    lists = table.column(cand).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(table.num_rows, dtype=np.int64), lengths)
    values = lists.flatten()  # honours null slots and offsets, as `lengths` does
    flat = table.drop_columns([cand]).take(pa.array(parents, pa.int64()))
    for i in range(values.type.num_fields):
        flat = flat.append_column(values.type.field(i).name, pc.struct_field(values, [i]))
    return flat.append_column(QUERY_ROW, pa.array(parents, pa.int64()))


def candidate_count(storage: Storage, uri: str, schema: pa.Schema, columns: InputConfig) -> int:
    """A nested shard's candidates (its pairs): the sum of its list lengths, read from the doc-id
    leaf alone where the writer used Parquet's standard list layout, else from the whole column."""
    cand = columns.candidates_column
    if cand not in schema.names or not _is_list_of_structs(schema.field(cand).type):
        return 0  # a contract problem, reported as such
    for selection in (f"{cand}.list.element.{columns.doc_id_column}", cand):
        total, found = 0, False
        for group in storage.iter_row_groups(uri, [selection]):
            if cand not in group.column_names:  # not this layout: no such leaf
                break
            found = True
            total += int(pc.sum(pc.list_value_length(group.column(cand))).as_py() or 0)
        if found:
            return total
    return 0


def read_pairs(storage: Storage, uri: str, columns: InputConfig) -> Iterator[pa.Table]:
    """The shard's pairs in row order as long tables (query id, query, passage, ...): its row
    groups, flattened when nested; with a prefilter, plus the column saying which not to score."""
    c = columns
    query_level = [c.query_id_column, c.query_column]
    if c.layout == "nested":  # a query is one row, so never split across row groups
        for group in storage.iter_row_groups(uri, [*query_level, c.candidates_column]):
            yield with_prefilter(flatten_candidates(group, c), c, QUERY_ROW)
        return
    wanted = [*query_level, c.passage_column]
    if c.prefilter_column is None:
        yield from storage.iter_row_groups(uri, wanted)
        return
    # a query's rows may span row groups: its best candidates are chosen over the whole shard
    schema, _ = storage.read_parquet_schema(uri)
    name = input_prefilter_column(schema.names, c)
    table = storage.read_table(uri, columns=list(dict.fromkeys([*wanted, name or c.prefilter_column])))
    pairs = with_prefilter(table, c, c.query_id_column)
    for start in range(0, pairs.num_rows, PREFILTER_SLICE_ROWS):
        yield pairs.slice(start, PREFILTER_SLICE_ROWS)


@dataclass(frozen=True)
class PairTexts:
    """One row group's pairs as the scorer sees them: the texts, and per row why it is not scored
    (a quarantine reason, or the prefilter's `NOT_SCORED`; None: it is scored)."""

    queries: list[str]
    passages: list[str]
    reasons: list[str | None]


def read_pair_texts(storage: Storage, uri: str, columns: InputConfig) -> Iterator[PairTexts]:
    """`read_pairs`' row groups as texts and reasons: what the tokenize stage encodes and the
    score store keys (pipeline/rerank/reuse/keys.py)."""
    c = columns
    for group in read_pairs(storage, uri, c):
        queries = group.column(c.query_column).to_pylist()
        passages = group.column(c.passage_column).to_pylist()
        reasons = reject_reasons(
            queries,
            passages,
            c.query_column,
            c.passage_column,
            query_ids=group.column(c.query_id_column).to_pylist(),
            query_id_column=c.query_id_column,
        )
        yield PairTexts(
            queries, passages, mark_not_scored(reasons, group)
        )  # --prefilter-top-k: as quarantined


@dataclass(frozen=True)
class FlatShard:
    """A shard as it is ranked: one row per candidate, earlier runs' columns renamed
    (--previous-prefix), and what it takes to give the ranked rows the input's layout back."""

    flat: pa.Table
    group_column: str  # what ranks together: the query id (long), the query's row (nested)
    queries: pa.Table | None = None  # nested: the query-level columns, one row per input row
    candidates_column: str = ""
    position: int = 0  # of the candidates column among the input's columns
    is_large_list: bool = False
    null_lists: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def nest(self, ranked: pa.Table) -> pa.Table:
        """Ranked candidates (grouped by query row, best first) back as one row per input row,
        each list holding the candidates' fields and the output's fields; long: unchanged."""
        if self.queries is None:
            return ranked
        fields = [c for c in ranked.column_names if c not in self.queries.column_names and c != QUERY_ROW]
        rows = ranked.column(QUERY_ROW).to_numpy()
        if np.any(np.diff(rows) < 0):
            raise RuntimeError("ranked candidates are not grouped in query-row order")
        counts = np.bincount(rows, minlength=self.queries.num_rows)
        offsets = pa.array(np.r_[0, np.cumsum(counts)], pa.int64() if self.is_large_list else pa.int32())
        values = pa.StructArray.from_arrays([ranked.column(c).combine_chunks() for c in fields], names=fields)
        build = pa.LargeListArray if self.is_large_list else pa.ListArray
        lists = build.from_arrays(offsets, values, mask=pa.array(self.null_lists, pa.bool_()))
        return self.queries.add_column(self.position, self.candidates_column, lists)

    def long_rows(self, rejected: pa.Table) -> pa.Table:
        """Quarantined rows as written to `_rejected/`: long rows, without the helper column."""
        return rejected.drop_columns([QUERY_ROW]) if QUERY_ROW in rejected.column_names else rejected


def _renamed(table: pa.Table, renames: dict[str, str]) -> pa.Table:
    return table.rename_columns([renames.get(n, n) for n in table.column_names]) if renames else table


def flatten_shard(table: pa.Table, columns: InputConfig) -> FlatShard:
    """The whole input shard as the rows that are ranked (see `FlatShard`)."""
    prefix = columns.previous_prefix
    if columns.layout == "long":
        return FlatShard(
            _renamed(table, previous_renames(table.column_names, prefix)), columns.query_id_column
        )
    cand = columns.candidates_column
    flat = flatten_candidates(table, columns)
    renames = previous_renames([n for n in flat.column_names if n != QUERY_ROW], prefix)
    lists = table.column(cand)
    return FlatShard(
        _renamed(flat, renames),
        QUERY_ROW,
        queries=_renamed(table.drop_columns([cand]), renames),
        candidates_column=cand,
        position=table.column_names.index(cand),
        is_large_list=pa.types.is_large_list(lists.type),
        null_lists=lists.is_null().to_numpy(zero_copy_only=False),
    )
