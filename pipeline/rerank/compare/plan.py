"""Planning a run's comparisons on the driver, with the other checks and before any write: the
earlier run to diff against (`--diff-against`, else the first `--reuse` source), which of its
shards each shard reads, and the judged queries (`--qrels`), refused (exit 2) when they cannot be
read or judge no query of the corpus, and the first-stage column, refused when a shard lacks it."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pipeline.errors import RerankError
from pipeline.io import Storage
from pipeline.rerank.compare.previous import open_previous, plan_reads, routing_digest
from pipeline.rerank.compare.qrels import judged_query_hashes, load_qrels
from pipeline.rerank.compare.shard import Comparison
from pipeline.rerank.config import JobConfig
from pipeline.rerank.input.discovery import PendingShard, query_hashes_by_shard
from pipeline.rerank.input.layout import flat_schema

log = logging.getLogger(__name__)

SCHEMA_READERS = 32
NO_DIFF = "none"  # --diff-against none: no change feed (not even against a --reuse source)


def diff_source(cfg: JobConfig) -> str | None:
    """The earlier run this one is compared with: --diff-against, else the first --reuse source;
    `--diff-against none`: no change feed, whatever --reuse says."""
    given = cfg.compare.diff_against
    if given is not None and given.strip().lower() == NO_DIFF:
        return None
    return given or (cfg.output.reuse[0] if cfg.output.reuse else None)


def plan_comparison(
    cfg: JobConfig,
    storage: Storage,
    pending: list[PendingShard],
    done: dict[str, dict[str, Any]],
    split_queries: int = 0,
) -> Comparison:
    """What each shard of this run is compared with; raises RerankError on bad --qrels, a
    first-stage column a shard lacks, or a change feed over split queries (`split_queries`: how
    many --allow-split-queries let through)."""
    c, output = cfg.compare, cfg.output.uri
    current = query_hashes_by_shard(pending, done)
    cmp = Comparison(epsilon=c.change_epsilon, first_stage_column=c.first_stage_column)
    if c.qrels is not None:
        qrels = load_qrels(storage, c.qrels)
        corpus = np.unique(np.concatenate([*current.values(), np.zeros(0, np.uint64)]))
        if not np.isin(judged_query_hashes(qrels), corpus).any():
            raise RerankError(
                f"--qrels {c.qrels}: none of its {qrels.queries:,} judged queries is in INPUT "
                f"(query ids are compared as text, e.g. {qrels.table.column('query_id')[0].as_py()!r}); "
                f"pass the qrels of this corpus, or check --query-id-column ({cfg.input.query_id_column!r})"
            )
        cmp.qrels_uri, cmp.qrels_digest, cmp._qrels = c.qrels, qrels.digest, qrels
        log.info(
            "--qrels %s: %s judgement(s) of %s queries",
            c.qrels,
            f"{qrels.table.num_rows:,}",
            f"{qrels.queries:,}",
        )
        if c.first_stage_column is not None:
            check_first_stage_column(storage, pending, cfg)
    against = diff_source(cfg)
    if against is not None and split_queries:
        raise RerankError(
            f"--diff-against {against}: {split_queries:,} query id(s) are in more than one shard "
            "(--allow-split-queries), so a query's rows cannot be compared in one place; keep each "
            "query's candidates in one shard, or drop --diff-against (and --reuse's default of it)"
        )
    prev = open_previous(storage, against, output) if against is not None else None
    if prev is not None:
        cmp.against = against
        cmp.reads, cmp.gone = plan_reads(prev, current)
        cmp.routing = routing_digest(prev, current)
        cmp.previous_quality = prev.quality
        log.info("comparing with %s: %d earlier shard(s)", against, len(prev.relpaths))
    return cmp


def check_first_stage_column(storage: Storage, pending: list[PendingShard], cfg: JobConfig) -> None:
    """Every pending shard has the --first-stage-column (in its candidates, nested); else one error."""
    column, columns = cfg.compare.first_stage_column, cfg.input
    shards = [p.shard for p in pending if p.num_rows > 0]

    def lacks(uri: str) -> bool:
        schema, _ = storage.read_parquet_schema(uri)
        flat, _ = flat_schema(uri, schema, columns)
        return column not in flat.names

    with ThreadPoolExecutor(SCHEMA_READERS) as pool:
        missing = [
            s.uri for s, bad in zip(shards, pool.map(lambda s: lacks(s.uri), shards), strict=True) if bad
        ]
    if missing:
        raise RerankError(
            f"--first-stage-column {column!r}: {len(missing)} shard(s) have no such column (e.g. "
            f"{missing[0]!r}); name the column holding the first-stage score, or drop the flag to use "
            "the input row order"
        )
