"""Where a run of an OUTPUT stands, read from OUTPUT alone (no Ray, any storage): the run that owns
it (run.json), the shards done (their markers, or `_SUCCESS`), pending (against INPUT, or the list
the last run wrote: `_rerank/shards.json`) and failed (the last run's report.json), the row
counts and the pairs scored and reused (--reuse) of the done shards, the last run's summary,
`_SUCCESS`, the lease holder with the age of its heartbeat, the comparison's figures (changes,
drift, quality: `_SUCCESS`'s, else the last report's) and the quality gate's verdict
(`_rerank/quality.json`), and every bookkeeping file that is damaged (`bookkeeping.py`), with what
remains known without it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, paths
from pipeline.rerank.output.bookkeeping import (
    LEASE_RECORD,
    QUALITY_RECORD,
    REPORT_RECORD,
    RUN_RECORD,
    SHARD_LIST_RECORD,
    SUCCESS_RECORD,
    Damaged,
    Record,
    read_record,
)
from pipeline.rerank.output.lease import is_gone

PAIR_COUNTS = ("pairs_scored", "pairs_reused")  # of a done-marker, and of `_SUCCESS`'s totals
COMPARISON = ("changes", "drift", "quality")  # the comparison's figures in `_SUCCESS` and report.json


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
    is_stale: bool  # older than its TTL, its process is known to be gone, or damaged: the next start takes it
    is_process_gone: bool
    is_damaged: bool = False


@dataclass
class RunStatus:
    """Everything `rerank status` prints; `state` is complete | held (every shard done, but the
    quality gate kept `_SUCCESS` back) | incomplete | in_progress (a live lease: a run is planning
    or scoring) | no_run."""

    output: str
    state: str
    has_run: bool = False  # OUTPUT holds a run manifest (_rerank/run.json), readable or not
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
    not_in_input: list[str] = field(default_factory=list)  # in _SUCCESS, not among the shards
    rows: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)  # pairs_scored / pairs_reused of the done shards
    last_run: dict[str, Any] = field(default_factory=dict)  # its outcome, times and summary
    lease: LeaseState | None = None
    report: str | None = None  # URI of the last run's report.html
    damaged: dict[str, str] = field(default_factory=dict)  # bookkeeping file -> what is wrong, what then
    # changes (its files counted), drift, quality: `_SUCCESS`'s, else the last report's
    comparison: dict[str, Any] = field(default_factory=dict)
    quality_gate: dict[str, Any] | None = None  # the verdict in _rerank/quality.json
    notes: list[str] = field(default_factory=list)

    @property
    def is_complete(self) -> bool:
        return self.state == "complete"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def read(self, storage: Storage, uri: str, record: Record) -> dict[str, Any] | None:
        """A bookkeeping file of OUTPUT; one that is damaged is recorded here and reads as None."""
        found = read_record(storage, uri, record)
        if isinstance(found, Damaged):
            self.note_damaged(found)
            return None
        return found

    def note_damaged(self, damaged: Damaged) -> None:
        self.damaged[damaged.uri] = f"{damaged.problem}; {damaged.consequence}"


def _listed_shards(
    storage: Storage, output: str, files: set[str], status: RunStatus
) -> tuple[list[ShardFile] | None, str | None]:
    """The shards the last run saw: its shard list (or None)."""
    if paths.SHARD_LIST not in files:
        return None, None
    record = status.read(storage, join(output, paths.SHARD_LIST), SHARD_LIST_RECORD)
    if record is None:
        return None, None
    root = record["input"]
    shards = [
        ShardFile(join(root, s["path"]), s["path"], int(s.get("size", 0)), str(s.get("version", "")))
        for s in record["shards"]
    ]
    return shards, f"the last run's list of {root}"


def _lease(storage: Storage, output: str, now: float, status: RunStatus) -> LeaseState | None:
    record = read_record(storage, join(output, paths.LEASE), LEASE_RECORD)
    if isinstance(record, Damaged):
        status.note_damaged(record)
        return LeaseState("unknown (its lease file is damaged)", None, None, True, False, is_damaged=True)
    if record is None:
        return None
    age = round(now - float(record["heartbeat_at"]), 1)
    ttl = float(record["ttl_s"]) if record.get("ttl_s") is not None else None
    gone = is_gone(record.get("process"))
    stale = gone or (ttl is not None and age >= ttl)
    return LeaseState(record["owner"], age, ttl, stale, gone)


def _done_markers(
    storage: Storage, output: str, shards: list[ShardFile] | None, files: list[str], status: RunStatus
) -> list[dict[str, Any]]:
    """Markers of the shards done for this fingerprint: checked against the shards (input
    unchanged, output present) when they are known, else every marker with the digest."""
    if status.digest is None:  # run.json cannot be read: no marker can be checked against it
        return []
    damaged: list[Damaged] = []
    if shards is not None:
        done = list(checkpoint.load_done(storage, output, shards, status.digest, files, damaged).values())
    else:
        prefix = paths.MARKERS + "/"
        present = set(files)
        relpaths = [
            p[len(prefix) : -len(".json")] for p in files if p.startswith(prefix) and p.endswith(".json")
        ]
        relpaths = [r for r in relpaths if not checkpoint.is_temp_file(r + ".json") and r in present]
        markers = checkpoint.read_markers(storage, output, relpaths)
        damaged = [m for m in markers if isinstance(m, Damaged)]
        # no input to compare with: the digest and the output shard decide
        done = [m for m in markers if isinstance(m, dict) and m["digest"] == status.digest]
    for marker in damaged:
        status.note_damaged(marker)
    return done


def run_status(
    storage: Storage,
    output: str,
    input_uri: str | None = None,
    now: float | None = None,
    input_shards: list[ShardFile] | None = None,
) -> RunStatus:
    """The status of OUTPUT's run (state `no_run` when OUTPUT holds no run.json, `in_progress`
    while a live run holds its lease). `input_shards`: the shards of INPUT (`input_uri`), listed by
    the caller as `rerank run` lists them; without them, the last run's shard list is compared. A
    damaged bookkeeping file is named in `damaged`, never an error."""
    now = time.time() if now is None else now
    listing = storage.list_files(output)
    status = RunStatus(output=output, state="no_run")
    status.lease = _lease(storage, output, now, status)
    status.has_run = paths.RUN_MANIFEST in listing
    if status.has_run:
        _read_run(storage, output, listing, input_uri, input_shards, status)
    status.state = _state(status)
    return status


def _state(s: RunStatus) -> str:
    if s.lease is not None and not s.lease.is_stale:
        return "in_progress"
    if not s.has_run:
        return "no_run"
    complete = s.has_success and not s.pending and not s.not_in_input and not s.damaged
    if complete:
        return "complete"
    return "held" if is_held(s) else "incomplete"


def is_held(s: RunStatus) -> bool:
    """Every shard done (known to be: nothing pending, nothing damaged), no `_SUCCESS`, and the
    quality gate's last verdict failed: the gate holds the run back."""
    all_done = s.digest is not None and s.pending == [] and not s.damaged
    gate_failed = s.quality_gate is not None and not s.quality_gate.get("passed", True)
    return all_done and not s.has_success and gate_failed


def _read_run(
    storage: Storage,
    output: str,
    listing: list[str],
    input_uri: str | None,
    input_shards: list[ShardFile] | None,
    status: RunStatus,
) -> None:
    """What OUTPUT says of its run: the manifest, `_SUCCESS`, the report, the shards done and pending."""
    files = set(listing)
    manifest = status.read(storage, join(output, paths.RUN_MANIFEST), RUN_RECORD) or {}
    fp = manifest.get("fingerprint") or {}
    status.fingerprint, status.digest = fp, manifest.get("digest")
    status.model, status.dtype = fp.get("model"), fp.get("dtype")
    status.kind = fp.get("kind", "encoder") if fp else None
    status.created_at = manifest.get("created_at")
    success = (
        status.read(storage, join(output, paths.SUCCESS), SUCCESS_RECORD) if paths.SUCCESS in files else None
    )
    if success is not None and success["digest"] != status.digest:
        if status.digest is not None:
            status.notes.append("_SUCCESS is from a run with another fingerprint; ignored")
        success = None
    status.has_success = success is not None
    report = (
        status.read(storage, join(output, paths.REPORT_JSON), REPORT_RECORD)
        if paths.REPORT_JSON in files
        else None
    )
    if paths.REPORT_HTML in files:
        status.report = join(output, paths.REPORT_HTML)
    shards: list[ShardFile] | None = input_shards
    if input_shards is not None:
        status.pending_from = f"INPUT {input_uri}"
    else:
        shards, status.pending_from = _listed_shards(storage, output, files, status)
    _progress(storage, output, listing, shards, success, status)
    last_failures = ((report or {}).get("failures") or {}).get("shards") or {}
    status.failed = {k: v for k, v in last_failures.items() if status.pending is None or k in status.pending}
    status.last_run = _last_run(success, report)
    status.comparison = _comparison(success, report)
    if paths.QUALITY_JSON in files:
        status.quality_gate = status.read(storage, join(output, paths.QUALITY_JSON), QUALITY_RECORD)


def _comparison(success: dict[str, Any] | None, report: dict[str, Any] | None) -> dict[str, Any]:
    """The comparison's figures: `_SUCCESS`'s (its change files counted, as report.json does),
    else the last report's."""
    if success is None:
        found = (report or {}).get("comparison")
        return {k: v for k, v in found.items() if k in COMPARISON} if isinstance(found, dict) else {}
    figures = {k: success[k] for k in COMPARISON if k in success}
    if "changes" in figures:
        figures["changes"] = {**figures["changes"], "files": len(figures["changes"].get("files") or [])}
    return figures


def _progress(
    storage: Storage,
    output: str,
    listing: list[str],
    shards: list[ShardFile] | None,
    success: dict[str, Any] | None,
    status: RunStatus,
) -> None:
    """The shards done and pending, their rows, and the shards of `_SUCCESS` that are not among
    `shards` (INPUT's, or the last run's list). Without a readable run.json none can be checked."""
    if status.digest is None:
        status.shards_total = None if shards is None else len(shards)
        return
    if success is not None and shards is None:  # finished, nothing to compare with: its list
        done = [{"shard": s["path"], **s} for s in success["shards"]]
        totals = success.get("totals")  # its shards list no pair counts: its totals do
        counted = [totals] if isinstance(totals, dict) else []
    else:
        done = counted = _done_markers(storage, output, shards, listing, status)
    status.shards_done = len(done)
    status.rows = {k: sum(int(m.get(k, 0)) for m in done) for k in paths.ROW_COUNTS}
    # markers written before --reuse existed have neither count: a count none has is left out
    status.pairs = {
        k: sum(int(m.get(k, 0)) for m in counted) for k in PAIR_COUNTS if any(k in m for m in counted)
    }
    if shards is not None:
        finished = {m["shard"] for m in done}
        known = {s.relpath for s in shards}
        status.shards_total = len(shards)
        status.pending = [s.relpath for s in shards if s.relpath not in finished]
        status.not_in_input = [s["path"] for s in (success or {}).get("shards", []) if s["path"] not in known]


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
