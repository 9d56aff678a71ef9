"""The typed configuration of `rerank finetune`: YAML file + CLI overrides, validated all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.config import (
    JobSection,
    RayConfig,
    RenamedKeys,
    RerankerSection,
    Section,
    deep_merge,
    moved_renamed_keys,
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


class ModelSection(RerankerSection):
    """The model to start from (the shared model section: `--model`, kind, prompt, lengths, device)
    and the LoRA options of llm rerankers."""

    lora_rank: int = Field(16, ge=1, description="llm: LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, description="llm: LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="llm: dropout on the LoRA input.")
    lora_target_modules: list[str] | None = Field(
        None, description="llm: module names LoRA adapts; default every linear layer but the LM head."
    )


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


class OutputSection(Section):
    uri: str = Field(description="Where the fine-tuned model directory is published; any fsspec URI.")
    fresh: bool = Field(False, description="Discard earlier checkpoints and start over.")
    checkpoint_uri: str | None = Field(
        None, description="Where Ray Train keeps checkpoints; default OUTPUT + '.checkpoints' (same storage)."
    )

    @property
    def resolved_checkpoint_uri(self) -> str:
        return self.checkpoint_uri or self.uri.rstrip("/") + ".checkpoints"


class RunSection(Section):
    checkpoint_every_steps: int = Field(100, ge=1, description="Checkpoint every N optimizer steps.")
    checkpoints_to_keep: int = Field(2, ge=1, description="Newest checkpoints kept.")
    workers: int = Field(1, ge=1, description="Ray Train workers (one GPU each on CUDA).")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved by each training worker.")
    max_failures: int = Field(
        0, ge=0, description="Worker failures Ray Train recovers from (from the last checkpoint)."
    )


# the keys of the first layout, still read (with a warning): the model, output and Ray options that
# both jobs share now have the same keys in both
RENAMED_KEYS: RenamedKeys = {
    ("model", "base"): ("model", "name_or_path"),
    ("run", "output_uri"): ("output", "uri"),
    ("run", "fresh"): ("output", "fresh"),
    ("run", "checkpoint_uri"): ("output", "checkpoint_uri"),
    ("run", "device"): ("model", "device"),
    ("run", "ray_address"): ("ray", "address"),
    ("run", "dashboard"): ("ray", "dashboard"),
}


class FinetuneConfig(JobSection):
    data: DataConfig = Field(description="Training and held-out data.")
    model: ModelSection = Field(description="The base model, tokenization and LoRA options.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation options.")
    output: OutputSection = Field(description="Where the model and the checkpoints go.")
    run: RunSection = Field(default_factory=RunSection, description="Checkpoints and the Ray Train workers.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection options.")

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run whose checkpoints it continues (recorded as
        checkpoints have always recorded it: the model under `base`; the device may change; the
        family and instruction only when given, so checkpoints from before them still resume)."""
        # fields added later are left out while unset, so that older checkpoints still resume
        unset = [name for name in ("family", "instruction") if getattr(self.model, name) in ("auto", None)]
        model = self.model.model_dump(exclude={"device", *unset})
        model["base"] = model.pop("name_or_path")
        return {"data": self.data.model_dump(), "model": model, "train": self.train.model_dump()}


def _cross_field_problems(cfg: FinetuneConfig) -> list[str]:
    m, t, o = cfg.model, cfg.train, cfg.output
    problems = query_room_problems(m.max_length, m.resolved_query_max_length)
    if m.kind == "layerwise":
        problems.append(
            "model.kind=layerwise: fine-tuning supports encoder and llm rerankers; set --kind encoder, "
            "llm or auto"
        )
    if m.family == "flag-layerwise":
        problems.append(
            "model.family=flag-layerwise: fine-tuning supports encoder and llm rerankers; set --family "
            "cross-encoder, flag-llm or auto"
        )
    if m.kind == "encoder" and m.given_instruction is not None:
        problems.append(
            "model.instruction (--instruction, --prompt) is for llm rerankers; drop it or set --kind llm"
        )
    if m.instruction is not None and m.prompt is not None and m.instruction != m.prompt:
        problems.append(
            "model.prompt is the older spelling of model.instruction and both are given, differently; "
            "give --instruction alone"
        )
    if t.precision in ("float16", "bfloat16") and m.device == "cpu":
        problems.append(
            f"train.precision={t.precision} needs CUDA; use --precision float32 with --device cpu"
        )
    if o.uri.rstrip("/") == o.resolved_checkpoint_uri.rstrip("/"):
        problems.append(f"output.checkpoint_uri must differ from the output {o.uri!r}")
    if t.loss != "mixed" and "distill_weight" in t.model_fields_set:  # given, whatever its value
        problems.append(
            f"train.distill_weight={t.distill_weight} applies to --loss mixed, not --loss {t.loss}; "
            "drop it or set --loss mixed"
        )
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
    """Loads the YAML file (if any), applies CLI overrides, validates; raises one ConfigError.
    Keys of the first layout (`RENAMED_KEYS`) are read as their new ones, with a warning."""
    from_file, file_problems = moved_renamed_keys(read_yaml_config(path), RENAMED_KEYS)
    given, given_problems = moved_renamed_keys(overrides, RENAMED_KEYS)
    data = deep_merge(from_file, given)
    return validate_config(FinetuneConfig, data, _cross_field_problems, file_problems + given_problems)
