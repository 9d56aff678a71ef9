"""The three reranker kinds, told apart by the model's config.json, and what each needs to load.

- encoder: a cross-encoder sequence classifier with one logit (bge-reranker-v2-m3, ms-marco MiniLM,
  ModernBERT rerankers);
- llm: a causal LM scored by token logits at the last token (bge-reranker-v2-gemma's "Yes",
  Qwen3-Reranker's yes - no, mxbai-rerank-v2's "1" - "0");
- layerwise: a MiniCPM decoder with one hidden -> 1 head per layer (bge-reranker-v2-minicpm-layerwise).

The finer family of a model (`pipeline/models/families/`: its prompt layout, score and truncation)
is resolved with the kind, by `resolve_model`. Both the tokenizer stage and the scoring stage ask
here, so they always agree on the layout.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pipeline.config import ModelConfig, RerankerSection
from pipeline.errors import ModelLoadError
from pipeline.models.families.detect import ENCODER as ENCODER
from pipeline.models.families.detect import LAYERWISE as LAYERWISE
from pipeline.models.families.detect import LLM as LLM
from pipeline.models.families.detect import detect_kind as detect_kind
from pipeline.models.families.detect import is_layerwise_config as is_layerwise_config
from pipeline.models.families.detect import resolve_family
from pipeline.models.families.detect import resolve_kind as resolve_kind
from pipeline.models.families.family import Family
from pipeline.models.families.registry import family_named
from pipeline.models.families.sidecar import SIDECAR, read_sidecar
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.hf_config import read_model_config as read_model_config
from pipeline.models.layerwise_config import LayerwiseConfig
from pipeline.models.pair_tokenizer import PairTokenizer

SectionT = TypeVar("SectionT", bound=RerankerSection)


def resolve_model(name_or_path: str, model: SectionT) -> SectionT:
    """`model` with its kind and family resolved (`families/detect.py`) for the model directory
    `name_or_path` (its local copy when --model is on object storage), and its instruction taken
    from the model's reranker.json where none was given: what the driver runs, once, before any
    shard work."""
    family = resolve_family(name_or_path, model.kind, model.family, given_name=model.name_or_path)
    update: dict[str, Any] = {"kind": family.kind, "family": family.name}
    sidecar = read_sidecar(name_or_path)
    if model.given_instruction is None and sidecar is not None and sidecar.instruction is not None:
        if not family.takes_instruction:
            raise ModelLoadError(
                f"{name_or_path}/{SIDECAR} gives an instruction, but the {family.name} family takes none; "
                "remove the key from the file"
            )
        update["instruction"] = sidecar.instruction
    elif model.given_instruction is not None and not family.takes_instruction:
        raise ModelLoadError(
            f"--instruction (or --prompt) is for rerankers with an instruction; --model "
            f"{model.name_or_path!r} is a {family.label}, which takes none: drop it"
        )
    return model.model_copy(update=update)


def with_family(name_or_path: str, model: SectionT) -> SectionT:
    """`model` with kind and family resolved (the runner resolves them once; a stage run alone, or
    a test, does it here)."""
    if model.kind != "auto" and model.family != "auto":
        return model
    return resolve_model(name_or_path, model)


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


def family_query_max_length(family: Family, model: RerankerSection) -> int | None:
    """The query cap a pair is built with: --query-max-length (default 3/4 of --max-length), or
    only a given one for families whose card has no cap (qwen3, modernbert)."""
    if family.query_cap == "given":
        return model.query_max_length
    return model.resolved_query_max_length


def load_pair_tokenizer(name_or_path: str, model: RerankerSection) -> PairTokenizer | TemplatePairTokenizer:
    """The tokenizer stage's tokenizer for the model's family."""
    model = with_family(name_or_path, model)
    family = family_named(model.family)
    if family.layout is None:
        return PairTokenizer.load(
            name_or_path,
            model.max_length,
            model.resolved_query_max_length,
            truncation=family.truncation,
            query_cap=family_query_max_length(family, model),
        )
    return TemplatePairTokenizer.load(
        name_or_path,
        family,
        model.max_length,
        family_query_max_length(family, model),
        family.instruction(model.given_instruction),
    )
