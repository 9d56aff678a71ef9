"""The checks on the job's inputs that come before any shard is read: INPUT/OUTPUT locations, the
model (its kind, options of that kind, position limit, tokenizer) and its identity."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.config import ResolvedKind
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.io import Storage, location, storage_error
from pipeline.model_cache import check_model_path, local_model_path
from pipeline.models.identity import UNKNOWN, model_identity
from pipeline.models.kinds import check_model, load_pair_tokenizer, resolve_kind
from pipeline.models.limits import check_max_length
from pipeline.rerank.config import JobConfig

log = logging.getLogger(__name__)


def check_paths(cfg: JobConfig) -> None:
    """INPUT and OUTPUT must not contain each other, compared as the locations they resolve to
    (local: real paths, symlinks and relative paths resolved; object stores: bucket + prefix)."""
    a, b = location(cfg.input.uri), location(cfg.output.uri)
    if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
        raise ConfigError(
            [
                f"INPUT {cfg.input.uri!r} and OUTPUT {cfg.output.uri!r} overlap (they resolve to {a!r} "
                f"and {b!r}); write the output outside the input tree"
            ]
        )


def storage_from_config(cfg: JobConfig) -> Storage:
    return Storage.from_section(cfg.storage)


def load_model_locally(cfg: JobConfig, storage: Storage) -> tuple[JobConfig, ResolvedKind]:
    """Checks --model (fetching it into this node's cache if remote) before any shard work; returns
    the config with the model's kind resolved (auto -> encoder, llm or layerwise), and the kind."""
    m = cfg.model
    check_model_path(m.name_or_path)
    try:
        path = local_model_path(m.name_or_path, storage)
    except Exception as e:
        raise storage_error(m.name_or_path, "--model", e) from e
    kind = resolve_kind(path, m.kind)
    resolved = m.model_copy(update={"kind": kind})
    if kind == "encoder" and m.prompt is not None:
        raise ModelLoadError(
            f"--prompt is for llm/layerwise rerankers; --model {m.name_or_path!r} is an encoder"
        )
    if kind != "layerwise" and m.cutoff_layers is not None:
        raise ModelLoadError(
            f"--cutoff-layers is for layerwise rerankers; --model {m.name_or_path!r} is an {kind} reranker"
        )
    check_max_length(path, m.name_or_path, m.max_length, kind)
    check_model(path, resolved)
    load_pair_tokenizer(path, resolved)
    log.info("model %s: %s reranker", m.name_or_path, kind)
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
