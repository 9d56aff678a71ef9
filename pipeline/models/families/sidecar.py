"""`reranker.json` in a model directory: `{"family": NAME, "instruction": TEXT}`, what the model
says about how it is scored (`rerank finetune` will write it into the model it publishes, so that
`rerank run --model OUT` needs no flags). Both keys are optional; a directory without the file,
or a hub id, has no sidecar."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ModelLoadError
from pipeline.models.hf_config import read_json

SIDECAR = "reranker.json"
_KEYS = ("family", "instruction")


@dataclass(frozen=True)
class Sidecar:
    family: str | None = None
    instruction: str | None = None


def read_sidecar(name_or_path: str) -> Sidecar | None:
    """The model directory's `reranker.json`, or None when there is none (or `name_or_path` is a
    hub id); ModelLoadError naming the file for one that is damaged or holds unknown keys."""
    path = Path(name_or_path) / SIDECAR
    if not os.path.isdir(name_or_path) or not path.is_file():
        return None
    data = read_json(path)
    problems = [f"unknown key {k!r}" for k in data if k not in _KEYS]
    problems += [f"{k!r} must be a string" for k in _KEYS if not isinstance(data.get(k, ""), str)]
    if problems:
        raise ModelLoadError(
            f'{str(path)!r}: {"; ".join(problems)}; it may hold only "family" and "instruction", '
            "both strings (remove the file to detect the family from the model)"
        )
    return Sidecar(family=data.get("family"), instruction=data.get("instruction"))


def write_sidecar(directory: str, family: str, instruction: str | None) -> None:
    """Writes `directory`/reranker.json naming the family (and the instruction, when there is one),
    so that the model is scored as it was trained without flags."""
    data = {"family": family, **({"instruction": instruction} if instruction is not None else {})}
    (Path(directory) / SIDECAR).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
