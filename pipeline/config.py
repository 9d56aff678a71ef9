"""The job's one typed configuration: YAML file + CLI overrides, validated all at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
Device = Literal["auto", "cpu", "cuda"]
Kind = Literal["auto", "encoder", "llm", "layerwise"]
ConfigT = TypeVar("ConfigT", bound=BaseModel)

# FlagEmbedding's prompt for LLM and layerwise rerankers (BaseLLMReranker / LayerWiseLLMReranker).
DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)

# Token budget per micro-batch when max_batch_tokens is not set. A CPU forward gains nothing from
# big batches and pays for padding (and for attention memory: 8192 ran far slower than 2048 on the
# MiniLM-L6 shape, bench/throughput.py); a GPU needs large ones to fill its cores: TEI uses 16384,
# but on an H100 with an XLM-R-large reranker 65536 scored 2.1x faster (bench/scoring.py --gpu).
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 2048, "cuda": 65536}
# A batch also closes before a row shorter than this share of its longest row (padding <= 5% per
# row on CPU, where small batches cost nothing; off on CUDA, where they cost occupancy).
DEFAULT_MIN_BATCH_FILL = {"cpu": 0.95, "cuda": 0.0}
# Pairs per scoring call: fewer, larger calls cost less Ray overhead per pair and give the call a
# wider window to sort by length (CPU, MiniLM-L6 shape, 1,200 pairs: 256 -> 1024 raised the
# steady rate from ~64 to ~69 pairs/s); a shard publishes once its last call is done.
DEFAULT_ROWS_PER_CALL = {"cpu": 1024, "cuda": 4096}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputConfig(_Section):
    uri: str = Field(description="Parquet shard or directory/prefix of shards (recursive); any fsspec URI.")
    query_id_column: str = Field("query_id", description="Column holding the query id.")
    query_column: str = Field("query", description="Column holding the query text.")
    doc_id_column: str = Field("doc_id", description="Column holding the candidate's id.")
    passage_column: str = Field("passage", description="Column holding the candidate passage text.")
    allow_split_queries: bool = Field(
        False,
        description="Allow a query id in several shards (each shard ranks its part); else exit 2.",
    )


class OutputConfig(_Section):
    uri: str = Field(description="Directory/prefix for output shards and bookkeeping; any fsspec URI.")
    fresh: bool = Field(False, description="Discard earlier progress in OUTPUT and start over.")


class ModelConfig(_Section):
    name_or_path: str = Field(description="Local model directory, storage URI or hub id of a reranker.")
    kind: Kind = Field(
        "auto",
        description="encoder (cross-encoder, one logit), llm (decoder: logit of 'Yes' at the last "
        "token), layerwise (minicpm-layerwise heads); auto = read from the model's config.json.",
    )
    prompt: str | None = Field(
        None, description="llm/layerwise: the instruction after the pair; default FlagEmbedding's."
    )
    cutoff_layers: list[int] | None = Field(
        None,
        description="layerwise: layers whose heads score (default: the last). Several give one "
        "column each (score_l<k>); score and rank come from the first listed.",
    )
    max_length: int = Field(
        512, ge=8, description="Max tokens of a (query, passage) pair, specials included."
    )
    query_max_length: int | None = Field(
        None, ge=1, description="Max query tokens; default max_length * 3 // 4 (FlagEmbedding's)."
    )
    dtype: Dtype = Field("auto", description="Weights/compute dtype; auto = float16 on CUDA, float32 on CPU.")
    device: Device = Field("auto", description="auto = cuda when the Ray cluster has GPUs, else cpu.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the model repo. Off by default."
    )

    @property
    def resolved_query_max_length(self) -> int:
        return self.query_max_length if self.query_max_length is not None else self.max_length * 3 // 4

    @property
    def resolved_prompt(self) -> str:
        return self.prompt if self.prompt is not None else DEFAULT_PROMPT

    @property
    def score_columns(self) -> list[str]:
        """The score columns the model yields, in order; the first is the one ranked by."""
        if self.cutoff_layers is not None and len(self.cutoff_layers) > 1:
            return [f"score_l{k}" for k in self.cutoff_layers]
        return ["score"]


class RankingConfig(_Section):
    normalize: bool = Field(False, description="Add column score_norm = sigmoid(score).")
    top_k: int | None = Field(None, ge=1, description="Keep only the best K candidates per query.")


class ScoringConfig(_Section):
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


class RayConfig(_Section):
    address: str | None = Field(
        None, description="Ray cluster to join; default $RAY_ADDRESS, else start a local one."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started Ray; default all.")
    object_store_memory_bytes: int | None = Field(
        None, ge=75 * 1024 * 1024, description="Object store size of a locally started Ray."
    )


class StorageConfig(_Section):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, Ceph, R2, ...); default $AWS_ENDPOINT_URL_S3 or "
        "$AWS_ENDPOINT_URL of the driver.",
    )
    region: str | None = Field(None, description="S3 region; default $AWS_REGION / $AWS_DEFAULT_REGION.")
    profile: str | None = Field(None, description="AWS profile name (else the standard credential chain).")
    anonymous: bool = Field(False, description="Access object storage without credentials (public data).")
    max_attempts: int = Field(
        8, ge=1, description="Attempts per storage request on throttling, 5xx and connection errors."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fsspec storage_options for remote URIs (e.g. client_kwargs); "
        "credential-like values are never logged.",
    )


class JobConfig(_Section):
    input: InputConfig
    output: OutputConfig
    model: ModelConfig
    ranking: RankingConfig = Field(default_factory=RankingConfig, description="Output ordering options.")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Scoring pool options.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection options.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage options.")

    def redacted(self) -> dict[str, Any]:
        """The resolved config as a dict, safe to log and store: credential-like values masked."""
        from pipeline.io import redact

        data = self.model_dump(mode="json")
        data["storage"]["options"] = redact(data["storage"]["options"])
        return data


def _cross_field_problems(cfg: JobConfig) -> list[str]:
    problems = []
    m, s = cfg.model, cfg.scoring
    if m.resolved_query_max_length >= m.max_length - 4:
        problems.append(
            f"model.query_max_length={m.resolved_query_max_length} leaves no room for the passage "
            f"within model.max_length={m.max_length}; set --query-max-length below {m.max_length - 4}"
        )
    if m.kind == "encoder" and m.prompt is not None:
        problems.append("model.prompt is for llm/layerwise rerankers; drop --prompt or set --kind llm")
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
    if isinstance(s.max_batch_tokens, int) and s.max_batch_tokens < max(m.max_length, 64):
        problems.append(
            f"scoring.max_batch_tokens={s.max_batch_tokens} is below model.max_length={m.max_length}; "
            "a single full-length pair would not fit a batch; raise --max-batch-tokens"
        )
    cols = [
        cfg.input.query_id_column,
        cfg.input.query_column,
        cfg.input.doc_id_column,
        cfg.input.passage_column,
    ]
    if len(set(cols)) != len(cols):
        problems.append(f"input column names must differ, got {cols}")
    scores = ["score", *[c for c in m.score_columns if c != "score"]]
    for reserved in [*scores, "rank", *[f"{c}_norm" for c in scores]]:
        if reserved in cols:
            problems.append(f"input column {reserved!r} clashes with an output column; rename it")
    return problems


def format_validation_error(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(config)"
        value = e.get("input")
        shown = "" if e["type"] == "missing" else f" (got {value!r})"
        out.append(f"{where}: {e['msg']}{shown}")
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Returns base with override's leaves written over it (override wins)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_config(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a --config YAML file ({} without one); ConfigError naming the problem."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError([f"--config: no such file {str(path)!r}"]) from None
        except yaml.YAMLError as e:
            raise ConfigError([f"--config {str(path)!r} is not valid YAML: {e}"]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"--config {str(path)!r} must hold a mapping, got {type(loaded).__name__}"])
        data = loaded or {}
    return data


def validate_config(
    model: type[ConfigT], data: dict[str, Any], cross_field_problems: Callable[[ConfigT], list[str]]
) -> ConfigT:
    """Field validation, then cross-field checks; every problem of a stage in one ConfigError."""
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    problems = cross_field_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> JobConfig:
    """Loads the YAML file (if any), applies CLI overrides, validates; raises one ConfigError."""
    return validate_config(JobConfig, deep_merge(read_yaml_config(path), overrides), _cross_field_problems)


def fingerprint(cfg: JobConfig, resolved_dtype: str) -> dict[str, Any]:
    """What makes two runs' outputs comparable; a resume must match it exactly."""
    fp = {
        "model": cfg.model.name_or_path,
        "max_length": cfg.model.max_length,
        "query_max_length": cfg.model.resolved_query_max_length,
        "dtype": resolved_dtype,
        "normalize": cfg.ranking.normalize,
        "top_k": cfg.ranking.top_k,
        "columns": {
            "query_id": cfg.input.query_id_column,
            "query": cfg.input.query_column,
            "doc_id": cfg.input.doc_id_column,
            "passage": cfg.input.passage_column,
        },
    }
    m = cfg.model
    if m.kind not in ("auto", "encoder"):  # encoder runs keep the fingerprint they always had
        fp["kind"] = m.kind
        fp["prompt"] = m.resolved_prompt
        fp["cutoff_layers"] = m.cutoff_layers
    return fp


def fingerprint_digest(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
