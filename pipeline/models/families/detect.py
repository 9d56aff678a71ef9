"""What a model is: its kind (encoder / llm / layerwise, from config.json's architectures) and its
family (`registry.py`), read from the model directory without transformers or torch.

The family, in this order:
1. `--family NAME`, checked against the model (its kind, architecture, chat tokens);
2. the model directory's `reranker.json` (`sidecar.py`), checked the same way;
3. a known model name (`Qwen3-Reranker-0.6B`) among the families that run its architecture;
4. an architecture that one family owns (`ModernBertForSequenceClassification`);
5. the kind's fallback: cross-encoder, flag-llm or flag-layerwise (what the job always did).
`--kind K` with `--family auto` filters: the family found is one of kind K.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Final

from pipeline.config import FamilyName, Kind, ResolvedKind
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.models.families.family import Family
from pipeline.models.families.registry import FAMILIES, fallback_family, family_named
from pipeline.models.families.sidecar import SIDECAR, read_sidecar
from pipeline.models.hf_config import local_model_dir, read_json, read_model_config

log = logging.getLogger(__name__)

ENCODER: Final = "encoder"
LLM: Final = "llm"
LAYERWISE: Final = "layerwise"
LAYERWISE_ARCHITECTURES = ("LayerWiseMiniCPMForCausalLM",)
CHAT_MARKER = "<|im_start|>"


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
    return kind_of(name_or_path, read_model_config(name_or_path), requested)


def kind_of(name_or_path: str, config: dict[str, Any], requested: Kind) -> ResolvedKind:
    """`resolve_kind` on an already read config.json."""
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


def resolve_family(
    name_or_path: str, kind: Kind, family: FamilyName, given_name: str | None = None
) -> Family:
    """The family to run `name_or_path` (a local directory or a hub id) as; `given_name` is --model
    as given when `name_or_path` is its local copy (a model on object storage), for the name match.
    ConfigError for a --family that contradicts --kind; ModelLoadError for one the model does not fit."""
    config = read_model_config(name_or_path)
    if family != "auto":
        forced = family_named(family)
        if kind != "auto" and kind != forced.kind:
            raise ConfigError(
                [f"--family {family} is {_an(forced.kind)} family; drop --kind {kind} (or give --kind auto)"]
            )
        return checked(name_or_path, config, forced, f"--family {family}")
    sidecar = read_sidecar(name_or_path)
    if sidecar is not None and sidecar.family is not None:
        named = family_named(sidecar.family)
        where = f"{name_or_path}/{SIDECAR}"
        if kind != "auto" and kind != named.kind:
            raise ModelLoadError(
                f"{where!r} names family {named.name!r}, {_an(named.kind)} family, but --kind {kind} is "
                f"given; drop --kind, or pass --family to override the file"
            )
        return checked(name_or_path, config, named, f"family {named.name!r} of {where!r}")
    return detected(name_or_path, config, kind_of(name_or_path, config, kind), given_name)


def detected(name_or_path: str, config: dict[str, Any], kind: ResolvedKind, given_name: str | None) -> Family:
    """Steps 3-5 of the module docstring, among the families of `kind`."""
    archs = config.get("architectures") or []
    own = [f for f in FAMILIES.values() if f.kind == kind and not f.recognition.is_fallback]
    names = model_names(name_or_path, config, given_name)
    for family in own:
        patterns = family.recognition.name_patterns
        if (
            patterns
            and family.recognition.matches_architecture(archs)
            and any(re.search(p, n, re.IGNORECASE) for p in patterns for n in names)
        ):
            return checked(name_or_path, config, family, f"a {family.label} (by its name)")
    for family in own:
        if not family.recognition.name_patterns and family.recognition.owns_architecture(archs):
            return checked(name_or_path, config, family, f"a {family.label} (by its architecture)")
    fallback = fallback_family(kind)
    if fallback.name == "flag-llm" and CHAT_MARKER in (added_tokens(name_or_path) or set()):
        log.warning(
            "--model %r has a chat tokenizer (%s) but no known reranker name: it is scored as "
            "FlagEmbedding's LLM reranker (family flag-llm: the 'A:/B:' layout and the logit of "
            "'Yes'). If it is a Qwen3-Reranker or an mxbai-rerank-v2, pass --family qwen3 or "
            "--family mxbai-v2",
            given_name or name_or_path,
            CHAT_MARKER,
        )
    return fallback


def checked(name_or_path: str, config: dict[str, Any], family: Family, source: str) -> Family:
    """`family` if the model can run as it: the model class of its kind, and the chat tokens its
    template needs; a warning for an architecture the family is not known to run."""
    archs = config.get("architectures") or []
    shown = ", ".join(archs) or "none listed"
    kind = detect_kind(config)
    fits = {
        ENCODER: kind not in (LLM, LAYERWISE),
        LLM: kind != ENCODER,
        LAYERWISE: is_layerwise_config(config),
    }[family.kind]
    if not fits:
        others = ", ".join(f.name for f in FAMILIES.values() if f.kind == kind) or "none"
        raise ModelLoadError(
            f"{source} is {_an(family.kind)} family; --model {name_or_path!r} is {shown} (kind "
            f"{kind or 'unknown'}); pass --family auto or one of that kind: {others}"
        )
    if archs and not family.recognition.matches_architecture(archs) and family.kind != LAYERWISE:
        log.warning(
            "%s: --model %r is %s, not an architecture the family is known for (%s); scoring it as "
            "that family anyway",
            source,
            name_or_path,
            shown,
            ", ".join(family.recognition.architectures),
        )
    required = family.recognition.required_tokens
    known = added_tokens(name_or_path) if required else None
    missing = [t for t in required if known is not None and t not in known]
    if missing:
        raise ModelLoadError(
            f"{source}: the tokenizer of --model {name_or_path!r} has no added token "
            f"{', '.join(map(repr, missing))}, which the {family.name} template needs as one token "
            f"each; the model is not a {family.label}: pass --family with another family"
        )
    return family


def _an(kind: str) -> str:
    return f"a {kind}" if kind == LAYERWISE else f"an {kind}"


def model_names(name_or_path: str, config: dict[str, Any], given_name: str | None) -> list[str]:
    """The last path part of --model (as given and as loaded) and of config.json's _name_or_path."""
    found = [name_or_path, given_name, config.get("_name_or_path")]
    return [Path(n.rstrip("/")).name for n in found if isinstance(n, str) and n.rstrip("/")]


def added_tokens(name_or_path: str) -> set[str] | None:
    """The tokenizer's added tokens (chat markers are), from tokenizer_config.json's
    added_tokens_decoder, else tokenizer.json's added_tokens; None when neither can be read (a hub
    id, or no tokenizer files: the tokenizer check then reports it)."""
    directory = local_model_dir(name_or_path)
    if directory is None:
        return None
    config_path, tokenizer_path = directory / "tokenizer_config.json", directory / "tokenizer.json"
    if config_path.is_file():
        decoder = read_json(config_path).get("added_tokens_decoder")
        if isinstance(decoder, dict) and decoder:
            return {t["content"] for t in decoder.values() if isinstance(t, dict) and "content" in t}
    if tokenizer_path.is_file():
        added = read_json(tokenizer_path).get("added_tokens") or []
        return {t["content"] for t in added if isinstance(t, dict) and "content" in t}
    return None
