"""What identifies a model's weights and tokenizer, cheaply, for the run fingerprint.

Two runs that name the same `--model` but load different weights must not resume into one OUTPUT,
so the fingerprint carries `model_identity`:

- a local directory: `config` is a digest of the contents of every file but the weights
  (config.json, tokenizer files, prompts, remote code); `weights` a digest of each weight file's
  name, size and mtime, plus for safetensors a hash of its header (tensor names, dtypes, shapes,
  offsets). Weights are never read whole: a header hash alone would not tell apart two trainings of
  the same shape, so the mtime stands for the values (a file written again counts as changed);
- a model on object storage: the same two digests over the objects' names and ETags;
- a hub id: the commit its local snapshot was resolved to (`revision`), found offline in the hub
  cache; `unknown` when there is none (then a change cannot be noticed; the runner warns).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from pipeline.io import Storage
from pipeline.model_cache import is_remote, remote_versions

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
CONTENT_LIMIT_BYTES = 64 * 2**20  # bigger non-weight files are identified by size and mtime
SAFETENSORS_HEADER_LIMIT_BYTES = 100 * 2**20  # safetensors' own cap on the header
UNKNOWN = "unknown"


def model_identity(name_or_path: str, storage: Storage) -> dict[str, str]:
    """The identity of `--model`: a local directory, a storage URI or a hub id."""
    if is_remote(name_or_path):
        return split_digests(remote_versions(name_or_path, storage))
    local = name_or_path.removeprefix("file://")
    if os.path.isdir(local):
        return directory_identity(Path(local))
    return {"revision": hub_revision(name_or_path)}


def is_weight_file(relpath: str) -> bool:
    return relpath.endswith(WEIGHT_SUFFIXES)


def is_ignored(relpath: str) -> bool:
    """Hidden files (caches, locks, our `.complete`) and documentation do not make a model."""
    return any(part.startswith(".") for part in relpath.split("/")) or relpath.lower().endswith(".md")


def split_digests(entries: dict[str, str]) -> dict[str, str]:
    """{"config": digest of the non-weight entries, "weights": digest of the weight entries}."""
    kept = {rel: v for rel, v in entries.items() if not is_ignored(rel)}
    config = {rel: v for rel, v in kept.items() if not is_weight_file(rel)}
    weights = {rel: v for rel, v in kept.items() if is_weight_file(rel)}
    return {"config": _digest(config), "weights": _digest(weights)}


def directory_identity(root: Path) -> dict[str, str]:
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not is_ignored(rel):
            entries[rel] = file_identity(path, is_weight_file(rel))
    return split_digests(entries)


def file_identity(path: Path, is_weights: bool) -> str:
    st = path.stat()  # follows links: a hub snapshot's files are links to its blobs
    if not is_weights and st.st_size <= CONTENT_LIMIT_BYTES:
        return "sha256=" + hashlib.sha256(path.read_bytes()).hexdigest()
    stamp = f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
    if path.suffix == ".safetensors":
        stamp += f",header={safetensors_header_digest(path)}"
    return stamp


def safetensors_header_digest(path: Path) -> str:
    """sha256 of a safetensors file's JSON header: its first 8 bytes give the header's length."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > SAFETENSORS_HEADER_LIMIT_BYTES:
            return "invalid"
        return hashlib.sha256(f.read(length)).hexdigest()


def hub_revision(repo_id: str) -> str:
    """The commit of the local snapshot of a hub model, read offline from the hub cache."""
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception as e:  # not a valid repo id: nothing to go on
        log.debug("no hub snapshot for %r: %s", repo_id, e)
        return UNKNOWN
    if not isinstance(cached, str):
        return UNKNOWN
    return Path(cached).parent.name  # .../models--org--name/snapshots/<commit>/config.json


def _digest(entries: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
