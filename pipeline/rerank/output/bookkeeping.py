"""Every read of a bookkeeping file in OUTPUT (the lease, run.json, done-markers, `_SUCCESS`, the
shard list, report.json) goes through `read_record`: the record, None when there is none, or
`Damaged` when the file is there but cannot be used (empty or cut short by an interrupted copy or a
full disk, not JSON, a field of the wrong type after an edit).

Each kind of file is a `Record`: its fields (what its readers rely on) and what the job does when it
is damaged. A caller must handle `Damaged` (the types make it): the lease counts as stale and is
taken over, a done-marker means "not done", an informational file is ignored and rewritten, and a
damaged run manifest stops the run (`Damaged.error()`: exit 2 naming the file and --fresh).
`rerank status` names every damaged file it met (docs/output.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from pipeline.errors import DamagedFileError
from pipeline.io import Storage
from pipeline.rerank.output.paths import OPTIONAL_COUNTS

# A field's shape: a type (or types), an object (keys ending in "?" may be absent), a list of one
# shape (each item has it), or a check returning what is wrong (None: fine).
Shape = Union[type, tuple[type, ...], dict[str, "Shape"], list["Shape"], Callable[[Any], str | None]]  # noqa: UP007 (a runtime alias: `|` cannot join the quoted names)

NUMBER = (int, float)
TIME = (int, float, type(None))


def _hashes(value: Any) -> str | None:
    """The query-id hashes of a done-marker: base64 of uint64s (pipeline/rerank/input/split_queries.py)."""
    try:
        ok = isinstance(value, str) and len(base64.b64decode(value, validate=True)) % 8 == 0
    except (binascii.Error, ValueError):
        ok = False
    return None if ok else "not base64 of 8-byte hashes"


@dataclass(frozen=True)
class Record:
    """One kind of bookkeeping file: its name, its fields, and what happens when it is damaged."""

    name: str
    shape: dict[str, Shape]
    if_damaged: str


_ROWS: dict[str, Shape] = {
    f"{k}?": int for k in ("rows_in", "rows_out", "rows_rejected", "rows_dropped_top_k", "rows_not_scored")
}
_COUNTS: dict[str, Shape] = {
    **_ROWS,
    **{
        f"{k}?": int
        for k in (
            "duplicate_pairs",
            "rows_not_scored_dropped_top_k",
            "tokens",
            "padded_tokens",
            *OPTIONAL_COUNTS,
        )
    },
}

LEASE_RECORD = Record(
    "lease",
    {
        "owner": str,
        "started_at": NUMBER,
        "heartbeat_at": NUMBER,
        "ttl_s?": NUMBER,
        "process?": (str, type(None)),
    },
    "it counts as stale: the next run takes it over",
)
RUN_RECORD = Record(
    "run manifest",
    {
        "digest": str,
        "fingerprint": dict,
        "created_at?": TIME,
        "upgraded_from?": (str, type(None)),
        "reuse?": {"given": [str], "used": [str]},
    },
    "it records which configuration OUTPUT's progress belongs to: restore it, or rerun with --fresh "
    "to discard the progress and start over",
)
MARKER_RECORD = Record(
    "done-marker",
    {
        "shard": str,
        "digest": str,
        "input": {"size": int, "version": str},
        "published_at?": TIME,
        "query_id_hashes?": _hashes,
        **_COUNTS,
        "changes?": {"against": str, "epsilon": NUMBER},
        "drift?": dict,
        "quality?": {"qrels": (str, type(None)), "queries": int},
    },
    "its shard counts as not done: the next run redoes it",
)
SUCCESS_RECORD = Record(
    "_SUCCESS manifest",
    {
        "digest": str,
        "shards": [{"path": str, **_ROWS}],
        "finished_at?": TIME,
        "last_run?": dict,
        "score_store?": {"format": int, "digest": str, "identity": dict},
        "changes?": {"against": str, "files": [{"path": str}], "totals": dict},
        "drift?": dict,
        "quality?": dict,
    },
    "OUTPUT counts as not complete: the next run writes it again",
)
QUALITY_RECORD = Record(
    "quality verdict",
    {"passed": bool, "summary": dict, "failed": [dict], "checked_at?": TIME},
    "ignored: the next run writes it again",
)
SHARD_LIST_RECORD = Record(
    "shard list",
    {"input": str, "shards": [{"path": str, "size?": int, "version?": str}]},
    "ignored: the next run writes it again (`rerank status --input INPUT` needs none)",
)
REPORT_RECORD = Record(
    "run report",
    {
        "outcome?": (str, type(None)),
        "started_at?": TIME,
        "ended_at?": TIME,
        "shards?": (dict, type(None)),
        "summary?": (dict, type(None)),
        "failures?": {"shards?": (dict, type(None))},
    },
    "ignored: the next run removes it, and writes a new one when it scores",
)


@dataclass(frozen=True)
class Damaged:
    """A bookkeeping file that is there but cannot be used."""

    uri: str
    problem: str
    record: Record

    def __str__(self) -> str:
        return f"{self.record.name} {self.uri} is damaged ({self.problem})"

    @property
    def consequence(self) -> str:
        return self.record.if_damaged

    def error(self) -> DamagedFileError:
        """The error of a caller that cannot go on without the file (exit 2, naming it)."""
        return DamagedFileError(f"{self}; {self.record.if_damaged}")


def read_record(storage: Storage, uri: str, record: Record) -> dict[str, Any] | Damaged | None:
    """The bookkeeping file at `uri` as `record` describes it; None if there is none; `Damaged` if
    it is not a JSON object with `record`'s fields. Storage errors (denied access, ...) propagate."""
    try:
        value = storage.read_json(uri)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: empty, cut short, not text
        return Damaged(uri, _json_problem(e), record)
    return None if value is None else checked(uri, value, record)


def parse_record(uri: str, data: bytes, record: Record) -> dict[str, Any] | Damaged:
    """`read_record` of bytes already read (the lease on S3 is read with its version tag)."""
    try:
        value = json.loads(data)
    except ValueError as e:
        return Damaged(uri, _json_problem(e), record)
    return checked(uri, value, record)


def checked(uri: str, value: Any, record: Record) -> dict[str, Any] | Damaged:
    problem = shape_problem(value, record.shape, "")
    return value if problem is None else Damaged(uri, problem, record)


def _json_problem(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError) and not e.doc.strip():
        return "empty"
    return f"not valid JSON: {e}"


def shape_problem(value: Any, shape: Shape, where: str) -> str | None:
    """What in `value` does not have `shape` (the first thing found), or None."""
    name = where or "the file"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{name} is {_what(value)}, not an object"
        for key, inner in shape.items():
            field = key.removesuffix("?")
            if field not in value:
                if key.endswith("?"):
                    continue
                return f"{_at(where, field)} is missing"
            if (problem := shape_problem(value[field], inner, _at(where, field))) is not None:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{name} is {_what(value)}, not a list"
        found = (shape_problem(item, shape[0], f"{where}[{i}]") for i, item in enumerate(value))
        return next((p for p in found if p is not None), None)
    if isinstance(shape, type | tuple):
        types = shape if isinstance(shape, tuple) else (shape,)
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return None
        wanted = dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types)  # int, float: "a number"
        return f"{name} is {_what(value)}, not {' or '.join(wanted)}"
    problem = shape(value)
    return None if problem is None else f"{name} is {problem}"


_TYPE_NAMES = {int: "a number", float: "a number", str: "a string", dict: "an object", type(None): "null"}


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _what(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
