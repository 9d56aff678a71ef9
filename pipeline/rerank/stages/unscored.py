"""The write stage's side of a cascade (`pipeline/rerank/input/cascade.py`): the prefilter's
unscored rows leave the quarantine and are published after the scored ones with null scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rerank.config import InputConfig
from pipeline.rerank.input.cascade import (
    NOT_SCORED,
    UNSCORED_COLUMN,
    descending_rank,
    output_prefilter_column,
)
from pipeline.rerank.stages.shard_scores import ShardScores


def split_unscored(scored: ShardScores) -> tuple[ShardScores, np.ndarray]:
    """The shard's scores with the prefilter's rows taken out of its quarantine (their scores NaN),
    and a mask of those rows."""
    rows = [r for r, why in scored.rejected.items() if why == NOT_SCORED]
    mask = np.zeros(len(scored.scores), bool)
    if not rows:
        return scored, mask
    mask[rows] = True
    scores = scored.scores.copy()
    scores[mask] = np.nan
    rejected = {r: why for r, why in scored.rejected.items() if why != NOT_SCORED}
    return dataclasses.replace(scored, scores=scores, rejected=rejected), mask


def with_unscored(kept: pa.Table, unscored: np.ndarray) -> pa.Table:
    return kept.append_column(UNSCORED_COLUMN, pa.array(unscored, pa.bool_()))


def unscored_order(kept: pa.Table, columns: InputConfig) -> np.ndarray | None:
    """The order of unscored rows for `rank_table`: by the prefilter column, highest first."""
    name = output_prefilter_column(kept.column_names, columns)
    return None if name is None else descending_rank(kept.column(name).combine_chunks())


def count_unscored(ranked: pa.Table) -> int:
    """How many of the ranked rows (those --top-k kept) the prefilter left unscored."""
    if UNSCORED_COLUMN not in ranked.column_names:
        return 0
    return int(pc.sum(ranked.column(UNSCORED_COLUMN)).as_py() or 0)


def null_unscored(ranked: pa.Table, input_columns: list[str]) -> pa.Table:
    """Ranked rows without the helper column; every column ranking added but `rank` is null on the
    prefilter's unscored rows (NaN scores become nulls: they were never computed)."""
    if UNSCORED_COLUMN not in ranked.column_names:
        return ranked
    mask = ranked.column(UNSCORED_COLUMN).combine_chunks()
    ranked = ranked.drop_columns([UNSCORED_COLUMN])
    if not pc.any(mask).as_py():
        return ranked
    for i, name in enumerate(ranked.column_names):
        if name not in input_columns and name != "rank":
            column = ranked.column(name)
            ranked = ranked.set_column(i, name, pc.if_else(mask, pa.nulls(len(mask), column.type), column))
    return ranked
