"""What a run's OUTPUT was made with: a rerun resumes only an OUTPUT of the same fingerprint."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pipeline.io import Storage, join
from pipeline.models.families.registry import family_named
from pipeline.rerank.config import InputConfig, JobConfig
from pipeline.rerank.output.bookkeeping import RUN_RECORD, Damaged, read_record
from pipeline.rerank.output.paths import RUN_MANIFEST

log = logging.getLogger(__name__)


def fingerprint(
    cfg: JobConfig, resolved_dtype: str, model_identity: dict[str, str] | None = None
) -> dict[str, Any]:
    """What makes two runs' outputs comparable; a resume must match it exactly. `model_identity`
    (pipeline.models.identity) tells apart two models at the same path, URI or hub id."""
    fp: dict[str, Any] = {
        "model": cfg.model.name_or_path,
        "max_length": cfg.model.max_length,
        "query_max_length": cfg.model.resolved_query_max_length,
        "dtype": resolved_dtype,
        "normalize": cfg.ranking.normalize,
        "top_k": cfg.ranking.top_k,
        "columns": {
            "query_id": cfg.input.query_id_column,
            "query": cfg.input.query_column,
            "doc_id": cfg.input.doc_id_column,
            "passage": cfg.input.passage_column,
        },
    }
    m = cfg.model
    family = None if m.family == "auto" else family_named(m.family)
    if family is not None and not family.legacy_fingerprint:  # qwen3, mxbai-v2, modernbert
        fp["kind"] = m.kind
        fp["family"] = family.identity(m.given_instruction)
    elif m.kind not in ("auto", "encoder"):  # encoder runs keep the fingerprint they always had
        fp["kind"] = m.kind
        fp["prompt"] = m.resolved_prompt
        fp["cutoff_layers"] = m.cutoff_layers
    if model_identity is not None:
        fp["model_identity"] = model_identity
    fp |= input_shape_fingerprint(cfg.input)
    return fp


def input_shape_fingerprint(i: InputConfig) -> dict[str, Any]:
    """The layout and cascade options, only where set: a run without them keeps its fingerprint."""
    fp: dict[str, Any] = {}
    if i.layout != "long":
        fp["layout"] = {"layout": i.layout, "candidates_column": i.candidates_column}
    if i.previous_prefix is not None:
        fp["previous_prefix"] = i.previous_prefix
    if i.prefilter_column is not None:
        fp["prefilter"] = {"column": i.prefilter_column, "top_k": i.prefilter_top_k}
    if i.long_passages != "truncate":
        fp["long_passages"] = {
            "mode": i.long_passages,
            "chunk_overlap": i.chunk_overlap,
            "max_chunks": i.max_chunks,
            "chunk_aggregate": i.chunk_aggregate,
        }
    return fp


def fingerprint_digest(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def with_recorded_model(fp: dict[str, Any], recorded: Any) -> dict[str, Any]:
    """`fp` naming the model as `recorded` (OUTPUT's fingerprint) does, where that spelling names
    the same model: both identities hold equal `config` and `weights` digests (a local directory, a
    model on object storage). `/m`, `/m/`, `./m` and `file:///m` are one model, not a change that
    only `--fresh` (a full rescore) gets past. A hub id's identity is a revision alone: not enough."""
    if not isinstance(recorded, dict):
        return fp
    model, identity = recorded.get("model"), fp.get("model_identity")
    if not isinstance(model, str) or model == fp["model"] or not isinstance(identity, dict):
        return fp
    if not {"config", "weights"} <= set(identity) or recorded.get("model_identity") != identity:
        return fp
    log.info(
        "--model %r is the model OUTPUT's run named %r (same config and weights digests): "
        "resuming under that name",
        fp["model"],
        model,
    )
    return {**fp, "model": model}


def recorded_fingerprint(storage: Storage, output: str) -> Any | None:
    """The fingerprint in OUTPUT's run manifest, when there is one that can be read (read as every
    bookkeeping file is, `bookkeeping.py`; a missing or damaged one is left to the resume checks
    to report): what `with_recorded_model` and a rerun's `--dtype auto` follow."""
    manifest = read_record(storage, join(output, RUN_MANIFEST), RUN_RECORD)
    if manifest is None or isinstance(manifest, Damaged):
        return None
    return manifest["fingerprint"]
