"""The checks on the job's inputs that come before any shard is read: INPUT/OUTPUT locations, the
model (its kind, options of that kind, position limit, tokenizer) and its identity."""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.config import ResolvedKind
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.io import Storage, location, protocol_of, storage_error
from pipeline.model_cache import check_model_path, local_model_path
from pipeline.models.families.registry import family_named
from pipeline.models.identity import UNKNOWN, model_identity
from pipeline.models.kinds import check_model, load_pair_tokenizer, resolve_model
from pipeline.models.limits import check_max_length
from pipeline.rerank.config import JobConfig

log = logging.getLogger(__name__)


MAX_LINKS_SHOWN = 5


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_paths(cfg: JobConfig) -> None:
    """INPUT and OUTPUT must not contain each other, compared as the locations they resolve to
    (local: real paths, symlinks and relative paths resolved; object stores: bucket + prefix);
    nor may a symlink inside a local INPUT lead into OUTPUT (`links_into`)."""
    a, b = location(cfg.input.uri), location(cfg.output.uri)
    if _is_within(a, b) or _is_within(b, a):
        raise ConfigError(
            [
                f"INPUT {cfg.input.uri!r} and OUTPUT {cfg.output.uri!r} overlap (they resolve to {a!r} "
                f"and {b!r}); write the output outside the input tree"
            ]
        )
    local = {protocol_of(cfg.input.uri), protocol_of(cfg.output.uri)} <= {"file", "local"}
    if local and os.path.isdir(a):
        linked = links_into(os.path.expanduser(cfg.input.uri.split("://", 1)[-1]), b)
        if linked:
            raise ConfigError(
                [
                    f"INPUT entry {path!r} leads into OUTPUT {cfg.output.uri!r} (its real path is "
                    f"{os.path.realpath(path)!r}): the run would read its own output as input; remove the "
                    "link, or write the output elsewhere"
                    for path in linked[:MAX_LINKS_SHOWN]
                ]
                + ([f"... and {len(linked) - MAX_LINKS_SHOWN} more"] if len(linked) > MAX_LINKS_SHOWN else [])
            )


def links_into(root: str, target: str) -> list[str]:
    """The entries of a local INPUT tree, walked as the shard listing walks it (symlinked
    directories followed, each real directory once, none back up the tree, names starting with `_`
    or `.` skipped), whose real path lies in `target` (a real path; it need not exist yet: a broken
    link counts too). Only links are resolved: any other entry is its directory's real path + name."""
    found: list[str] = []
    seen: set[str] = set()
    real_root = os.path.realpath(root)
    for directory, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen or (directory != root and _is_within(real_root, real)):  # loops: not listed
            dirs[:] = []
            continue
        seen.add(real)
        kept, subdirs = [], set(dirs)
        for name in sorted([*dirs, *files]):
            path = os.path.join(directory, name)
            if name.startswith(("_", ".")):
                continue
            is_link = os.path.islink(path)
            if _is_within(os.path.realpath(path) if is_link else os.path.join(real, name), target):
                found.append(path)
            elif name in subdirs:
                kept.append(name)
        dirs[:] = kept
    return found


def storage_from_config(cfg: JobConfig) -> Storage:
    return Storage.from_section(cfg.storage)


def load_model_locally(cfg: JobConfig, storage: Storage) -> tuple[JobConfig, ResolvedKind]:
    """Checks --model (fetching it into this node's cache if remote) before any shard work; returns
    the config with the model's kind and family resolved (auto -> encoder, llm or layerwise; the
    family, `pipeline/models/families/detect.py`), and the kind."""
    m = cfg.model
    check_model_path(m.name_or_path)
    try:
        path = local_model_path(m.name_or_path, storage)
    except Exception as e:
        raise storage_error(m.name_or_path, "--model", e) from e
    resolved = resolve_model(path, m)
    family = family_named(resolved.family)
    kind = family.kind
    if m.attention == "unpadded" and not family.packs:
        raise ModelLoadError(
            f"--attention unpadded does not support the {resolved.family} family (its attention has no "
            "packed path here); use --attention padded or auto"
        )
    if kind != "layerwise" and m.cutoff_layers is not None:
        raise ModelLoadError(
            f"--cutoff-layers is for layerwise rerankers; --model {m.name_or_path!r} is an {kind} reranker"
        )
    check_max_length(path, m.name_or_path, m.max_length, kind, family.hard_position_limit)
    check_model(path, resolved)
    load_pair_tokenizer(path, resolved)
    log.info("model %s: %s reranker (family %s)", m.name_or_path, kind, resolved.family)
    return cfg.model_copy(update={"model": resolved}), kind


def checked_model_identity(cfg: JobConfig, storage: Storage) -> dict[str, Any]:
    """What identifies the model's weights and tokenizer, for the fingerprint (warns where it
    cannot be known)."""
    try:
        identity = model_identity(cfg.model.name_or_path, storage)
    except OSError as e:
        raise storage_error(cfg.model.name_or_path, "--model", e) from e
    log.info("model identity: %s", identity)
    if identity.get("revision") == UNKNOWN:
        log.warning(
            "cannot tell which revision of hub model %r this run loads (no snapshot in the local hub "
            "cache): a different model under the same id would not be noticed on resume",
            cfg.model.name_or_path,
        )
    return identity
