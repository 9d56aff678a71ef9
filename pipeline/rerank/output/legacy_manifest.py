"""OUTPUTs whose fingerprint predates `model_identity`: resumed with a warning, then upgraded.

Their run manifest (`_rerank/run.json`) and done-markers carry the digest of a fingerprint without
that key. When the rest of the fingerprint matches, such an OUTPUT is resumed as it is, with a
warning that the model its shards were scored with cannot be verified (refusing would make every
OUTPUT in progress, or finished, at the upgrade need `--fresh`, i.e. a full rescore, to do
anything). The run then upgrades it: the markers and the manifest get the new digest, so from then
on a changed model is refused like any other change.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.io import Storage, join
from pipeline.rerank.output import checkpoint, paths
from pipeline.rerank.output.bookkeeping import RUN_RECORD, Damaged, read_record
from pipeline.rerank.output.fingerprint import fingerprint_digest

log = logging.getLogger(__name__)

KEY = "model_identity"


def legacy_fingerprint(storage: Storage, output: str, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The fingerprint OUTPUT's manifest was written with, if that is `fp` without `model_identity`
    (an earlier version's run of this same configuration); else None. A damaged manifest is a
    DamagedFileError (naming it and --fresh)."""
    manifest = read_record(storage, join(output, paths.RUN_MANIFEST), RUN_RECORD)
    if isinstance(manifest, Damaged):
        raise manifest.error()
    if not manifest or KEY in manifest["fingerprint"]:
        return None
    legacy = {k: v for k, v in fp.items() if k != KEY}
    return legacy if manifest.get("digest") == fingerprint_digest(legacy) else None


def upgraded_markers(done: dict[str, dict[str, Any]], digest: str) -> dict[str, dict[str, Any]]:
    return {rel: {**marker, "digest": digest} for rel, marker in done.items()}


def warn_unverified(output: str, model: str, shards_done: int) -> None:
    log.warning(
        "OUTPUT %s was started by an earlier offline-rerank that did not record the model's identity: "
        "resuming it with --model %s, which cannot be verified to be the model its %d published "
        "shard(s) were scored with. OUTPUT now records it (a changed model is refused from now on); "
        "pass --fresh to score everything again if the model may have changed",
        output,
        model,
        shards_done,
    )


def upgrade(
    storage: Storage,
    output: str,
    done: dict[str, dict[str, Any]],
    fp: dict[str, Any],
    digest: str,
) -> None:
    """Rewrites the done-markers, then the manifest, with the new digest (a crash in between leaves
    a legacy manifest, and the rerun accepts markers of either digest)."""
    for marker in done.values():
        storage.write_json_atomic(checkpoint.marker_uri(output, marker["shard"]), marker)
    old = read_record(storage, join(output, paths.RUN_MANIFEST), RUN_RECORD) or {}
    old = {} if isinstance(old, Damaged) else old  # read whole by legacy_fingerprint just before
    storage.write_json_atomic(
        join(output, paths.RUN_MANIFEST),
        {
            "digest": digest,
            "fingerprint": fp,
            "created_at": old.get("created_at", time.time()),
            "upgraded_from": old.get("digest"),
        },
    )
    log.info("upgraded %s: its manifest and %d marker(s) now record the model identity", output, len(done))
