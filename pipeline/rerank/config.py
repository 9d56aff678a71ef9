"""The rerank job's typed configuration: YAML file + CLI overrides, validated all at once.

Device-dependent defaults (budget, min fill, rows per call, threads) are not resolved here but in
`pipeline.rerank.settings`, once, when the device is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.config import (
    JobSection,
    ModelConfig,
    RayConfig,
    Section,
    deep_merge,
    query_room_problems,
    read_yaml_config,
    validate_config,
)

REJECT_REASON = "reject_reason"  # the column quarantined rows carry (pipeline/rerank/input/quarantine.py)
CHUNKS, BEST_CHUNK_CHAR = "chunks", "best_chunk_char"  # what --long-passages chunk adds per row
MIN_BATCH_TOKENS = 64  # the smallest --max-batch-tokens, whatever --max-length


class InputConfig(Section):
    uri: str = Field(description="Parquet shard or directory/prefix of shards (recursive); any fsspec URI.")
    query_id_column: str = Field("query_id", description="Column holding the query id.")
    query_column: str = Field("query", description="Column holding the query text.")
    doc_id_column: str = Field("doc_id", description="Column holding the candidate's id.")
    passage_column: str = Field("passage", description="Column holding the candidate passage text.")
    allow_split_queries: bool = Field(
        False,
        description="Allow a query id in several shards (each shard ranks its part); else exit 2.",
    )
    long_passages: Literal["truncate", "chunk"] = Field(
        "truncate",
        description="A passage longer than fits beside its query: truncate (cut to --max-length, as "
        "FlagEmbedding does) or chunk (scored as overlapping windows, their scores aggregated by "
        "--chunk-aggregate; adds columns chunks and best_chunk_char).",
    )
    chunk_overlap: int = Field(
        32, ge=0, description="chunk: passage tokens each window shares with the one before it."
    )
    max_chunks: int = Field(
        16,
        ge=1,
        le=32767,
        description="chunk: windows scored per passage at most; windows past them are counted "
        "(windows_not_scored in markers and _SUCCESS), not scored.",
    )
    chunk_aggregate: Literal["max", "first", "mean"] = Field(
        "max", description="chunk: a passage's score from its windows' scores: max (MaxP), first or mean."
    )
    layout: Literal["long", "nested"] = Field(
        "long",
        description="long: one row per (query, candidate) pair; nested: one row per query, its "
        "candidates a list of structs (--candidates-column) holding the doc id and passage fields.",
    )
    candidates_column: str = Field(
        "candidates", description="nested layout: the list<struct> column holding a query's candidates."
    )
    previous_prefix: str | None = Field(
        None,
        min_length=1,
        description="Accept input holding an earlier run's output columns (score, rank, score_norm, "
        "score_l<K>, chunks, ...) and keep them renamed to PREFIX<name>, e.g. stage1_ for a cascade.",
    )
    prefilter_column: str | None = Field(
        None,
        description="Cascade: score only each query's --prefilter-top-k candidates with the highest "
        "value in this numeric column (ties in input order, nulls last); the rest follow unscored.",
    )
    prefilter_top_k: int | None = Field(
        None, ge=1, description="Cascade: how many candidates per query --prefilter-column selects."
    )


class OutputConfig(Section):
    uri: str = Field(description="Directory/prefix for output shards and bookkeeping; any fsspec URI.")
    fresh: bool = Field(False, description="Discard earlier progress in OUTPUT and start over.")
    reuse: list[str] = Field(
        default_factory=list,
        description="An earlier run's OUTPUT whose stored scores this run takes for the pairs whose "
        "query and passage texts it scored with the same model, template, lengths and dtype (repeatable, "
        "newest first; a source that does not exist, never completed or scored otherwise is skipped "
        "with a warning); in a nightly config {previous_date} is the run date minus one day.",
    )
    lease_ttl_s: float = Field(
        600.0,
        gt=0,
        description="One run per OUTPUT: a run holds OUTPUT/_rerank/lease.json and renews it every "
        "ttl/4 seconds; a lease not renewed for this long is stale and taken over by the next start.",
    )


class RankingConfig(Section):
    normalize: bool = Field(False, description="Add column score_norm = sigmoid(score).")
    top_k: int | None = Field(None, ge=1, description="Keep only the best K candidates per query.")


class ScoringConfig(Section):
    max_batch_tokens: int | Literal["auto"] | None = Field(
        None,
        description="Padded-token budget per micro-batch; default 2048 on CPU, 65536 on CUDA; auto = each "
        "scoring actor times a few budgets on its first call's pairs and keeps the fastest.",
    )
    min_batch_fill: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Close a micro-batch before a row shorter than this share of its longest row; "
        "default 0.95 on CPU, 0 (off) on CUDA.",
    )
    min_actors: int = Field(1, ge=1, description="Scoring pool size at least (one GPU each on CUDA).")
    max_actors: int = Field(1, ge=1, description="Scoring pool size at most (autoscaling up to it).")
    rows_per_call: int | None = Field(
        None,
        ge=1,
        description="Pairs handed to a scoring actor per call, split there into micro-batches; "
        "default 1024 on CPU, 4096 on CUDA (a shard is published once every call holding its rows is done).",
    )
    cpus_per_actor: float = Field(1.0, gt=0, description="Ray CPUs reserved by each scoring actor.")
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per CPU scoring actor; default: the node's cores / actors."
    )
    tokenize_actors: int = Field(1, ge=1, description="Tokenizing actors (CPU stage).")
    cpus_per_tokenizer: float = Field(0.5, gt=0, description="Ray CPUs reserved by each tokenizing actor.")


class CompareConfig(Section):
    diff_against: str | None = Field(
        None,
        description="An earlier run's OUTPUT to compare with: each output shard gets a change file "
        "OUTPUT/_changes/<shard>.parquet (rows added, removed, reranked, rescored) and the run reports "
        "ranking drift; default: the first --reuse source ('none': no change feed); in a nightly "
        "config {previous_date} works.",
    )
    change_epsilon: float = Field(
        0.0,
        ge=0,
        description="A row whose rank is unchanged is listed as rescored only if its score moved by "
        "more than this.",
    )
    qrels: str | None = Field(
        None,
        description="Judged queries: TREC qrels text (qid 0 docid rel) or Parquet (query_id, doc_id, "
        "relevance), any fsspec URI; the run reports nDCG@10, MRR@10 and Recall@100 of the first-stage "
        "and the reranked order on the judged queries it saw.",
    )
    first_stage_column: str | None = Field(
        None,
        description="Column holding the first-stage score (higher is better) that orders candidates "
        "before reranking; default: the input row order within each query.",
    )
    min_ndcg: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quality gate: no _SUCCESS (exit 5) unless the reranked order's nDCG@10 on the "
        "judged queries is at least this (needs --qrels).",
    )
    max_ndcg_drop: float | None = Field(
        None,
        ge=0,
        description="Quality gate: no _SUCCESS (exit 5) if the reranked nDCG@10 is more than this below "
        "the first-stage order's, or below the previous run's recorded figure (needs --qrels).",
    )

    @property
    def gated(self) -> bool:
        return self.min_ndcg is not None or self.max_ndcg_drop is not None


class ProgressConfig(Section):
    interval_s: float = Field(
        30.0,
        gt=0,
        description="Progress in a log (not a terminal, which shows a live bar instead): one line "
        "(shards, pairs, pairs/s, ETA) at most every this many seconds, and the final summary.",
    )


class JobConfig(JobSection):
    input: InputConfig = Field(description="The input shards and which columns hold what.")
    output: OutputConfig = Field(description="Where output shards and bookkeeping go.")
    model: ModelConfig = Field(description="The reranker and how pairs are tokenized.")
    ranking: RankingConfig = Field(default_factory=RankingConfig, description="Output ordering options.")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Scoring pool options.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection options.")
    progress: ProgressConfig = Field(
        default_factory=ProgressConfig, description="How the run shows its progress."
    )
    compare: CompareConfig = Field(
        default_factory=CompareConfig,
        description="What the run is compared with: a change feed and ranking drift against an "
        "earlier run, quality on judged queries, and the gate before _SUCCESS.",
    )


def _cross_field_problems(cfg: JobConfig) -> list[str]:
    m, s = cfg.model, cfg.scoring
    problems = query_room_problems(m.max_length, m.resolved_query_max_length)
    if m.kind == "encoder" and m.given_instruction is not None:
        problems.append(
            "model.instruction (--instruction, --prompt) is for llm/layerwise rerankers; drop it or "
            "set --kind llm"
        )
    if m.instruction is not None and m.prompt is not None and m.instruction != m.prompt:
        problems.append(
            "model.prompt is the older spelling of model.instruction and both are given, differently; "
            "give --instruction alone"
        )
    if m.kind in ("encoder", "llm") and m.cutoff_layers is not None:
        problems.append(
            f"model.cutoff_layers={m.cutoff_layers} is for layerwise rerankers (--kind layerwise), "
            f"not --kind {m.kind}; drop --cutoff-layers"
        )
    layers = m.cutoff_layers
    if layers is not None and (not layers or len(set(layers)) != len(layers)):
        problems.append(
            f"model.cutoff_layers={layers} must list one or more distinct layers, e.g. --cutoff-layers 28"
        )
    if s.min_actors > s.max_actors:
        problems.append(
            f"scoring.min_actors={s.min_actors} > scoring.max_actors={s.max_actors}; "
            "use --actors N or --actors MIN:MAX with MIN <= MAX"
        )
    problems += budget_problems(s.max_batch_tokens, m.max_length)
    cols = [
        cfg.input.query_id_column,
        cfg.input.query_column,
        cfg.input.doc_id_column,
        cfg.input.passage_column,
    ]
    if cfg.input.layout == "nested":
        cols.append(cfg.input.candidates_column)
    if len(set(cols)) != len(cols):
        problems.append(f"input column names must differ, got {cols}")
    problems += cascade_problems(cfg.input)
    problems += compare_problems(cfg.compare, cols)
    problems += mode_option_problems(cfg.input)
    problems += chunk_problems(cfg.input, m.max_length, m.resolved_query_max_length)
    for reserved in reserved_columns(m.score_columns):
        if reserved in cols:
            problems.append(f"input column {reserved!r} clashes with an output column; rename it")
    return problems


def compare_problems(c: CompareConfig, columns: list[str]) -> list[str]:
    problems = []
    if c.gated and c.qrels is None:
        problems.append("compare.min_ndcg/max_ndcg_drop gate on judged queries; pass --qrels PATH")
    if c.first_stage_column is not None and c.qrels is None:
        problems.append("compare.first_stage_column is the first-stage order for --qrels; pass --qrels PATH")
    if c.first_stage_column in columns:
        problems.append(f"compare.first_stage_column {c.first_stage_column!r} is an id or text column")
    return problems


def budget_problems(max_batch_tokens: int | str | None, max_length: int) -> list[str]:
    """A micro-batch must hold one full-length pair, and at least MIN_BATCH_TOKENS tokens."""
    if not isinstance(max_batch_tokens, int) or max_batch_tokens >= max(max_length, MIN_BATCH_TOKENS):
        return []
    if max_batch_tokens < max_length:
        why = f"is below model.max_length={max_length}: a single full-length pair would not fit a batch"
    else:
        why = f"is below the smallest budget, {MIN_BATCH_TOKENS} tokens"
    return [
        f"scoring.max_batch_tokens={max_batch_tokens} {why}; raise --max-batch-tokens to at least "
        f"{max(max_length, MIN_BATCH_TOKENS)}"
    ]


def cascade_problems(i: InputConfig) -> list[str]:
    """--prefilter-column and --prefilter-top-k come together."""
    if (i.prefilter_column is None) == (i.prefilter_top_k is None):
        return []
    given, missing = (
        ("--prefilter-column", "--prefilter-top-k N")
        if i.prefilter_top_k is None
        else ("--prefilter-top-k", "--prefilter-column COL")
    )
    return [f"input: {given} needs {missing} too (score only the best N candidates by COL per query)"]


# options that only act in one mode: (field, flag) -> (the mode's field, its value, its flag)
MODE_OPTIONS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("chunk_overlap", "--chunk-overlap"): ("long_passages", "chunk", "--long-passages chunk"),
    ("max_chunks", "--max-chunks"): ("long_passages", "chunk", "--long-passages chunk"),
    ("chunk_aggregate", "--chunk-aggregate"): ("long_passages", "chunk", "--long-passages chunk"),
    ("candidates_column", "--candidates-column"): ("layout", "nested", "--layout nested"),
}


def mode_option_problems(i: InputConfig) -> list[str]:
    """An option of a mode not chosen would be silently ignored: refused, naming the missing flag.
    "Given" is a flag or a YAML key (pydantic's `model_fields_set`), whatever its value: a default
    left alone never counts."""
    problems = []
    for (name, flag), (mode, value, mode_flag) in MODE_OPTIONS.items():
        if name in i.model_fields_set and getattr(i, mode) != value:
            problems.append(
                f"input: {flag} needs {mode_flag} (input.{name}={getattr(i, name)!r} is given, but "
                f"input.{mode} is {getattr(i, mode)!r}, so it would be ignored); add {mode_flag} or "
                f"drop {flag}"
            )
    return problems


def chunk_problems(i: InputConfig, max_length: int, query_max_length: int) -> list[str]:
    """A window must step forward: the overlap stays below the narrowest window's passage room
    (max_length - query_max_length - the template's special tokens, at most 4; the tokenizer
    checks the exact room again)."""
    room = max_length - query_max_length - 4
    if i.long_passages != "chunk" or room <= 0 or i.chunk_overlap < room:  # room <= 0: see query_room
        return []
    return [
        f"input.chunk_overlap={i.chunk_overlap} is not below the {room} passage tokens a window may "
        f"hold beside a query of --query-max-length {query_max_length} within --max-length "
        f"{max_length}; lower --chunk-overlap (or --query-max-length)"
    ]


def reserved_columns(score_columns: list[str]) -> list[str]:
    """Every column the job writes anywhere, so none may come in: `score` and the model's score
    columns (`score_l<K>` per cutoff layer), their `_norm` variants, `rank`, the `chunks` and
    `best_chunk_char` of --long-passages chunk, and the `reject_reason` of OUTPUT/_rejected/."""
    scores = ["score", *[c for c in score_columns if c != "score"]]
    return [*scores, "rank", *[f"{c}_norm" for c in scores], CHUNKS, BEST_CHUNK_CHAR, REJECT_REASON]


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> JobConfig:
    """Loads the YAML file (if any), applies CLI overrides, validates; raises one ConfigError."""
    return validate_config(JobConfig, deep_merge(read_yaml_config(path), overrides), _cross_field_problems)
