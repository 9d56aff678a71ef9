"""Training data: FlagEmbedding's JSONL and `rerank run`'s scored shards, read through `Storage`.

Both become `TrainQuery` lists on the driver, before any worker starts, so a malformed line fails
the job at once with its file, line and what is wrong (every such line, up to a limit), never a
silent skip.

- JSONL, one object per line: `query` (str), `pos` and `neg` (non-empty lists of str), optional
  `prompt` (str) and optional `pos_scores` / `neg_scores` (numbers, one per passage; both or none).
- Scored shards (Parquet, `query_id, query, passage, score, ...`): per query the candidates with
  their `score` as teacher scores; the positive is the teacher's top candidate, the rest negatives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputContractError
from pipeline.finetune.config import DataConfig
from pipeline.io import Storage, join

MAX_REPORTED = 20
JSONL_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class TrainQuery:
    """One query with its positive and negative passages (and teacher scores, if any)."""

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    prompt: str | None = None
    pos_scores: tuple[float, ...] | None = None
    neg_scores: tuple[float, ...] | None = None
    source: str = ""  # file:line or shard#query_id, for messages

    @property
    def has_teacher(self) -> bool:
        return self.pos_scores is not None and self.neg_scores is not None


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def _scores(obj: dict[str, Any], key: str, texts: list[str]) -> tuple[tuple[float, ...] | None, str | None]:
    value = obj.get(key)
    if value is None:
        return None, None
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok:
        return None, f"{key!r} must be a list of finite numbers"
    if len(value) != len(texts):
        return None, f"{key!r} has {len(value)} scores for {len(texts)} passages"
    return tuple(float(v) for v in value), None


def parse_jsonl_line(text: str, where: str) -> TrainQuery:
    """One FlagEmbedding training line; raises ValueError saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"must be a JSON object, got {type(obj).__name__}")
    problems = []
    if not isinstance(obj.get("query"), str) or not obj["query"].strip():
        problems.append("'query' must be a non-empty string")
    for key in ("pos", "neg"):
        if not _is_text_list(obj.get(key)):
            problems.append(
                f"{key!r} must be a non-empty list of non-empty strings (got {obj.get(key)!r:.60})"
            )
    if obj.get("prompt") is not None and not isinstance(obj["prompt"], str):
        problems.append("'prompt' must be a string")
    if problems:
        raise ValueError("; ".join(problems))
    pos_scores, e1 = _scores(obj, "pos_scores", obj["pos"])
    neg_scores, e2 = _scores(obj, "neg_scores", obj["neg"])
    errors = [e for e in (e1, e2) if e]
    if (pos_scores is None) != (neg_scores is None) and not errors:
        errors.append(
            "'pos_scores' and 'neg_scores' must be given together (teacher scores for all passages)"
        )
    if errors:
        raise ValueError("; ".join(errors))
    return TrainQuery(
        obj["query"], tuple(obj["pos"]), tuple(obj["neg"]), obj.get("prompt"), pos_scores, neg_scores, where
    )


def read_jsonl(storage: Storage, uri: str) -> list[TrainQuery]:
    """Every line of one JSONL file; raises one InputContractError naming every bad line."""
    fs, path = storage.filesystem(uri)
    queries, problems = [], []
    with fs.open(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                queries.append(parse_jsonl_line(line, f"{uri}:{number}"))
            except ValueError as e:
                problems.append(f"{uri} line {number}: {e}")
    _raise_problems(problems, "fix or remove these lines")
    return queries


def _raise_problems(problems: list[str], fix: str) -> None:
    if not problems:
        return
    shown = problems[:MAX_REPORTED]
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    lines = "\n".join(f"  - {p}" for p in shown)
    raise InputContractError(f"malformed training data ({len(problems)} problem(s)); {fix}:\n{lines}{more}")


def queries_from_table(table: Any, cfg: DataConfig, where: str) -> list[TrainQuery]:
    """Per query id, the candidates ranked by teacher score: the top one positive, the rest negative."""
    cols = [cfg.query_id_column, cfg.query_column, cfg.passage_column, cfg.score_column]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise InputContractError(
            f"scored shard {where!r} has no column(s) {missing} (found: {', '.join(table.column_names)}); "
            "pass `rerank run` output, or set the --*-column flags"
        )
    data = table.select(cols).to_pydict()
    groups: dict[Any, list[int]] = {}
    problems = []
    for i, qid in enumerate(data[cfg.query_id_column]):
        row = [data[c][i] for c in cols[1:]]
        if any(v is None for v in row) or not str(row[0]).strip() or not str(row[1]).strip():
            problems.append(f"{where} row {i} (query_id {qid!r}): null or empty query, passage or score")
            continue
        groups.setdefault(qid, []).append(i)
    out = []
    for qid, rows in groups.items():
        if len(rows) < 2:
            problems.append(
                f"{where} query_id {qid!r}: one candidate; a group needs a positive and a negative"
            )
            continue
        rows = sorted(rows, key=lambda i: -float(data[cfg.score_column][i]))
        passages = [str(data[cfg.passage_column][i]) for i in rows]
        scores = [float(data[cfg.score_column][i]) for i in rows]
        query = str(data[cfg.query_column][rows[0]])
        out.append(
            TrainQuery(
                query,
                (passages[0],),
                tuple(passages[1:]),
                None,
                (scores[0],),
                tuple(scores[1:]),
                f"{where}#{qid}",
            )
        )
    _raise_problems(problems, "drop these rows/queries from the training data")
    return out


def detect_format(storage: Storage, uri: str, requested: str) -> str:
    if requested != "auto":
        return requested
    if uri.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if uri.endswith(".parquet") or storage.list_shards(uri):
        return "scored"
    return "jsonl"


def _jsonl_files(storage: Storage, uri: str) -> list[str]:
    fs, path = storage.filesystem(uri)
    if fs.isfile(path):
        return [uri]
    rels = [r for r in storage.list_files(uri) if r.endswith(JSONL_SUFFIXES)]
    return [join(uri, r) for r in rels if not any(p.startswith(("_", ".")) for p in r.split("/"))]


def load_queries(storage: Storage, uri: str, cfg: DataConfig, flag: str = "TRAIN") -> list[TrainQuery]:
    """Every training query under `uri` (a file or a prefix), in a fixed order. `flag` is what
    gave `uri` (TRAIN, --eval), for the messages."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):  # else: "no training queries found", as if the file were empty
        raise InputContractError(
            f"{flag} {uri!r} does not exist (no such file, directory or prefix); check the path"
        )
    fmt = detect_format(storage, uri, cfg.format)
    if fmt == "scored":
        queries = [
            q
            for shard in storage.list_shards(uri)
            for q in queries_from_table(storage.read_table(shard.uri), cfg, shard.uri)
        ]
    else:
        queries = [q for f in _jsonl_files(storage, uri) for q in read_jsonl(storage, f)]
    if not queries:
        raise InputContractError(
            f"no training queries found under {uri!r} (format {fmt}); pass a JSONL file/prefix or "
            "`rerank run` output shards"
        )
    return queries
