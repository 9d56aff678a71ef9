"""The typed configuration of `rerank finetune`: YAML file + CLI overrides, validated all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.config import (
    DEFAULT_PROMPT,
    JobSection,
    Section,
    deep_merge,
    default_query_max_length,
    query_room_problems,
    read_yaml_config,
    validate_config,
)

# FlagEmbedding's reranker fine-tuning recipe (examples/finetune/reranker/README.md and its
# encoder_only/base.sh): cross-encoders at learning rate 6e-5 for 2 epochs, the LLM reranker
# bge-reranker-v2-gemma (LoRA) at 2e-4 for 1 epoch; warm-up ratio 0.1, weight decay 0.01,
# per_device_train_batch_size 2 groups of train_group_size 8 for both.
RECIPE_LEARNING_RATE = {"encoder": 6e-5, "llm": 2e-4}
RECIPE_EPOCHS = {"encoder": 2.0, "llm": 1.0}

DataFormat = Literal["auto", "jsonl", "scored"]
Loss = Literal["ce", "distill", "mixed"]
Precision = Literal["auto", "float32", "float16", "bfloat16"]


class DataConfig(Section):
    train_uri: str = Field(
        description="Training data: a JSONL file/prefix or scored Parquet shards; any fsspec URI."
    )
    eval_uri: str | None = Field(
        None, description="Held-out data (same formats) for MRR@10 / nDCG@10 before and after training."
    )
    format: DataFormat = Field(
        "auto",
        description="jsonl (FlagEmbedding: query, pos, neg[, prompt, pos_scores, neg_scores]), scored "
        "(`rerank run` output shards: teacher = score, positive = the top candidate); auto = by extension.",
    )
    query_id_column: str = Field("query_id", description="scored shards: the query id column.")
    query_column: str = Field("query", description="scored shards: the query text column.")
    passage_column: str = Field("passage", description="scored shards: the passage text column.")
    score_column: str = Field("score", description="scored shards: the teacher score column.")


class ModelSection(Section):
    base: str = Field(description="The model to start from: local directory, storage URI or hub id.")
    kind: Literal["auto", "encoder", "llm"] = Field(
        "auto",
        description="encoder (trained fully) or llm (LoRA on the 'Yes' logit); auto = from config.json.",
    )
    prompt: str | None = Field(
        None, description="llm: the instruction after the pair when a line has none; default FlagEmbedding's."
    )
    max_length: int = Field(
        512, ge=8, description="Max tokens of a (query, passage) pair, specials included."
    )
    query_max_length: int | None = Field(
        None, ge=1, description="Max query tokens; default max_length * 3 // 4 (as in scoring)."
    )
    lora_rank: int = Field(16, ge=1, description="llm: LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, description="llm: LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="llm: dropout on the LoRA input.")
    lora_target_modules: list[str] | None = Field(
        None, description="llm: module names LoRA adapts; default every linear layer but the LM head."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the model repo. Off by default."
    )

    @property
    def resolved_prompt(self) -> str:
        return self.prompt if self.prompt is not None else DEFAULT_PROMPT

    @property
    def resolved_query_max_length(self) -> int:
        if self.query_max_length is not None:
            return self.query_max_length
        return default_query_max_length(self.max_length)


class TrainSection(Section):
    loss: Loss = Field(
        "ce",
        description="ce: listwise cross-entropy, positive first; distill: KL to the teacher's softmax; "
        "mixed: (1 - distill_weight) * ce + distill_weight * distill.",
    )
    distill_weight: float = Field(0.5, ge=0, le=1, description="mixed: the weight of the distillation loss.")
    temperature: float = Field(
        1.0, gt=0, description="distill/mixed: softmax temperature of both score lists."
    )
    train_group_size: int = Field(
        8, ge=2, description="Passages per query group: 1 positive + the rest negatives."
    )
    queries_per_step: int = Field(
        2,
        ge=1,
        description="Query groups per worker per micro-batch (pairs = this * train_group_size); 2 is "
        "FlagEmbedding's per_device_train_batch_size.",
    )
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches summed into one optimizer step.")
    epochs: float | None = Field(
        None,
        gt=0,
        description="Passes over the training queries (fractions allowed); default FlagEmbedding's "
        "reranker recipe (examples/finetune/reranker): 2 for encoder, 1 for llm (LoRA).",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak AdamW learning rate; default FlagEmbedding's reranker recipe "
        "(examples/finetune/reranker): 6e-5 for encoder cross-encoders, 2e-4 for llm (LoRA).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of steps with linear warmup, then linear decay to 0 (FlagEmbedding's "
        "recipe: 0.1).",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient norm clip.")
    precision: Precision = Field(
        "auto", description="Autocast dtype; auto = float16 (with a GradScaler) on CUDA, float32 on CPU."
    )
    seed: int = Field(42, description="Seeds sampling, shuffling, dropout and LoRA init.")
    log_every_steps: int = Field(10, ge=1, description="Log step, loss and examples/s every N steps.")

    @property
    def peak_learning_rate(self) -> float:
        """The learning rate, once `with_kind_defaults` has resolved it."""
        if self.learning_rate is None:
            raise ValueError("train.learning_rate is resolved by with_kind_defaults before training")
        return self.learning_rate

    @property
    def num_epochs(self) -> float:
        """The epochs, once `with_kind_defaults` has resolved them."""
        if self.epochs is None:
            raise ValueError("train.epochs is resolved by with_kind_defaults before training")
        return self.epochs


class RunSection(Section):
    output_uri: str = Field(description="Where the fine-tuned model directory is published; any fsspec URI.")
    checkpoint_uri: str | None = Field(
        None, description="Where Ray Train keeps checkpoints; default OUTPUT + '.checkpoints' (same storage)."
    )
    checkpoint_every_steps: int = Field(100, ge=1, description="Checkpoint every N optimizer steps.")
    checkpoints_to_keep: int = Field(2, ge=1, description="Newest checkpoints kept.")
    fresh: bool = Field(False, description="Discard earlier checkpoints and start over.")
    workers: int = Field(1, ge=1, description="Ray Train workers (one GPU each on CUDA).")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved by each training worker.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = cuda when the cluster has GPUs."
    )
    max_failures: int = Field(
        0, ge=0, description="Worker failures Ray Train recovers from (from the last checkpoint)."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join; default $RAY_ADDRESS, else a local one."
    )
    dashboard: bool = Field(
        False,
        description="Start the local Ray's dashboard on 127.0.0.1 and print its URL (a live view of "
        "the workers; usage stats stay off). Joining a cluster, print the cluster's.",
    )

    @property
    def resolved_checkpoint_uri(self) -> str:
        return self.checkpoint_uri or self.output_uri.rstrip("/") + ".checkpoints"


class FinetuneConfig(JobSection):
    data: DataConfig = Field(description="Training and held-out data.")
    model: ModelSection = Field(description="The base model, tokenization and LoRA options.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation options.")
    run: RunSection = Field(description="Output, checkpoints and the Ray Train workers.")

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run whose checkpoints it continues."""
        return {
            "data": self.data.model_dump(),
            "model": self.model.model_dump(),
            "train": self.train.model_dump(),
        }


def _cross_field_problems(cfg: FinetuneConfig) -> list[str]:
    m, t, r = cfg.model, cfg.train, cfg.run
    problems = query_room_problems(m.max_length, m.resolved_query_max_length)
    if m.kind == "encoder" and m.prompt is not None:
        problems.append("model.prompt is for llm rerankers; drop --prompt or set --kind llm")
    if t.precision in ("float16", "bfloat16") and r.device == "cpu":
        problems.append(
            f"train.precision={t.precision} needs CUDA; use --precision float32 with --device cpu"
        )
    if r.output_uri.rstrip("/") == r.resolved_checkpoint_uri.rstrip("/"):
        problems.append(f"run.checkpoint_uri must differ from the output {r.output_uri!r}")
    if t.loss == "ce" and t.distill_weight != 0.5:
        problems.append("train.distill_weight applies to --loss mixed; drop it or set --loss mixed")
    return problems


def with_kind_defaults(cfg: FinetuneConfig, kind: str) -> FinetuneConfig:
    """The config with the learning rate and epochs not given set to the recipe's for `kind`."""
    t = cfg.train
    train = t.model_copy(
        update={
            "learning_rate": t.learning_rate if t.learning_rate is not None else RECIPE_LEARNING_RATE[kind],
            "epochs": t.epochs if t.epochs is not None else RECIPE_EPOCHS[kind],
        }
    )
    return cfg.model_copy(update={"train": train})


def load_finetune_config(path: str | Path | None, overrides: dict[str, Any]) -> FinetuneConfig:
    """Loads the YAML file (if any), applies CLI overrides, validates; raises one ConfigError."""
    data = deep_merge(read_yaml_config(path), overrides)
    return validate_config(FinetuneConfig, data, _cross_field_problems)
