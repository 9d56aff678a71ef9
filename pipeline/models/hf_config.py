"""A model's config.json, read without a model class (minicpm-layerwise has none in transformers).

A local directory's JSON files are read here with `json`: transformers 5 imports torch on import,
and the tokenize stage must not. Only a hub id goes through transformers, which fetches it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.errors import ModelLoadError


def local_model_dir(name_or_path: str) -> Path | None:
    """The model's local directory, or None for a hub id; a path naming no directory is an error."""
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    # Hub ids ("name" or "org/name") start with a word character; anything else is meant as a path.
    is_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if is_path or os.path.exists(name_or_path):
        raise ModelLoadError(
            f"--model {name_or_path!r} is not a directory; pass a local model directory (with "
            "config.json and tokenizer.json), a storage URI or a hub id"
        )
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model directory."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {str(path)!r}: {e}; the model directory looks damaged") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def read_model_config(name_or_path: str) -> dict[str, Any]:
    """config.json as a plain dict (no model class needed: minicpm-layerwise has none in transformers)."""
    directory = local_model_dir(name_or_path)
    if directory is not None:
        path = directory / "config.json"
        if not path.is_file():
            raise ModelLoadError(
                f"--model {name_or_path!r} has no config.json; pass a model directory saved with "
                "transformers (config.json, weights and tokenizer files)"
            )
        return read_json(path)
    from transformers import PretrainedConfig  # a hub id: transformers fetches it (and imports torch)

    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
    except Exception as e:
        raise ModelLoadError(
            f"cannot load --model {name_or_path!r}: {e}; pass a local model directory or a hub id "
            "this machine can reach"
        ) from e
    if config is None:
        raise ModelLoadError(f"--model {name_or_path!r} has no config.json")
    return config
