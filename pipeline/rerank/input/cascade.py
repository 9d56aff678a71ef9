"""Cascades: one run's output as the next run's input, and scoring only each query's best candidates.

- `--previous-prefix P`: columns an earlier run of this job wrote (`score`, `rank`, `score_norm`,
  `score_l<K>`, `chunks`, ...) are accepted in the input and kept as `P<name>`; without the flag
  they are refused (exit 2), as before.
- `--prefilter-column COL --prefilter-top-k N`: within each query only the N candidates with the
  highest COL are scored (ties in input order, nulls last; candidates that cannot be scored, which
  are quarantined, take no place). The others ride the reject channel with the `NOT_SCORED` reason
  (so the tokenize, score and assembly stages skip them as they skip quarantined rows) and are
  published after the scored ones, with null scores and ranks N+1, N+2, ... in COL order.

Pure pyarrow/numpy, no Ray.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rerank.config import BEST_CHUNK_CHAR, CHUNKS, REJECT_REASON, InputConfig, reserved_columns
from pipeline.rerank.input.quarantine import table_reject_reasons

# every column a run of this job adds to its output (whatever its model, layers or chunking)
PREVIOUS_OUTPUT = re.compile(rf"score(_l\d+)?(_norm)?|rank|{CHUNKS}|{BEST_CHUNK_CHAR}|{REJECT_REASON}")
NOT_SCORED = "not scored: outside --prefilter-top-k"  # a reason that is not a quarantine
HELPER_PREFIX = "__rerank_"  # columns that exist only while a shard is published
UNSCORED_COLUMN = HELPER_PREFIX + "unscored"


def is_previous_output(name: str) -> bool:
    return PREVIOUS_OUTPUT.fullmatch(name) is not None


def previous_renames(names: list[str], prefix: str | None) -> dict[str, str]:
    """Input column -> its name in the output, for every earlier run's output column."""
    if prefix is None:
        return {}
    return {n: prefix + n for n in names if is_previous_output(n)}


def name_problems(uri: str, names: list[str], score_columns: list[str], prefix: str | None) -> list[str]:
    """Input columns the job writes (refused without --previous-prefix, renamed with it), names
    the renaming would give twice, and our helper names."""
    renames = previous_renames(names, prefix)
    problems = [
        f"shard {uri!r} already has a column {name!r}, which the job writes; rename or drop it, or pass "
        f"--previous-prefix PREFIX to keep it as PREFIX{name} (e.g. --previous-prefix stage1_ when "
        "this input is an earlier run's output)"
        for name in reserved_columns(score_columns)
        if name in names and name not in renames
    ]
    problems += [
        f"shard {uri!r} has both {old!r} and {new!r}: --previous-prefix {prefix} would rename {old!r} "
        "onto the other; choose another prefix (e.g. stage2_)"
        for old, new in renames.items()
        if new in names
    ]
    problems += [
        f"shard {uri!r} column {n!r}: names starting with {HELPER_PREFIX!r} are the job's own; rename it"
        for n in names
        if n.startswith(HELPER_PREFIX)
    ]
    return problems


def input_prefilter_column(names: list[str], columns: InputConfig) -> str | None:
    """The prefilter column's name among the input's `names`: as given, or, with --previous-prefix,
    the earlier run's column it names (`stage1_score` -> `score`)."""
    col, prefix = columns.prefilter_column, columns.previous_prefix
    if col is None or col in names:
        return col
    if prefix and col.startswith(prefix) and is_previous_output(col[len(prefix) :]):
        old = col[len(prefix) :]
        return old if old in names else None
    return None


def output_prefilter_column(names: list[str], columns: InputConfig) -> str | None:
    """The prefilter column's name among the renamed columns `names` (`score` -> `stage1_score`)."""
    col, prefix = columns.prefilter_column, columns.previous_prefix
    if col is None or col in names:
        return col
    return prefix + col if prefix and prefix + col in names else None


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def prefilter_problems(uri: str, schema: pa.Schema, columns: InputConfig) -> list[str]:
    """The prefilter column must exist (per candidate) and hold numbers."""
    if columns.prefilter_column is None:
        return []
    name = input_prefilter_column(schema.names, columns)
    if name is None:
        return [
            f"shard {uri!r} has no column {columns.prefilter_column!r} to prefilter by (found: "
            f"{', '.join(schema.names)}); set --prefilter-column"
        ]
    t = schema.field(name).type
    if not _is_number(t):
        return [
            f"shard {uri!r} column {name!r} is {t}, not a number to prefilter by; point "
            "--prefilter-column at a numeric column (an earlier stage's score, a BM25 score, ...)"
        ]
    return []


def descending_rank(values: pa.Array) -> np.ndarray:
    """Each value's place in a stable sort, highest first, nulls (and NaN) last: 0, 1, ..."""
    order = pc.array_sort_indices(values, order="descending", null_placement="at_end").to_numpy()
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    return rank


def group_codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a grouping column, in order of first appearance (nulls a group of their own).
    A dictionary column is decoded first: encoding it again would keep its dictionary's order and
    leave its null indices without a code."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)


def prefilter_selection(groups: np.ndarray, values: pa.Array, eligible: np.ndarray, top_k: int) -> np.ndarray:
    """Per group, the `top_k` eligible rows with the highest value (ties in row order, nulls last)."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, bool)
    order = np.lexsort((descending_rank(values), ~eligible, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    place = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    selected = np.zeros(n, bool)
    selected[order] = (place < top_k) & eligible[order]
    return selected


def with_prefilter(pairs: pa.Table, columns: InputConfig, group_column: str) -> pa.Table:
    """Long pairs (whole queries) plus `UNSCORED_COLUMN`: the rows the prefilter leaves unscored."""
    top_k = columns.prefilter_top_k
    if columns.prefilter_column is None or top_k is None:
        return pairs
    name = input_prefilter_column(pairs.column_names, columns)
    if name is None:  # checked before any scoring (discovery); a shard changed since then
        raise ValueError(f"no prefilter column {columns.prefilter_column!r} in {pairs.column_names}")
    reasons = table_reject_reasons(pairs, columns)
    eligible = np.array([r is None for r in reasons], bool)
    values = pairs.column(name).combine_chunks()
    selected = prefilter_selection(group_codes(pairs.column(group_column)), values, eligible, top_k)
    return pairs.append_column(UNSCORED_COLUMN, pa.array(eligible & ~selected))


def mark_not_scored(reasons: list[str | None], pairs: pa.Table) -> list[str | None]:
    """The tokenize stage's reasons per row, with `NOT_SCORED` for the rows the prefilter leaves."""
    if UNSCORED_COLUMN not in pairs.column_names:
        return reasons
    unscored = pairs.column(UNSCORED_COLUMN).to_pylist()
    return [NOT_SCORED if skip and r is None else r for r, skip in zip(reasons, unscored, strict=True)]
