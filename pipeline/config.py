"""What both jobs' configurations share: the section base, the model, Ray and storage sections, and
loading (YAML file + flag overrides, validated all at once into one ConfigError)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
ResolvedDtype = Literal["float16", "bfloat16", "float32"]
Device = Literal["auto", "cpu", "cuda"]
ResolvedDevice = Literal["cpu", "cuda"]
Kind = Literal["auto", "encoder", "llm", "layerwise"]
ResolvedKind = Literal["encoder", "llm", "layerwise"]
# The reranker families (pipeline/models/families/registry.py, which a test holds equal to this:
# the config may not import the models).
ResolvedFamilyName = Literal["cross-encoder", "modernbert", "flag-llm", "flag-layerwise", "qwen3", "mxbai-v2"]
FamilyName = Literal["auto", "cross-encoder", "modernbert", "flag-llm", "flag-layerwise", "qwen3", "mxbai-v2"]
Attention = Literal["auto", "padded", "unpadded"]
ResolvedAttention = Literal["padded", "unpadded"]
Compile = Literal["auto", "on", "off"]
ConfigT = TypeVar("ConfigT", bound=BaseModel)
# a deprecated YAML key -> the key that replaced it, each as (section, field)
RenamedKeys = Mapping[tuple[str, str], tuple[str, str]]

log = logging.getLogger(__name__)

# FlagEmbedding's prompt for LLM and layerwise rerankers (BaseLLMReranker / LayerWiseLLMReranker).
DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)
_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "signature")


def default_query_max_length(max_length: int) -> int:
    """FlagEmbedding's default: three quarters of the pair's budget."""
    return max_length * 3 // 4


def query_room_problems(max_length: int, query_max_length: int) -> list[str]:
    """The query cap must leave room for a passage (both jobs check it the same way)."""
    if query_max_length < max_length - 4:
        return []
    return [
        f"model.query_max_length={query_max_length} leaves no room for the passage within "
        f"model.max_length={max_length}; set --query-max-length below {max_length - 4}"
    ]


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of storage options safe to log: values of credential-like keys are masked."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out[k] = redact(v)
        elif any(word in k.lower() for word in _SECRET_WORDS) and v is not None:
            out[k] = "***"
        else:
            out[k] = v
    return out


class Section(BaseModel):
    """A frozen config section that rejects unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RerankerSection(Section):
    """What both jobs' model sections share: the reranker, its kind, the prompt, pair lengths and
    the device. Each job's section adds its own options (`ModelConfig`, the fine-tuning one)."""

    name_or_path: str = Field(description="Local model directory, storage URI or hub id of a reranker.")
    kind: Kind = Field(
        "auto",
        description="encoder (cross-encoder, one logit), llm (decoder: token logits at the last "
        "token), layerwise (minicpm-layerwise heads); auto = read from the model's config.json.",
    )
    family: FamilyName = Field(
        "auto",
        description="Reranker family: prompt layout, score and truncation; finer than --kind. auto = "
        "from the model: its reranker.json, known model names, the architecture (docs/models.md).",
    )
    instruction: str | None = Field(
        None,
        description="The instruction of a family that takes one (flag-llm, flag-layerwise: the prompt "
        "after the pair; qwen3: <Instruct>; mxbai-v2: an instruction line); default the model's "
        "reranker.json, else the family's. Fine-tuning: for lines without their own.",
    )
    prompt: str | None = Field(
        None, description="The older spelling of --instruction (kept for existing configs)."
    )
    max_length: int = Field(
        512, ge=8, description="Max tokens of a (query, passage) pair, specials included."
    )
    query_max_length: int | None = Field(
        None, ge=1, description="Max query tokens; default max_length * 3 // 4 (FlagEmbedding's)."
    )
    device: Device = Field("auto", description="auto = cuda when the Ray cluster has GPUs, else cpu.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the model repo. Off by default."
    )

    @property
    def resolved_query_max_length(self) -> int:
        if self.query_max_length is not None:
            return self.query_max_length
        return default_query_max_length(self.max_length)

    @property
    def given_instruction(self) -> str | None:
        """--instruction, or --prompt (its older spelling); None when neither was given."""
        return self.instruction if self.instruction is not None else self.prompt

    @property
    def resolved_prompt(self) -> str:
        """The flag families' prompt: the given instruction, else FlagEmbedding's."""
        given = self.given_instruction
        return given if given is not None else DEFAULT_PROMPT


class ModelConfig(RerankerSection):
    """The scoring job's model section: the shared one plus layers, dtype and kernels."""

    cutoff_layers: list[int] | None = Field(
        None,
        description="layerwise: layers whose heads score (default: the last). Several give one "
        "column each (score_l<k>); score and rank come from the first listed.",
    )
    dtype: Dtype = Field(
        "auto",
        description="Weights/compute dtype; auto = float16 on CUDA; on CPU bfloat16 where every core has "
        "AMX or AVX512-BF16 (read from the OS), else float32. A rerun keeps the dtype OUTPUT was "
        "scored in. The summary says which ran and why.",
    )
    # Neither changes scores beyond 1e-5 (fp32, tests/unit/test_kernel_parity.py): not fingerprinted.
    attention: Attention = Field(
        "auto",
        description="padded (right-padded micro-batches, SDPA attention) or unpadded (a micro-batch's "
        "pairs packed end to end, attention per pair: no padding); auto = each scoring actor times "
        "both on its first pairs (each scored once) and keeps the faster. Same scores.",
    )
    compile: Compile = Field(
        "auto",
        description="torch.compile the scoring module (dynamic shapes: no recompile per micro-batch); "
        "auto = only where the time it saves on the actor's share of the run pays for the compile, "
        "by the figures measured for the device (none yet: eager). Same scores.",
    )

    @property
    def score_columns(self) -> list[str]:
        """The score columns the model yields, in order; the first is the one ranked by."""
        if self.cutoff_layers is not None and len(self.cutoff_layers) > 1:
            return [f"score_l{k}" for k in self.cutoff_layers]
        return ["score"]


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray cluster to join; default $RAY_ADDRESS, else start a local one."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started Ray; default all.")
    object_store_memory_bytes: int | None = Field(
        None, ge=75 * 1024 * 1024, description="Object store size of a locally started Ray."
    )
    dashboard: bool = Field(
        False,
        description="Start the local Ray's dashboard on 127.0.0.1 and print its URL (a live view of "
        "tasks, actors and nodes; usage stats stay off). Joining a cluster, print the cluster's.",
    )


class StorageConfig(Section):
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


class JobSection(Section):
    """A whole job's configuration: every job has a storage section and logs itself redacted."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage options.")

    def redacted(self) -> dict[str, Any]:
        """The config as a dict, safe to log and store: credential-like storage values masked."""
        data = self.model_dump(mode="json")
        data["storage"]["options"] = redact(data["storage"]["options"])
        return data


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


def read_yaml_config(path: str | Path | None, hint: str = "") -> dict[str, Any]:
    """The mapping in a --config YAML file ({} without one); ConfigError naming the problem.
    `hint` is added to the message of a YAML syntax error."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError([f"--config: no such file {str(path)!r}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"--config {str(path)!r} is a directory; pass the YAML file inside it"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"--config {str(path)!r} is not valid YAML{hint}: {e}"]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError([f"--config {str(path)!r} must hold a mapping, got {type(loaded).__name__}"])
    return loaded or {}


def moved_renamed_keys(data: dict[str, Any], renamed: RenamedKeys) -> tuple[dict[str, Any], list[str]]:
    """`data` with every deprecated key given moved to the key that replaced it (a warning each), and
    the problems: a key given under both its old and its new name."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    problems = []
    for (old_section, old_key), (section, key) in renamed.items():
        old = out.get(old_section)
        if not isinstance(old, dict) or old_key not in old:
            continue
        value = old.pop(old_key)
        new = out.setdefault(section, {})
        if not isinstance(new, dict):
            continue  # field validation names the section that is not a mapping
        if key in new:
            problems.append(
                f"{old_section}.{old_key} and {section}.{key} are both given; {old_section}.{old_key} is "
                f"the deprecated name of {section}.{key}: keep only {section}.{key}"
            )
            continue
        log.warning("config key %s.%s is deprecated; use %s.%s", old_section, old_key, section, key)
        new[key] = value
    return out, problems


def validate_config(
    model: type[ConfigT],
    data: dict[str, Any],
    cross_field_problems: Callable[[ConfigT], list[str]],
    early_problems: Sequence[str] = (),
) -> ConfigT:
    """Field validation, then cross-field checks; every problem of a stage in one ConfigError,
    after `early_problems` (found while reading the config, e.g. a key given under two names)."""
    early = list(early_problems)
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(early + format_validation_error(e)) from None
    problems = early + cross_field_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
