"""Reads named tensors from a local checkpoint directory: safetensors or PyTorch .bin, one file or
sharded with an index. Only the tensors asked for are read (safetensors reads them lazily), so a
model cut short at a layer never loads the layers it will not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from pipeline.errors import ModelLoadError

SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_files(directory: str) -> dict[str, list[str]]:
    """File -> tensor names it holds, or {file: []} for an unindexed single file (names read later)."""
    root = Path(directory)
    for index in INDEX_FILES:
        if (root / index).is_file():
            weight_map = json.loads((root / index).read_text())["weight_map"]
            files: dict[str, list[str]] = {}
            for name, file in weight_map.items():
                files.setdefault(str(root / file), []).append(name)
            return files
    for single in SINGLE_FILES:
        if (root / single).is_file():
            return {str(root / single): []}
    raise ModelLoadError(
        f"no weights in {directory!r}: expected one of {', '.join(SINGLE_FILES + INDEX_FILES)}"
    )


def load_tensors(directory: str, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The named tensors, on CPU, in their stored dtype; raises ModelLoadError naming missing ones."""
    wanted = set(names)
    found: dict[str, torch.Tensor] = {}
    for file, listed in checkpoint_files(directory).items():
        if listed and not wanted.intersection(listed):
            continue
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(file, framework="pt") as f:
                for name in wanted.intersection(f.keys()):
                    found[name] = f.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            found.update({k: v for k, v in state.items() if k in wanted})
    missing = sorted(wanted - set(found))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelLoadError(f"checkpoint {directory!r} lacks tensors the model needs: {shown}")
    return found
