"""A run's comparisons at its end, once every shard is done and before `_SUCCESS`:

1. the done shards whose comparisons are missing or were made otherwise (`shard.stale`) are
   compared now, from their published output (no scoring); their markers are rewritten;
2. the earlier shards whose path this run has no shard of get their change file of removed rows;
   change files no shard of this run accounts for (an earlier attempt's) are removed;
3. the figures: change counts per kind and per file, the ranking drift (merged from the markers'
   fixed-size summaries), the quality of every judged query (`_rerank/quality.parquet`) and its
   summary, and the gate's verdict (`_rerank/quality.json`).

What `_SUCCESS`, the report and `rerank status` say of the comparison comes from `finish`'s result.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.compare.changes import CHANGE_KINDS
from pipeline.rerank.compare.drift import describe, merge_summaries
from pipeline.rerank.compare.gate import gate_checks, verdict, write_verdict
from pipeline.rerank.compare.previous import ranked_rows
from pipeline.rerank.compare.quality import quality_summary
from pipeline.rerank.compare.shard import Comparison, compare_shard, quality_uri, removed_only, stale
from pipeline.rerank.config import InputConfig, JobConfig
from pipeline.rerank.input.layout import flatten_shard
from pipeline.rerank.input.quarantine import table_reject_reasons
from pipeline.rerank.input.split_queries import decode_hashes, query_id_hashes
from pipeline.rerank.output.checkpoint import marker_uri, shard_output_uri
from pipeline.rerank.output.paths import CHANGES, QUALITY_JSON, QUALITY_PIECES, QUALITY_TABLE

log = logging.getLogger(__name__)

READERS = 16  # parallel reads and writes of small files on object storage


def compare_done_shard(
    cmp: Comparison, storage: Storage, cfg: JobConfig, shard: ShardFile, marker: dict[str, Any]
) -> dict[str, Any]:
    """A done shard compared from its published output (and its input, for the first-stage order);
    returns its marker with the new figures, written back."""
    columns, output = cfg.input, cfg.output.uri
    if "query_id_hashes" not in marker:  # the summary a writer returned: the marker keeps them
        marker = storage.read_json(marker_uri(output, shard.relpath)) or marker
    ranked = ranked_rows(storage, shard_output_uri(output, shard.relpath), columns)
    first_stage = kept_rows(storage, shard.uri, columns) if cmp.qrels_uri else None
    encoded = marker.get("query_id_hashes")  # a marker of an older version may lack them
    own = decode_hashes(encoded) if encoded else query_id_hashes(ranked.column(columns.query_id_column))
    fields = compare_shard(cmp, storage, output, shard.relpath, ranked, first_stage, own, columns)
    updated = {**marker, **fields}
    storage.write_json_atomic(marker_uri(output, shard.relpath), updated)
    return updated


def kept_rows(storage: Storage, uri: str, columns: InputConfig) -> pa.Table:
    """A shard's input rows the job scores, in input order (its quarantined rows left out, as the
    write stage leaves them out of the first-stage order)."""
    flat = flatten_shard(storage.read_table(uri), columns).flat
    reasons = table_reject_reasons(flat, columns)
    return flat.filter(pa.array([r is None for r in reasons], pa.bool_()))


def refresh_done(
    cmp: Comparison, storage: Storage, cfg: JobConfig, shards: list[ShardFile], markers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Step 1: every marker, those whose comparisons were stale made current."""
    by_path = {s.relpath: s for s in shards}
    todo = [i for i, m in enumerate(markers) if stale(m, cmp)]
    if not todo:
        return markers
    log.info("comparing %d shard(s) published before with the current settings (no scoring)", len(todo))
    with ThreadPoolExecutor(READERS) as pool:
        fresh = pool.map(
            lambda i: compare_done_shard(cmp, storage, cfg, by_path[markers[i]["shard"]], markers[i]), todo
        )
        updated = dict(zip(todo, fresh, strict=True))
    return [updated.get(i, m) for i, m in enumerate(markers)]


def change_feed(
    cmp: Comparison, storage: Storage, cfg: JobConfig, markers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Step 2 and the change counts: {against, epsilon, totals, files} for `_SUCCESS`."""
    output = cfg.output.uri
    files = [{"path": m["shard"], **{k: m["changes"][k] for k in CHANGE_KINDS}} for m in markers]
    with ThreadPoolExecutor(READERS) as pool:
        files += list(pool.map(lambda r: removed_only(cmp, storage, output, r, cfg.input), cmp.gone))
    root = join(output, CHANGES)
    kept = {f["path"] for f in files}
    storage.remove_files(root, [rel for rel in storage.list_files(root) if rel not in kept])
    files.sort(key=lambda f: f["path"])
    totals = {k: sum(f[k] for f in files) for k in CHANGE_KINDS}
    return {"against": cmp.against, "epsilon": cmp.epsilon, "totals": totals, "files": files}


def quality_table(storage: Storage, output: str, markers: list[dict[str, Any]]) -> pa.Table:
    """Every judged query's figures, from the shards' pieces, as `_rerank/quality.parquet`."""
    with ThreadPoolExecutor(READERS) as pool:
        pieces = list(pool.map(lambda m: storage.read_table(quality_uri(output, m["shard"])), markers))
    table = pa.concat_tables(pieces) if pieces else pa.table({"query_id": pa.array([], pa.string())})
    table = table.sort_by("query_id") if table.num_rows else table
    storage.write_parquet_atomic(join(output, QUALITY_TABLE), table)
    return table


def finish(
    cmp: Comparison, storage: Storage, cfg: JobConfig, shards: list[ShardFile], markers: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Steps 1-3; returns the markers (made current) and the comparison's figures: `changes`,
    `drift`, `quality` (with the gate's verdict under `quality.gate`), each only where asked for."""
    output = cfg.output.uri
    if cmp.against is None:
        storage.remove(join(output, CHANGES))  # an earlier run's, against something else
    if cmp.qrels_uri is None:  # an earlier run's figures, with qrels this run was not given
        for name in (QUALITY_PIECES, QUALITY_TABLE, QUALITY_JSON):
            storage.remove(join(output, name))
    if not cmp.active:
        return markers, {}
    markers = refresh_done(cmp, storage, cfg, shards, markers)
    figures: dict[str, Any] = {}
    if cmp.against is not None:
        figures["changes"] = change_feed(cmp, storage, cfg, markers)
        figures["drift"] = describe(merge_summaries([m["drift"] for m in markers if "drift" in m]))
    if cmp.qrels_uri is not None:
        summary = quality_summary(quality_table(storage, output, markers))
        checks = gate_checks(cfg.compare, summary, cmp.previous_quality, cmp.against)
        result = verdict(checks, summary, cmp.qrels_uri)
        write_verdict(storage, output, result)
        gate = {k: result[k] for k in ("passed", "failed", "checks")}
        figures["quality"] = {**summary, "first_stage_column": cmp.first_stage_column, "gate": gate}
    return markers, figures
