"""The three reranker kinds, told apart by the model's config.json, and what each needs to load.

- encoder: a cross-encoder sequence classifier with one logit (bge-reranker-v2-m3, ms-marco MiniLM);
- llm: a causal LM scored by the logit of "Yes" at the last token (bge-reranker-v2-gemma);
- layerwise: a MiniCPM decoder with one hidden -> 1 head per layer (bge-reranker-v2-minicpm-layerwise).

Both the tokenizer stage and the scoring stage ask here, so they always agree on the layout.
"""

from __future__ import annotations

from typing import Any, Final

from pipeline.config import Kind, ModelConfig, ResolvedKind
from pipeline.errors import ModelLoadError
from pipeline.models.hf_config import read_model_config
from pipeline.models.layerwise_config import LayerwiseConfig
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.prompt_tokenizer import PromptPairTokenizer

ENCODER: Final = "encoder"
LLM: Final = "llm"
LAYERWISE: Final = "layerwise"
LAYERWISE_ARCHITECTURES = ("LayerWiseMiniCPMForCausalLM",)


def is_layerwise_config(config: dict[str, Any]) -> bool:
    archs = config.get("architectures") or []
    return any(a in LAYERWISE_ARCHITECTURES for a in archs) or (
        config.get("model_type") == "minicpm" and "start_layer" in config and "head_type" in config
    )


def detect_kind(config: dict[str, Any]) -> ResolvedKind | None:
    """encoder / llm / layerwise from architectures; None if it is none of them."""
    archs = config.get("architectures") or []
    if is_layerwise_config(config):
        return LAYERWISE
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return ENCODER
    if any(a.endswith("ForCausalLM") for a in archs):
        return LLM
    return None


def resolve_kind(name_or_path: str, requested: Kind) -> ResolvedKind:
    """The kind to run: the requested one (checked against the model) or, for auto, the detected one."""
    config = read_model_config(name_or_path)
    detected = detect_kind(config)
    archs = ", ".join(config.get("architectures") or []) or "none listed"
    if requested == "auto":
        if detected is None:
            raise ModelLoadError(
                f"cannot tell which kind of reranker --model {name_or_path!r} is (architectures: "
                f"{archs}); pass --kind encoder, llm or layerwise"
            )
        return detected
    if requested == LAYERWISE and not is_layerwise_config(config):
        raise ModelLoadError(
            f"--kind layerwise needs a minicpm-layerwise checkpoint (config with start_layer and "
            f"head_type); --model {name_or_path!r} is {archs}"
        )
    if requested == LLM and detected == ENCODER:
        raise ModelLoadError(
            f"--kind llm needs a causal LM; --model {name_or_path!r} is {archs}; use --kind encoder"
        )
    if requested == ENCODER and detected in (LLM, LAYERWISE):
        raise ModelLoadError(
            f"--kind encoder needs a sequence classifier; --model {name_or_path!r} is {archs}; "
            f"use --kind {detected} (or auto)"
        )
    return requested


def with_kind(name_or_path: str, model: ModelConfig) -> ModelConfig:
    """`model` with `kind` resolved (the runner resolves it once; a stage run alone does it here)."""
    if model.kind != "auto":
        return model
    return model.model_copy(update={"kind": resolve_kind(name_or_path, model.kind)})


def check_model(name_or_path: str, model: ModelConfig) -> None:
    """Fails fast, before any shard work, if the model cannot be scored as `model.kind`."""
    if model.kind == ENCODER:
        check_encoder_config(name_or_path)
    elif model.kind == LAYERWISE:
        LayerwiseConfig.from_dict(read_model_config(name_or_path)).resolve_cutoffs(model.cutoff_layers)


def check_encoder_config(name_or_path: str) -> None:
    """The model must be a one-logit sequence classifier (read from config.json without
    transformers, which takes seconds to import: the driver checks this before starting Ray)."""
    config = read_model_config(name_or_path)
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelLoadError(
            f"--model {name_or_path!r} is a {', '.join(archs)}, not a sequence classifier; "
            "pass --kind llm or --kind layerwise for decoder rerankers"
        )
    if (labels := num_labels(config)) != 1:
        raise ModelLoadError(
            f"--model {name_or_path!r} has {labels} labels; a reranker has exactly one "
            "logit (the relevance score)"
        )


def num_labels(config: dict[str, Any]) -> int:
    """What transformers makes of a config.json's labels: id2label's size, else num_labels, else 2."""
    if isinstance(config.get("id2label"), dict) and config["id2label"]:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def load_pair_tokenizer(name_or_path: str, model: ModelConfig) -> PairTokenizer | PromptPairTokenizer:
    """The tokenizer stage's tokenizer for `model.kind`."""
    model = with_kind(name_or_path, model)
    if model.kind == ENCODER:
        return PairTokenizer.load(
            name_or_path, model.max_length, model.resolved_query_max_length, model.trust_remote_code
        )
    if model.kind in (LLM, LAYERWISE):
        return PromptPairTokenizer.load(
            name_or_path,
            model.max_length,
            model.resolved_query_max_length,
            model.resolved_prompt,
            always_bos=model.kind == LAYERWISE,
            trust_remote_code=model.trust_remote_code,
        )
    raise ValueError(f"unknown model kind {model.kind!r}")
