"""Model directories on object storage, fetched once per node into a local cache.

Every process on a node that needs `s3://bucket/models/x/` (the driver, tokenizing and scoring
actors) asks for it here; the first takes a file lock and downloads, the others wait for it and
reuse the copy. The cache key includes the objects' version tags, so a model replaced at the same
URI is fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from pathlib import Path

from pipeline.errors import ModelLoadError
from pipeline.io import Storage, protocol_of

log = logging.getLogger(__name__)

COMPLETE = ".complete"


def default_cache_dir() -> Path:
    return Path(os.environ.get("RERANK_CACHE_DIR", Path.home() / ".cache" / "offline-rerank" / "models"))


def is_remote(name_or_path: str) -> bool:
    return "://" in name_or_path and protocol_of(name_or_path) not in ("file", "local")


def looks_like_path(name_or_path: str) -> bool:
    """A local path, not a hub id ("name" or "org/name"): starts with / . ~, or has more parts."""
    return (
        name_or_path.startswith(("/", ".", "~"))
        or name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in name_or_path)
    )


def check_model_path(name_or_path: str) -> None:
    """ModelLoadError for a --model meant as a local directory that does not exist (rather than
    letting it pass for a hub id and fail with the hub's error)."""
    if is_remote(name_or_path):
        return
    path = name_or_path.removeprefix("file://")
    if (looks_like_path(path) or name_or_path.startswith("file://")) and not os.path.exists(path):
        raise ModelLoadError(f"no such model directory {path!r}; check --model")


def remote_versions(name_or_path: str, storage: Storage) -> dict[str, str]:
    """The version tag (ETag; else mtime or size) of every object of a model on object storage, by
    its path relative to the model's root. A model replaced at the same URI has new tags."""
    fs, root = storage.filesystem(name_or_path)
    fs.invalidate_cache()
    root = root.rstrip("/")
    listing = fs.find(root, detail=True)
    if not listing:
        raise FileNotFoundError(f"no model files under {name_or_path!r}")
    return {
        p[len(root) :].lstrip("/"): str(i.get("ETag") or i.get("mtime") or i.get("size"))
        for p, i in sorted(listing.items())
    }


def local_model_path(name_or_path: str, storage: Storage, cache_dir: Path | None = None) -> str:
    """A local directory holding the model: the path itself, or this node's cached copy."""
    if not is_remote(name_or_path):
        return name_or_path.removeprefix("file://")
    root = storage.filesystem(name_or_path)[1].rstrip("/")
    versions = [(f"{root}/{rel}", tag) for rel, tag in remote_versions(name_or_path, storage).items()]
    key = hashlib.sha256(repr((name_or_path, versions)).encode()).hexdigest()[:20]
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / key
    if (target / COMPLETE).exists():
        return str(target)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node; the others wait here
        if (target / COMPLETE).exists():
            return str(target)
        tmp = cache / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetching model %s into %s", name_or_path, target)
        storage.get_directory(name_or_path, str(tmp))
        (tmp / COMPLETE).write_text(name_or_path)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return str(target)
