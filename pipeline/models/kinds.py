"""The three reranker kinds, told apart by the model's config.json, and what each needs to load.

- encoder: a cross-encoder sequence classifier with one logit (bge-reranker-v2-m3, ms-marco MiniLM);
- llm: a causal LM scored by the logit of "Yes" at the last token (bge-reranker-v2-gemma);
- layerwise: a MiniCPM decoder with one hidden -> 1 head per layer (bge-reranker-v2-minicpm-layerwise).

Both the tokenizer stage and the scoring stage ask here, so they always agree on the layout. The
finer family of a model (`pipeline/models/families/`) is resolved with the kind, by
`resolve_model`; until the new families are scored, the layout and the score follow the kind.
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
from pipeline.models.families.registry import fallback_family
from pipeline.models.hf_config import read_model_config as read_model_config
from pipeline.models.layerwise_config import LayerwiseConfig
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.prompt_tokenizer import PromptPairTokenizer

# the families this version scores; the others are recognised, and refused until their templates
# and scores land (issue 25), so that nobody gets the old layout's scores for them unknowingly
SCORED_FAMILIES = ("cross-encoder", "flag-llm", "flag-layerwise")
SectionT = TypeVar("SectionT", bound=RerankerSection)


def resolve_model(name_or_path: str, model: SectionT) -> SectionT:
    """`model` with its kind and family resolved (`families/detect.py`) for the model directory
    `name_or_path` (its local copy when --model is on object storage): what the driver runs, once,
    before any shard work."""
    family = resolve_family(name_or_path, model.kind, model.family, given_name=model.name_or_path)
    check_is_scored(family, model.name_or_path)
    return model.model_copy(update={"kind": family.kind, "family": family.name})


def check_is_scored(family: Family, name: str) -> None:
    """ModelLoadError for a family this version recognises but does not score yet."""
    if family.name in SCORED_FAMILIES:
        return
    old = fallback_family(family.kind)
    raise ModelLoadError(
        f"--model {name!r} is a {family.label}: family {family.name} is recognised but not yet scored "
        f"by this version (its layout, truncation and score land in a later version); pass --family "
        f"{old.name} to score it the old way, as a {old.label}, which may not give the model card's scores"
    )


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
