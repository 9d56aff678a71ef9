"""Shard-level checkpointing in OUTPUT (the datatrove pattern), on the same storage as the data:
the run manifest first, a done-marker after each shard, `_SUCCESS` last (the layout:
`pipeline/rerank/output/paths.py`).

A shard counts as done only if its marker exists, carries this run's fingerprint and still
describes the same input file (size and version tag). Everything else is redone and overwritten.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.errors import OutputStateError
from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output.bookkeeping import (
    MARKER_RECORD,
    REPORT_RECORD,
    RUN_RECORD,
    SUCCESS_RECORD,
    Damaged,
    read_record,
)
from pipeline.rerank.output.paths import (
    CHANGES,
    LEASE,
    MARKERS,
    OPTIONAL_COUNTS,
    OWN,
    REJECTED,
    REPORT_JSON,
    RUN_MANIFEST,
    SUCCESS,
)

log = logging.getLogger(__name__)

MARKER_READERS = 32  # parallel marker reads when a rerun checks which shards are done
_TEMP = re.compile(r"\.tmp-[0-9a-f]{32}-")  # the temp file of an atomic local write (pipeline/io.py)


def is_temp_file(relpath: str) -> bool:
    """A temp file one of our local writes left when cut short by a crash."""
    return _TEMP.match(relpath.rsplit("/", 1)[-1]) is not None


def own_files(storage: Storage, output: str, files: list[str]) -> list[str]:
    """What earlier runs of the job wrote in OUTPUT's listing `files`, and nothing else: the output
    shards its done-markers and `_SUCCESS` name, `_rerank/` (but the lease), `_rejected/`,
    `_SUCCESS` and temp files of its writes. A user's notes, analysis or `.git/` are not in it.
    A damaged `_SUCCESS` names no shards (the markers name them)."""
    marker_dir = MARKERS + "/"
    shards = {
        p[len(marker_dir) : -len(".json")] for p in files if p.startswith(marker_dir) and p.endswith(".json")
    }
    success = read_record(storage, join(output, SUCCESS), SUCCESS_RECORD) if SUCCESS in files else None
    if isinstance(success, Damaged):
        log.warning("%s; the done-markers name the shards to remove", success)
    elif success is not None:
        shards |= {s["path"] for s in success["shards"]}
    return [
        p
        for p in files
        if p in shards
        or (p.startswith(OWN) and p != LEASE)
        or p.startswith(REJECTED + "/")
        or p.startswith(CHANGES + "/")
        or p == SUCCESS
        or is_temp_file(p)
    ]


def marker_uri(output: str, relpath: str) -> str:
    return join(output, f"{MARKERS}/{relpath}.json")


def shard_output_uri(output: str, relpath: str) -> str:
    return join(output, relpath)


def rejected_uri(output: str, relpath: str) -> str:
    """Quarantined rows of a shard: same relative path under OUTPUT/_rejected/."""
    return join(output, f"{REJECTED}/{relpath}")


def check_output(storage: Storage, output: str, fp: dict[str, Any], digest: str, fresh: bool) -> list[str]:
    """Checks, without writing anything, that OUTPUT may receive this run. Returns its listing."""
    files = storage.list_files(output)
    if RUN_MANIFEST not in files:
        existing = [p for p in files if not p.startswith(OWN) and not p.rsplit("/", 1)[-1].startswith(".")]
        if existing:
            raise OutputStateError(
                f"OUTPUT {output!r} already holds {len(existing)} file(s) (e.g. {existing[0]!r}) "
                "that offline-rerank did not write; choose an empty or new OUTPUT"
            )
        return files
    if fresh:  # discards the progress, whatever run.json says (or whether it can be read)
        return files
    manifest = read_record(storage, join(output, RUN_MANIFEST), RUN_RECORD) or {}
    if isinstance(manifest, Damaged):
        raise manifest.error()
    if manifest.get("digest") != digest:
        old_fp = manifest.get("fingerprint", {})
        keys = [*fp, *(k for k in old_fp if k not in fp)]  # an option only one run set shows too
        diff = {k: (old_fp.get(k), fp.get(k)) for k in keys if old_fp.get(k) != fp.get(k)}
        changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        raise OutputStateError(
            f"OUTPUT {output!r} holds progress of a run with a different configuration "
            f"({changes}); rerun with the same settings to resume, or pass --fresh to discard it"
        )
    return files


def claim_output(
    storage: Storage, output: str, fp: dict[str, Any], digest: str, fresh: bool, files: list[str]
) -> None:
    """The run's first writes, after `check_output` passed: honours --fresh, removes temp files a
    crashed local write left, and records the run fingerprint."""
    if fresh and RUN_MANIFEST in files:
        doomed = own_files(storage, output, files)
        log.info(
            "--fresh: removing %d file(s) of earlier runs in %s (only what the job wrote)",
            len(doomed),
            output,
        )
        storage.remove_files(output, doomed)
    else:  # temp files of a local write cut short by a crash; never a published file
        storage.remove_files(
            output, [p for p in files if is_temp_file(p)] + damaged_report(storage, output, files)
        )
    if fresh or RUN_MANIFEST not in files:
        storage.write_json_atomic(
            join(output, RUN_MANIFEST), {"digest": digest, "fingerprint": fp, "created_at": time.time()}
        )


def record_reuse(storage: Storage, output: str, given: list[str], used: list[str]) -> None:
    """Records in run.json the --reuse sources this run was given and those it took scores from
    (not part of the fingerprint: reuse changes which pairs are scored, not their scores)."""
    uri = join(output, RUN_MANIFEST)
    manifest = read_record(storage, uri, RUN_RECORD)
    if manifest is None or isinstance(manifest, Damaged):
        return
    reuse = {"given": given, "used": used}
    if manifest.get("reuse", {"given": [], "used": []}) != reuse:
        storage.write_json_atomic(uri, {**manifest, "reuse": reuse})


def damaged_report(storage: Storage, output: str, files: list[str]) -> list[str]:
    """[report.json] if it is damaged: a run with nothing to score keeps the last report, so it is
    removed now (a damaged `_SUCCESS` and shard list are written again by every run anyway)."""
    report = read_record(storage, join(output, REPORT_JSON), REPORT_RECORD) if REPORT_JSON in files else None
    if not isinstance(report, Damaged):
        return []
    log.warning("%s; removing it (the next run that scores writes a new one)", report)
    return [REPORT_JSON]


def prepare_output(storage: Storage, output: str, fp: dict[str, Any], digest: str, fresh: bool) -> None:
    """`check_output` then `claim_output`: OUTPUT is checked, then taken for this run."""
    claim_output(storage, output, fp, digest, fresh, check_output(storage, output, fp, digest, fresh))


def read_markers(storage: Storage, output: str, relpaths: list[str]) -> list[dict[str, Any] | Damaged | None]:
    """The done-markers of these shards (None: there is none), read in parallel."""
    with ThreadPoolExecutor(MARKER_READERS) as pool:  # object storage: latency per read, not bandwidth
        return list(
            pool.map(lambda rel: read_record(storage, marker_uri(output, rel), MARKER_RECORD), relpaths)
        )


def load_done(
    storage: Storage,
    output: str,
    shards: list[ShardFile],
    digest: str,
    files: list[str] | None = None,
    damaged: list[Damaged] | None = None,
) -> dict[str, dict[str, Any]]:
    """Markers of shards that are done for this run, whose input is unchanged and whose output
    shard still exists, by relpath. `files` is OUTPUT's listing (`check_output`'s), read once;
    without it, OUTPUT is listed here. A damaged marker means not done (added to `damaged`)."""
    files = storage.list_files(output) if files is None else files
    present = set(files)
    marked = [shard for shard in shards if f"{MARKERS}/{shard.relpath}.json" in present]
    markers = read_markers(storage, output, [shard.relpath for shard in marked])
    done = {}
    for shard, marker in zip(marked, markers, strict=True):
        if isinstance(marker, Damaged):
            log.warning("%s; %s", marker, marker.consequence)
            if damaged is not None:
                damaged.append(marker)
            continue
        if marker is None or marker["digest"] != digest:
            continue
        if marker["input"] != {"size": shard.size, "version": shard.version}:
            log.warning("input %s changed since it was published; redoing it", shard.uri)
            continue
        if shard.relpath not in present:
            log.warning(
                "output shard %s is missing (deleted?); redoing it", shard_output_uri(output, shard.relpath)
            )
            continue
        done[shard.relpath] = marker
    return done


def write_marker(
    storage: Storage, output: str, shard: ShardFile, digest: str, stats: dict[str, Any]
) -> dict[str, Any]:
    marker = {
        "shard": shard.relpath,
        "input": {"size": shard.size, "version": shard.version},
        "digest": digest,
        "published_at": time.time(),
        **stats,
    }
    storage.write_json_atomic(marker_uri(output, shard.relpath), marker)
    return marker


def work_totals(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the shards' scoring took, summed over their markers: tokens and padding, windows
    (--long-passages chunk: scored, and past --max-chunks), pairs scored and reused (--reuse) and
    the score store's size; a count no marker has is left out."""
    tokens = sum(m.get("tokens", 0) for m in markers)
    padded = sum(m.get("padded_tokens", 0) for m in markers)
    return {
        "tokens": tokens,
        "padded_tokens": padded,
        "padding_efficiency": round(tokens / padded, 4) if padded else None,
        **{k: sum(m.get(k, 0) for m in markers) for k in OPTIONAL_COUNTS if any(k in m for m in markers)},
    }


def write_success(
    storage: Storage,
    output: str,
    markers: list[dict[str, Any]],
    fp: dict[str, Any],
    digest: str,
    summary: dict[str, Any],
    store: dict[str, Any] | None = None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes the `_SUCCESS` manifest: every output shard with its row counts, totals, fingerprint,
    what the run's score store was made with (`store`, pipeline/rerank/reuse/store.py), and the
    comparison's figures (`changes`: the change files with their counts, `drift`, `quality`:
    pipeline/rerank/compare/finish.py).

    `reconciled` states that every input row is in an output shard, in a quarantine shard, or was
    dropped by top-k: rows_in = rows_out + rows_rejected + rows_dropped_top_k, per shard and in all.
    """
    counts = (
        "rows_in",
        "rows_out",
        "rows_rejected",
        "rows_dropped_top_k",
        "duplicate_pairs",
        "rows_not_scored",
        "rows_not_scored_dropped_top_k",  # of those, the ones --top-k dropped
    )
    shards = [
        {"path": m["shard"], **{k: m.get(k, 0) for k in counts}}
        for m in sorted(markers, key=lambda m: m["shard"])
    ]
    totals = {k: sum(s[k] for s in shards) for k in counts}
    reconciled = all(
        s["rows_in"] == s["rows_out"] + s["rows_rejected"] + s["rows_dropped_top_k"] for s in shards
    )
    manifest = {
        "shards": shards,
        "totals": {
            "shards": len(shards),
            **totals,
            "reconciled": reconciled,
            **work_totals(markers),
        },
        "fingerprint": fp,
        "digest": digest,
        "last_run": summary,
        "finished_at": time.time(),
    }
    if store is not None:
        manifest["score_store"] = store
    manifest |= comparison or {}
    storage.write_json_atomic(join(output, SUCCESS), manifest)
    return manifest
