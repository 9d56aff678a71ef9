"""A model's config.json, read without a model class (minicpm-layerwise has none in transformers)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from pipeline.errors import ModelLoadError


def read_model_config(name_or_path: str) -> dict[str, Any]:
    """config.json as a plain dict (no model class needed: minicpm-layerwise has none in transformers)."""
    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
    except Exception as e:
        raise ModelLoadError(
            f"cannot load --model {name_or_path!r}: {e}; pass a local model directory or a hub id "
            "this machine can reach"
        ) from e
    return config
