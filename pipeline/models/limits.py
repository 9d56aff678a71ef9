"""How long a pair a model can take, read from its config.json (json, no transformers), so a
`--max-length` beyond it fails before any scoring instead of in every shard mid-run."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.errors import ModelLoadError
from pipeline.models.hf_config import read_model_config

log = logging.getLogger(__name__)

# Encoders whose position ids start after the padding index (RoBERTa's scheme): a table of
# max_position_embeddings rows holds max_position_embeddings - (pad_token_id + 1) tokens.
PADDING_OFFSET_TYPES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "roberta-prelayernorm",
        "data2vec-text",
        "longformer",
        "mpnet",
        "xmod",
        "ibert",
        "luke",
    }
)


def has_learned_positions(config: dict[str, Any]) -> bool:
    """Whether the model looks positions up in a fixed table (BERT, XLM-R), so longer input
    fails; rotary (RoPE) and relative-position models run past `max_position_embeddings`."""
    if any(k in config for k in ("rope_theta", "rope_scaling", "rope_parameters")):
        return False
    if config.get("position_biased_input") is False:  # DeBERTa: relative positions only
        return False
    return config.get("position_embedding_type", "absolute") == "absolute"


def position_limit(config: dict[str, Any]) -> int | None:
    """The most tokens a pair may have, from config.json; None when it states none."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if config.get("model_type") in PADDING_OFFSET_TYPES:
        return positions - (int(config.get("pad_token_id") or 0) + 1)
    return positions


def check_max_length(path: str, name: str, max_length: int, kind: str, hard_limit: int | None = None) -> None:
    """ModelLoadError (exit 2) when `max_length` exceeds what an encoder with learned positions
    can take, or a family's hard limit (`hard_limit`: ModernBERT's 8,192, whose attention masks
    are built for it); a warning when a decoder is run past the positions in its config."""
    config = read_model_config(path)
    if hard_limit is not None and max_length > hard_limit:
        raise ModelLoadError(
            f"--max-length {max_length} exceeds what --model {name!r} can take: {hard_limit} tokens "
            f"(its family's limit); set --max-length {hard_limit} or less"
        )
    limit = position_limit(config)
    if limit is None or max_length <= limit:
        return
    if kind == "encoder" and has_learned_positions(config):
        raise ModelLoadError(
            f"--max-length {max_length} exceeds what --model {name!r} can take: {limit} tokens "
            f"(max_position_embeddings={config['max_position_embeddings']} in its config.json); "
            f"set --max-length {limit} or less"
        )
    log.warning(
        "--max-length %d is beyond --model %s's max_position_embeddings (%d): it runs, but on "
        "positions the model was not trained on",
        max_length,
        name,
        limit,
    )
