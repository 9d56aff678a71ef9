"""Where a run of an OUTPUT stands, read from OUTPUT alone (no Ray, any storage): the run that owns
it (run.json), the shards done (their markers, or `_SUCCESS`), pending (against INPUT, or the list
the last run wrote: `_rerank/shards.json`) and failed (the last run's report.json), the row
counts, the last run's summary, `_SUCCESS`, and the lease holder with the age of its heartbeat.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, paths
from pipeline.rerank.output.lease import is_gone


def write_shard_list(storage: Storage, output: str, input_uri: str, shards: list[ShardFile]) -> None:
    """Records the run's input shards, so that `rerank status` can tell what is pending without INPUT."""
    storage.write_json_atomic(
        join(output, paths.SHARD_LIST),
        {
            "input": input_uri,
            "written_at": time.time(),
            "shards": [{"path": s.relpath, "size": s.size, "version": s.version} for s in shards],
        },
    )


@dataclass
class LeaseState:
    holder: str
    heartbeat_age_s: float | None
    ttl_s: float | None
    is_stale: bool  # older than its TTL, or its process is known to be gone: the next start takes it
    is_process_gone: bool


@dataclass
class RunStatus:
    """Everything `rerank status` prints; `state` is complete | incomplete | no_run."""

    output: str
    state: str
    model: str | None = None
    dtype: str | None = None
    kind: str | None = None
    digest: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    has_success: bool = False
    shards_total: int | None = None  # None: unknown (no INPUT and no shard list)
    shards_done: int = 0
    pending: list[str] | None = None
    failed: dict[str, str] = field(default_factory=dict)  # pending shards the last run failed
    pending_from: str | None = None  # where the shard list came from
    rows: dict[str, int] = field(default_factory=dict)
    last_run: dict[str, Any] = field(default_factory=dict)  # its outcome, times and summary
    lease: LeaseState | None = None
    report: str | None = None  # URI of the last run's report.html
    notes: list[str] = field(default_factory=list)

    @property
    def is_complete(self) -> bool:
        return self.state == "complete"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _listed_shards(
    storage: Storage, output: str, input_uri: str | None, files: set[str]
) -> tuple[list[ShardFile] | None, str | None]:
    """The shards the run covers: INPUT listed now, else the last run's shard list (or None)."""
    if input_uri is not None:
        return storage.list_shards(input_uri), f"INPUT {input_uri}"
    if paths.SHARD_LIST not in files:
        return None, None
    record = storage.read_json(join(output, paths.SHARD_LIST)) or {}
    root = str(record.get("input", ""))
    shards = [
        ShardFile(join(root, s["path"]), s["path"], int(s.get("size", 0)), str(s.get("version", "")))
        for s in record.get("shards", [])
    ]
    return shards, f"the last run's list of {record.get('input', 'INPUT')}"


def _lease(storage: Storage, output: str, now: float) -> LeaseState | None:
    record = storage.read_json(join(output, paths.LEASE))
    if not record:
        return None
    beat = record.get("heartbeat_at")
    age = round(now - float(beat), 1) if beat is not None else None
    ttl = float(record["ttl_s"]) if record.get("ttl_s") is not None else None
    gone = is_gone(record.get("process"))
    stale = gone or (age is not None and ttl is not None and age >= ttl)
    return LeaseState(str(record.get("owner")), age, ttl, stale, gone)


def _done_markers(
    storage: Storage, output: str, digest: str, shards: list[ShardFile] | None, files: list[str]
) -> list[dict[str, Any]]:
    """Markers of the shards done for this fingerprint: checked against the shards (input
    unchanged, output present) when they are known, else every marker with the digest."""
    if shards is not None:
        return list(checkpoint.load_done(storage, output, shards, digest, files).values())
    prefix = paths.MARKERS + "/"
    present = set(files)
    relpaths = [p[len(prefix) : -len(".json")] for p in files if p.startswith(prefix) and p.endswith(".json")]
    relpaths = [r for r in relpaths if not checkpoint.is_temp_file(r + ".json") and r in present]
    with ThreadPoolExecutor(checkpoint.MARKER_READERS) as pool:  # object storage: latency per read
        markers = pool.map(lambda r: storage.read_json(checkpoint.marker_uri(output, r)), relpaths)
        # no input to compare with: the digest and the output shard decide
        return [m for m in markers if m and m.get("digest") == digest]


def run_status(
    storage: Storage, output: str, input_uri: str | None = None, now: float | None = None
) -> RunStatus:
    """The status of OUTPUT's run (state `no_run` when OUTPUT holds no run.json)."""
    now = time.time() if now is None else now
    listing = storage.list_files(output)
    files = set(listing)
    status = RunStatus(output=output, state="no_run", lease=_lease(storage, output, now))
    if paths.RUN_MANIFEST not in files:
        return status
    manifest = storage.read_json(join(output, paths.RUN_MANIFEST)) or {}
    fp = manifest.get("fingerprint") or {}
    status.fingerprint, status.digest = fp, manifest.get("digest")
    status.model, status.dtype, status.kind = fp.get("model"), fp.get("dtype"), fp.get("kind", "encoder")
    status.created_at = manifest.get("created_at")
    success = storage.read_json(join(output, paths.SUCCESS)) if paths.SUCCESS in files else None
    if success is not None and success.get("digest") != status.digest:
        status.notes.append("_SUCCESS is from a run with another fingerprint; ignored")
        success = None
    status.has_success = success is not None
    report = storage.read_json(join(output, paths.REPORT_JSON)) if paths.REPORT_JSON in files else None
    if paths.REPORT_HTML in files:
        status.report = join(output, paths.REPORT_HTML)
    shards, status.pending_from = _listed_shards(storage, output, input_uri, files)
    if success is not None and shards is None:  # finished, nothing to compare with: its list
        done = [{"shard": s["path"], **s} for s in success.get("shards", [])]
    else:
        done = _done_markers(storage, output, str(status.digest), shards, listing)
    status.shards_done = len(done)
    status.rows = {k: sum(int(m.get(k, 0)) for m in done) for k in paths.ROW_COUNTS}
    if shards is not None:
        finished = {m["shard"] for m in done}
        status.shards_total = len(shards)
        status.pending = [s.relpath for s in shards if s.relpath not in finished]
    last_failures = ((report or {}).get("failures") or {}).get("shards") or {}
    status.failed = {k: v for k, v in last_failures.items() if status.pending is None or k in status.pending}
    status.last_run = _last_run(success, report)
    complete = status.has_success and not status.pending
    status.state = "complete" if complete else "incomplete"
    return status


def _last_run(success: dict[str, Any] | None, report: dict[str, Any] | None) -> dict[str, Any]:
    """The last run that scored: its outcome, times and summary from report.json (every run that
    scores writes one), else `_SUCCESS`'s `last_run`."""
    if report is not None:
        keys = ("outcome", "started_at", "ended_at", "shards")
        return {**{k: report.get(k) for k in keys}, "summary": report.get("summary") or {}}
    if success is not None:
        return {
            "outcome": "complete",
            "ended_at": success.get("finished_at"),
            "summary": success.get("last_run") or {},
        }
    return {}
